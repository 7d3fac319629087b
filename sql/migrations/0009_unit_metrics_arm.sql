-- Each (unit, metric) row now carries its unit's arm (the variant of its first exposure; -1:
-- not exposed yet). The fold used to look the arm up in unit_exposures for every key it
-- touched, a second B-tree descent per key (about 4 of the 20 µs a key cost at 10 M events,
-- docs/PERFORMANCE.md). The fold sets it when it inserts the row and changes it when the
-- unit's first exposure arrives or moves. Rows folded before this migration get their arm
-- from the first fold of this version (the repair below), not here.
ALTER TABLE unit_metrics ADD COLUMN variant smallint NOT NULL DEFAULT -1;

-- Which version of the fold last moved the watermark. During a rolling upgrade a process of
-- the previous version may still be the leader after this migration: its folds insert
-- unit_metrics rows with the default arm and do not move arms, and they write no hourly
-- timeline slots (0008). Every fold from this version on runs with the setting
-- litmus.fold_version, which this trigger copies into the row; a fold that finds a lower
-- version than its own first repairs what an older fold could have left behind
-- (litmus/db/results.py): every row's arm, and the hourly timeline slots rebuilt from the
-- 10-second ones. The row starts at version 0, so the first fold after this migration runs
-- that repair: it also covers what a previous version's leader folded while 0008 and this
-- migration were being applied. Only Litmus's fold sets litmus.fold_version (SET LOCAL in its
-- transaction); never set it in postgresql.conf or with ALTER DATABASE/ROLE, or an older
-- process's folds would be taken for this version's.
ALTER TABLE recompute_watermark ADD COLUMN fold_version int NOT NULL DEFAULT 0;

CREATE FUNCTION litmus_fold_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.fold_version := coalesce(nullif(current_setting('litmus.fold_version', true), ''), '0')::int;
    RETURN NEW;
END $$;

CREATE TRIGGER recompute_watermark_fold_version BEFORE INSERT OR UPDATE ON recompute_watermark
    FOR EACH ROW EXECUTE FUNCTION litmus_fold_version();
