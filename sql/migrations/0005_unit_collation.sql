-- The events tables keep unit_id in the "C" collation (byte order: cheaper comparisons); the
-- per-unit tables the recompute fold joins against them use the same, so joins and lookups
-- compare like with like and can use the primary keys.
ALTER TABLE unit_exposures ALTER COLUMN unit_id TYPE text COLLATE "C";
ALTER TABLE unit_metrics ALTER COLUMN unit_id TYPE text COLLATE "C";
ALTER TABLE unit_metrics ALTER COLUMN metric TYPE text COLLATE "C";
ALTER TABLE arm_metrics ALTER COLUMN metric TYPE text COLLATE "C";
