-- The results side's derived state (per-unit totals, per-arm sums, the timeline, the fold
-- watermark) is a cache of the events tables: every row of it can be rebuilt from them by
-- one fold from watermark 0. Writing it to the WAL made each steady-state fold pay a full
-- page image for nearly every page it touched (data checksums turn even hint bits into WAL),
-- about 120 MB of WAL per 100 k new events at 10 M events (docs/PERFORMANCE.md).
--
-- So these tables are UNLOGGED, all of them together: after a crash of PostgreSQL (not of
-- Litmus) the server empties every one of them at once, the watermark row included, and the
-- next recompute finds no watermark and folds every event again (litmus/db/results.py). A
-- standby has them empty too, so a promoted replica rebuilds them the same way. Snapshots,
-- anytime p-values and bandit state stay logged: the results page keeps serving the last
-- snapshot while the rebuild runs.
--
-- fillfactor 80 leaves room on each page of the per-unit tables, so updating a unit's
-- totals stays on its page (a HOT update: no new index entry, no page split).
ALTER TABLE unit_exposures SET (fillfactor = 80);
ALTER TABLE unit_metrics SET (fillfactor = 80);
ALTER TABLE unit_exposures SET UNLOGGED;
ALTER TABLE unit_metrics SET UNLOGGED;
ALTER TABLE arm_exposures SET UNLOGGED;
ALTER TABLE arm_metrics SET UNLOGGED;
ALTER TABLE exposure_timeline SET UNLOGGED;
ALTER TABLE recompute_watermark SET UNLOGGED;
