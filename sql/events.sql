-- Named queries of event ingestion; litmus.db.events loads this file once.
-- Schema and its rationale: sql/migrations/0002_events.sql.

-- name: stage_create
-- When a flush holds a repeated event_id (its COPY into event_ids failed), the writer stages
-- it here and stage_flush moves what is new. Temporary: no WAL, no index; emptied at commit.
-- `req` numbers the requests of the group commit, so that each learns what it had stored.
CREATE TEMP TABLE IF NOT EXISTS stage_exposures (
    experiment_id uuid NOT NULL,
    unit_id       text COLLATE "C" NOT NULL,
    variant       smallint NOT NULL,
    ts            timestamptz NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    probability   double precision,
    covariate_1   double precision,
    covariate_2   double precision,
    covariate_3   double precision,
    covariate_4   double precision,
    covariate_5   double precision,
    attributes    text,
    dedupe        boolean NOT NULL,
    req           int NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_metric_events (
    experiment_id uuid NOT NULL,
    unit_id       text COLLATE "C" NOT NULL,
    metric        text COLLATE "C" NOT NULL,
    value         double precision NOT NULL,
    variant       smallint,
    ts            timestamptz NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    dedupe        boolean NOT NULL,
    req           int NOT NULL
) ON COMMIT DELETE ROWS;

-- name: stage_flush
-- Claim every client-supplied event_id in event_ids, per experiment and event type (0011:
-- kind 0 exposures, 1 metric events); store the staged events whose id this statement
-- claimed (a repeat of an earlier event_id of the same type finds its id taken and is
-- dropped), and every event with a server-made id (dedupe false: unique by construction).
-- The writer has already removed repeats within the flush. Returns, per request of the
-- group commit that stored anything, (req, exposures stored, metrics stored).
WITH claimed AS (
    INSERT INTO event_ids (experiment_id, kind, event_id)
    SELECT experiment_id, 0, event_id FROM stage_exposures WHERE dedupe
    UNION ALL
    SELECT experiment_id, 1, event_id FROM stage_metric_events WHERE dedupe
    ON CONFLICT DO NOTHING
    RETURNING experiment_id, kind, event_id
), se AS MATERIALIZED (
    SELECT s.* FROM stage_exposures s
    WHERE NOT s.dedupe
       OR (s.experiment_id, s.event_id) IN (SELECT experiment_id, event_id FROM claimed
                                            WHERE kind = 0)
), sm AS MATERIALIZED (
    SELECT s.* FROM stage_metric_events s
    WHERE NOT s.dedupe
       OR (s.experiment_id, s.event_id) IN (SELECT experiment_id, event_id FROM claimed
                                            WHERE kind = 1)
), e AS (
    INSERT INTO exposures (experiment_id, unit_id, variant, ts, event_id, probability,
                           covariate_1, covariate_2, covariate_3, covariate_4, covariate_5,
                           attributes)
    SELECT experiment_id, unit_id, variant, ts, event_id, probability,
           covariate_1, covariate_2, covariate_3, covariate_4, covariate_5, attributes
    FROM se
), m AS (
    INSERT INTO metric_events (experiment_id, unit_id, metric, value, variant, ts, event_id)
    SELECT experiment_id, unit_id, metric, value, variant, ts, event_id FROM sm
)
SELECT req, sum(e)::int AS exposures, sum(m)::int AS metrics
FROM (SELECT req, 1 AS e, 0 AS m FROM se UNION ALL SELECT req, 0, 1 FROM sm) AS stored
GROUP BY req;

-- name: ensure_partitions
SELECT litmus_ensure_event_partitions($1, $2);

-- name: watermark
-- For incremental readers: every transaction with an id below this has ended, so rows with
-- ingest_xid in [previous watermark, this one) are complete and will never change.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint;

-- name: event_counts
SELECT (SELECT count(*) FROM exposures WHERE experiment_id = $1) AS exposures,
       (SELECT count(*) FROM metric_events WHERE experiment_id = $1) AS metrics;
