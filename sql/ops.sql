-- Queries of the operations endpoints (/metrics).

-- name: snapshot_age
-- The recompute lag as the dashboards see it: the age of the stalest results snapshot of a
-- running experiment (one launched but never computed counts from its launch). NULL when
-- nothing is running.
SELECT extract(epoch FROM now() - min(coalesce(s.computed_at, e.launched_at, e.updated_at)))::float8
FROM experiments e
LEFT JOIN results_snapshots s ON s.experiment_id = e.id
WHERE e.status = 'running';

-- name: ping
-- /readyz: the database answers.
SELECT 1;
