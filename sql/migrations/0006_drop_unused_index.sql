-- Nothing reads per-unit first exposures by time (the timeline has its own table); the index
-- only cost every fold an extra write.
DROP INDEX IF EXISTS unit_exposures_first_ts_idx;
