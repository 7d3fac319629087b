-- Each (unit, metric) row now carries its unit's arm (the variant of its first exposure; -1:
-- not exposed yet). The fold used to look the arm up in unit_exposures for every key it
-- touched, a second B-tree descent per key (about 4 of the 20 µs a key cost at 10 M events,
-- docs/PERFORMANCE.md). The fold sets it when it inserts the row and changes it when the
-- unit's first exposure arrives or moves.
ALTER TABLE unit_metrics ADD COLUMN variant smallint NOT NULL DEFAULT -1;

UPDATE unit_metrics m SET variant = e.variant
FROM unit_exposures e
WHERE e.experiment_id = m.experiment_id AND e.unit_id = m.unit_id;
