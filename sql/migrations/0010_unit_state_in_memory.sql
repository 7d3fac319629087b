-- The per-unit state of the results fold moves into the recompute leader's memory
-- (litmus/core/unitfold.py): updating one row per (unit, metric) in unit_exposures and
-- unit_metrics cost 15-20 µs of B-tree descent and heap update per key, more than scanning
-- every event (docs/PERFORMANCE.md, "Results recompute"). The per-arm tables (arm_exposures,
-- arm_metrics, exposure_timeline, exposure_timeline_hourly) and the watermark stay as they
-- are, updated in the fold's transaction; the per-unit state is kept durable as a checkpoint
-- that the leader writes every few minutes: a new leader loads it and replays the events
-- committed between its transaction id and the watermark.
--
-- The old tables are renamed, not dropped: the first leader of this version loads them as its
-- first per-unit state (they are up to date with the watermark), writes a checkpoint, and then
-- drops them. A leader of the previous version still running during a rolling upgrade finds
-- no unit_exposures any more: its folds fail, and results wait for this version's leader
-- instead of being folded into tables nobody reads.
ALTER TABLE unit_exposures RENAME TO unit_exposures_v1;
ALTER TABLE unit_metrics RENAME TO unit_metrics_v1;

-- One row per array of an experiment's state (litmus/core/unitfold.py ExperimentUnits.arrays),
-- split into parts of at most 32 MB; `dtype` is numpy's name for the element type. EXTERNAL:
-- hashes and times do not compress, so TOAST does not try.
CREATE TABLE fold_checkpoint (
    experiment_id uuid NOT NULL,
    name          text NOT NULL,
    part          int  NOT NULL,
    dtype         text NOT NULL,
    data          bytea NOT NULL,
    PRIMARY KEY (experiment_id, name, part)
);
ALTER TABLE fold_checkpoint ALTER COLUMN data SET STORAGE EXTERNAL;

-- The watermark the checkpoint's state was taken at. NULL: no checkpoint, which means the
-- empty state at transaction 0 (every event is replayed).
ALTER TABLE recompute_watermark ADD COLUMN checkpoint_xid bigint;
ALTER TABLE recompute_watermark ADD COLUMN checkpoint_at timestamptz;

-- A stopped experiment's analysis ends at the stop: the fold leaves out its events dated after
-- stopped_at. But an event dated after the stop can be folded before the stop is seen (a client
-- clock ahead; up to 24 h is accepted), and a replay after the stop must decide exactly as the
-- first fold did, or the in-memory state drifts from the per-arm tables. So the cut-off is
-- pinned to the first fold that saw the stop: events committed at or after that fold's
-- watermark (`xid`) and dated after the stop are left out; earlier ones were counted.
CREATE TABLE fold_cutoffs (
    experiment_id uuid PRIMARY KEY,
    xid           bigint NOT NULL
);
