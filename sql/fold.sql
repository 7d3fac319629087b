-- The results fold (litmus/db/fold.py, litmus/services/fold.py): read the events committed
-- since the watermark, let the in-memory per-unit state (litmus/core/unitfold.py) turn them
-- into per-arm deltas, add those here, move the watermark; all in one transaction.

-- name: xid_brin_partitions
-- The ingest_xid BRIN index of every event partition, newest partition first.
SELECT i.inhrelid::regclass::text AS index
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent IN ('exposures_xid_brin'::regclass, 'metric_events_xid_brin'::regclass)
ORDER BY c.relname DESC;

-- name: summarize_lock_timeout
-- A partition being vacuumed holds the lock summarizing needs: skip it rather than wait.
SET LOCAL lock_timeout = '200ms';

-- name: summarize_new_ranges
-- BRIN indexes only learn about new page ranges when something summarizes them (VACUUM, which
-- an append-only table gets after ~20% growth). Until then every range scan reads all of them:
-- a fold would re-read every event since the last VACUUM. So each fold first summarizes the
-- new ranges of each partition's ingest_xid index; this reads only pages not yet summarized.
SELECT brin_summarize_new_values($1::regclass);

-- name: watermark_lock
SELECT xid_lo, fold_version, checkpoint_xid FROM recompute_watermark WHERE id = 1 FOR UPDATE;

-- name: watermark_init
INSERT INTO recompute_watermark (id, xid_lo) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

-- name: fold_version_set
-- Read by the watermark's trigger (migrations/0009) when this transaction writes the row.
SELECT set_config('litmus.fold_version', $1::text, true);

-- name: snapshot_xmin
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint;

-- name: watermark_set
UPDATE recompute_watermark SET xid_lo = $1, folded_at = now() WHERE id = 1;

-- name: fold_reset
-- Start over from no events folded at all (see litmus/services/fold.py for when).
WITH w AS (UPDATE recompute_watermark SET xid_lo = 0, checkpoint_xid = NULL, checkpoint_at = NULL
           WHERE id = 1)
DELETE FROM fold_checkpoint;

-- name: fold_reset_arms
TRUNCATE arm_exposures, arm_metrics, exposure_timeline, exposure_timeline_hourly;

-- name: fold_cutoffs_pin
-- Pin the stop cut-off of every experiment this fold is the first to see stopped (the table
-- fold_cutoffs, migrations/0010, says why).
INSERT INTO fold_cutoffs (experiment_id, xid)
SELECT id, $1 FROM experiments x
WHERE stopped_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM fold_cutoffs c WHERE c.experiment_id = x.id)
ON CONFLICT (experiment_id) DO NOTHING;

-- name: fold_cutoffs_clear
DELETE FROM fold_cutoffs;

-- name: fold_read_exposures
-- The new exposure events, as fixed-width binary COPY rows (litmus/db/fold.py parses them):
-- unit and event ids travel as 64-bit hashes, an unknown probability as 0, the five covariate
-- positions (MAX_COVARIATES in litmus/core/unitfold.py) as NaN when not sent. A stopped
-- experiment's analysis ends at the stop (afterwards every unit gets the winner), from the fold
-- that first saw it (fold_cutoffs).
SELECT e.experiment_id, hashtextextended(e.unit_id, 0), e.variant, e.ts,
       hashtextextended(e.event_id, 0), coalesce(e.probability, 0),
       coalesce(e.covariate_1, 'NaN'), coalesce(e.covariate_2, 'NaN'),
       coalesce(e.covariate_3, 'NaN'), coalesce(e.covariate_4, 'NaN'),
       coalesce(e.covariate_5, 'NaN')
FROM exposures e
WHERE e.ingest_xid >= $1 AND e.ingest_xid < $2
  AND NOT EXISTS (SELECT 1 FROM experiments x JOIN fold_cutoffs c ON c.experiment_id = x.id
                  WHERE x.id = e.experiment_id AND e.ts > x.stopped_at AND e.ingest_xid >= c.xid)

-- name: fold_read_metrics
-- The new metric events, likewise; the metric name travels as a hash (fold_metric_names).
SELECT e.experiment_id, hashtextextended(e.unit_id, 0), hashtextextended(e.metric, 0), e.value
FROM metric_events e
WHERE e.ingest_xid >= $1 AND e.ingest_xid < $2
  AND NOT EXISTS (SELECT 1 FROM experiments x JOIN fold_cutoffs c ON c.experiment_id = x.id
                  WHERE x.id = e.experiment_id AND e.ts > x.stopped_at AND e.ingest_xid >= c.xid)

-- name: fold_metric_names
-- The names behind metric hashes not seen before (rare: a new metric).
SELECT DISTINCT hashtextextended(metric, 0) AS hash, metric
FROM metric_events
WHERE ingest_xid >= $1 AND ingest_xid < $2 AND hashtextextended(metric, 0) = ANY($3::bigint[])

-- name: fold_add_exposures
INSERT INTO arm_exposures AS a (experiment_id, variant, units, events)
SELECT * FROM unnest($1::uuid[], $2::smallint[], $3::bigint[], $4::bigint[])
ON CONFLICT (experiment_id, variant) DO UPDATE SET
    units = a.units + EXCLUDED.units, events = a.events + EXCLUDED.events;

-- name: fold_add_metrics
INSERT INTO arm_metrics AS a (experiment_id, variant, metric, units, events, sum, sum_sq, positive)
SELECT * FROM unnest($1::uuid[], $2::smallint[], $3::text[], $4::bigint[], $5::bigint[],
                     $6::float8[], $7::float8[], $8::bigint[])
ON CONFLICT (experiment_id, variant, metric) DO UPDATE SET
    units = a.units + EXCLUDED.units, events = a.events + EXCLUDED.events,
    sum = a.sum + EXCLUDED.sum, sum_sq = a.sum_sq + EXCLUDED.sum_sq,
    positive = a.positive + EXCLUDED.positive;

-- name: positive_clear
-- The recount of the units above 0 (litmus/services/fold.py, _recount_positive): every row,
-- then positive_set for the rows that have such units.
UPDATE arm_metrics SET positive = 0 WHERE positive <> 0;

-- name: positive_set
UPDATE arm_metrics AS a SET positive = d.positive
FROM unnest($1::uuid[], $2::smallint[], $3::text[], $4::bigint[])
     AS d (experiment_id, variant, metric, positive)
WHERE a.experiment_id = d.experiment_id AND a.variant = d.variant AND a.metric = d.metric;

-- name: fold_add_timeline
-- New units per slot and variant by first exposure ($2: the slot's start in µs since
-- 2000-01-01 UTC), kept twice: in SLOT_S slots for young experiments and in HOURLY_SLOT_S
-- slots ($5), read once the timeline's points are that far apart (litmus/core/unitfold.py).
WITH d AS (
    SELECT experiment_id, timestamptz '2000-01-01 00:00:00+00' + slot * interval '1 microsecond' AS slot,
           variant, units
    FROM unnest($1::uuid[], $2::bigint[], $3::smallint[], $4::bigint[])
         AS u (experiment_id, slot, variant, units)
), fine AS (
    INSERT INTO exposure_timeline AS t (experiment_id, slot, variant, units)
    SELECT experiment_id, slot, variant, units FROM d
    ON CONFLICT (experiment_id, slot, variant) DO UPDATE SET units = t.units + EXCLUDED.units
)
INSERT INTO exposure_timeline_hourly AS t (experiment_id, slot, variant, units)
SELECT experiment_id, date_bin($5::interval, slot, timestamptz '2000-01-01 00:00:00+00'), variant, sum(units)
FROM d GROUP BY 1, 2, 3
ON CONFLICT (experiment_id, slot, variant) DO UPDATE SET units = t.units + EXCLUDED.units;

-- name: checkpoint_delete
-- The stored states about to be rewritten, and those of experiments deleted since.
DELETE FROM fold_checkpoint
WHERE experiment_id = ANY($1::uuid[])
   OR NOT EXISTS (SELECT 1 FROM experiments x WHERE x.id = experiment_id);

-- name: checkpoint_mark
UPDATE recompute_watermark SET checkpoint_xid = $1, checkpoint_at = now() WHERE id = 1;

-- name: checkpoint_read
SELECT experiment_id, name, dtype, data FROM fold_checkpoint
WHERE experiment_id = ANY($1::uuid[])
ORDER BY experiment_id, name, part;

-- name: checkpoint_experiments
SELECT DISTINCT experiment_id FROM fold_checkpoint;

-- name: metric_hashes
-- The hash each metric name travels as in fold_read_metrics.
SELECT m AS metric, hashtextextended(m, 0) AS hash FROM unnest($1::text[]) m;
