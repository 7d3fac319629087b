-- Named queries; litmus.db.queries loads each `-- name:` block once.

-- name: experiment_insert
INSERT INTO experiments (id, key, name, description, owner_team, hypothesis, status, ramp,
    variants, allocation, bandit, targeting, overrides, metrics, analysis_mode, salt, winner)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
RETURNING *;

-- name: experiment_get
SELECT * FROM experiments WHERE id = $1;

-- name: experiment_get_by_key
SELECT * FROM experiments WHERE key = $1;

-- name: experiment_lock
SELECT * FROM experiments WHERE id = $1 FOR UPDATE;

-- name: experiment_list
SELECT * FROM experiments
WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR owner_team = $2)
ORDER BY created_at DESC, id DESC
LIMIT $3 OFFSET $4;

-- name: experiment_update
UPDATE experiments SET key = $2, name = $3, description = $4, owner_team = $5,
    hypothesis = $6, status = $7, ramp = $8, variants = $9, allocation = $10, bandit = $11,
    targeting = $12, overrides = $13, metrics = $14, analysis_mode = $15, salt = $16,
    winner = $17, launched_at = $18, stopped_at = $19,
    version = version + 1, updated_at = clock_timestamp()
WHERE id = $1
RETURNING *;

-- name: experiment_delete
DELETE FROM experiments WHERE id = $1;

-- name: audit_insert
INSERT INTO experiment_audit (experiment_id, actor, action, changes, before, after)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: audit_list
SELECT at, actor, action, changes, before, after FROM experiment_audit
WHERE experiment_id = $1 ORDER BY id DESC LIMIT $2;

-- name: registry_all
SELECT e.*, b.weights AS bandit_weights
FROM experiments e LEFT JOIN bandit_state b ON b.experiment_id = e.id;

-- name: registry_one
SELECT e.*, b.weights AS bandit_weights
FROM experiments e LEFT JOIN bandit_state b ON b.experiment_id = e.id
WHERE e.id = $1;

-- name: xid_brin_partitions
-- The ingest_xid BRIN index of every event partition, newest partition first.
SELECT i.inhrelid::regclass::text AS index
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent IN ('exposures_xid_brin'::regclass, 'metric_events_xid_brin'::regclass)
ORDER BY c.relname DESC;

-- name: summarize_new_ranges
-- BRIN indexes only learn about new page ranges when something summarizes them (VACUUM, which
-- an append-only table gets after ~20% growth). Until then every range scan reads all of them:
-- a fold would re-read every event since the last VACUUM. So each fold first summarizes the
-- new ranges of each partition's ingest_xid index; this reads only pages not yet summarized.
SELECT brin_summarize_new_values($1::regclass);

-- name: watermark_lock
SELECT xid_lo, fold_version FROM recompute_watermark WHERE id = 1 FOR UPDATE;

-- name: fold_version_set
-- Read by the trigger of 0009 when this transaction moves the watermark.
SELECT set_config('litmus.fold_version', $1::text, true);

-- name: repair_metric_arms
-- After a fold by an older version (see 0009): give every unit_metrics row its unit's arm.
UPDATE unit_metrics m SET variant = e.variant
FROM unit_exposures e
WHERE e.experiment_id = m.experiment_id AND e.unit_id = m.unit_id AND m.variant <> e.variant;

-- name: repair_hourly_timeline_clear
DELETE FROM exposure_timeline_hourly;

-- name: repair_hourly_timeline
-- After a fold by an older version (see 0009): hourly slots again from the 10-second ones.
INSERT INTO exposure_timeline_hourly (experiment_id, slot, variant, units)
SELECT experiment_id, date_bin('1 hour', slot, timestamptz '2000-01-01'), variant, sum(units)
FROM exposure_timeline GROUP BY 1, 2, 3;

-- name: watermark_init
INSERT INTO recompute_watermark (id, xid_lo) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

-- name: snapshot_xmin
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint;

-- name: fold_moves_table
CREATE TEMP TABLE IF NOT EXISTS fold_moves (
    experiment_id uuid NOT NULL,
    unit_id       text COLLATE "C" NOT NULL,  -- as in unit_metrics: joins can use its key
    old_variant   smallint,
    new_variant   smallint NOT NULL,
    old_ts        timestamptz,
    new_ts        timestamptz NOT NULL
) ON COMMIT DELETE ROWS;

-- name: fold_exposures
-- Per-unit first exposures from the new events; records every unit whose first exposure is
-- new or moved earlier (an earlier exposure arrived late) in fold_moves for the arm deltas.
-- Each new unit is looked up once in unit_exposures (joined, materialised): no CTE-to-CTE join.
WITH new AS (
    SELECT experiment_id, unit_id, (array_agg(variant ORDER BY ts, ingest_xid, event_id))[1] AS variant,
           min(ts) AS first_ts, count(*) AS n
    FROM exposures
    WHERE ingest_xid >= $1 AND ingest_xid < $2
      -- A stopped experiment's analysis ends at the stop: afterwards every unit gets the winner.
      AND NOT EXISTS (SELECT 1 FROM experiments x
                      WHERE x.id = experiment_id AND x.stopped_at IS NOT NULL AND ts > x.stopped_at)
    GROUP BY experiment_id, unit_id
), joined AS MATERIALIZED (
    SELECT n.experiment_id, n.unit_id, n.variant, n.first_ts, n.n,
           u.variant AS old_variant, u.first_ts AS old_ts
    FROM new n
    LEFT JOIN unit_exposures u ON u.experiment_id = n.experiment_id AND u.unit_id = n.unit_id
), up AS (
    INSERT INTO unit_exposures AS u (experiment_id, unit_id, variant, first_ts, exposures)
    SELECT experiment_id, unit_id, variant, first_ts, n FROM joined
    ON CONFLICT (experiment_id, unit_id) DO UPDATE SET
        variant = CASE WHEN EXCLUDED.first_ts < u.first_ts THEN EXCLUDED.variant ELSE u.variant END,
        first_ts = LEAST(u.first_ts, EXCLUDED.first_ts),
        exposures = u.exposures + EXCLUDED.exposures
)
INSERT INTO fold_moves (experiment_id, unit_id, old_variant, new_variant, old_ts, new_ts)
SELECT experiment_id, unit_id, old_variant, variant, old_ts, first_ts
FROM joined
WHERE old_ts IS NULL OR first_ts < old_ts;

-- name: fold_moves_analyze
ANALYZE fold_moves;

-- name: fold_analyze_units
ANALYZE unit_exposures, unit_metrics;

-- name: fold_exposure_events
INSERT INTO arm_exposures AS a (experiment_id, variant, events)
SELECT experiment_id, variant, count(*)
FROM exposures
WHERE ingest_xid >= $1 AND ingest_xid < $2
  AND NOT EXISTS (SELECT 1 FROM experiments x
                  WHERE x.id = experiment_id AND x.stopped_at IS NOT NULL AND ts > x.stopped_at)
GROUP BY experiment_id, variant
ON CONFLICT (experiment_id, variant) DO UPDATE SET events = a.events + EXCLUDED.events;

-- name: fold_exposure_units
INSERT INTO arm_exposures AS a (experiment_id, variant, units)
SELECT experiment_id, variant, sum(d) FROM (
    SELECT experiment_id, new_variant AS variant, 1 AS d FROM fold_moves
    WHERE old_variant IS DISTINCT FROM new_variant
    UNION ALL
    SELECT experiment_id, old_variant, -1 FROM fold_moves
    WHERE old_variant IS NOT NULL AND old_variant <> new_variant
) deltas
GROUP BY experiment_id, variant
ON CONFLICT (experiment_id, variant) DO UPDATE SET units = a.units + EXCLUDED.units;

-- name: fold_timeline
-- New units per slot and variant, by first exposure: +1 in the slot of the new first exposure,
-- -1 in the old one's when a unit moved. Kept twice: 10-second slots for young experiments
-- and hourly slots, read once the timeline's points are an hour or more apart (0008).
WITH deltas AS (
    SELECT experiment_id, new_ts AS ts, new_variant AS variant, 1 AS d FROM fold_moves
    UNION ALL
    SELECT experiment_id, old_ts, old_variant, -1 FROM fold_moves WHERE old_variant IS NOT NULL
), fine AS (
    INSERT INTO exposure_timeline AS t (experiment_id, slot, variant, units)
    SELECT experiment_id, date_bin('10 seconds', ts, timestamptz '2000-01-01'), variant, sum(d)
    FROM deltas GROUP BY 1, 2, 3
    ON CONFLICT (experiment_id, slot, variant) DO UPDATE SET units = t.units + EXCLUDED.units
)
INSERT INTO exposure_timeline_hourly AS t (experiment_id, slot, variant, units)
SELECT experiment_id, date_bin('1 hour', ts, timestamptz '2000-01-01'), variant, sum(d)
FROM deltas GROUP BY 1, 2, 3
ON CONFLICT (experiment_id, slot, variant) DO UPDATE SET units = t.units + EXCLUDED.units;

-- name: fold_move_metrics
-- Units that changed arm take their metric totals (folded earlier) with them, and their metric
-- rows take the new arm; a unit seen for the first time moves its totals out of
-- "unattributed" (variant -1). Each of the unit's metric rows yields a +1 on the new arm and
-- a -1 on the old. A small fold runs this with hash and merge joins off (litmus/db/results.py):
-- one key lookup per moved unit, where the planner would rather read all of unit_metrics (at
-- 10 M events a hash join read all 2.4 M rows to find 20 k moved units: 1 s against 0.05 s).
WITH moved AS (
    UPDATE unit_metrics u SET variant = mv.new_variant
    FROM fold_moves mv
    WHERE u.experiment_id = mv.experiment_id AND u.unit_id = mv.unit_id
      AND mv.old_variant IS DISTINCT FROM mv.new_variant
    RETURNING u.experiment_id, u.metric, u.events, u.total, mv.new_variant,
              coalesce(mv.old_variant, -1) AS old_variant
)
INSERT INTO arm_metrics AS a (experiment_id, variant, metric, units, events, sum, sum_sq)
SELECT experiment_id, CASE WHEN d.sign = 1 THEN new_variant ELSE old_variant END, metric,
       sum(d.sign), sum(d.sign * events), sum(d.sign * total), sum(d.sign * total * total)
FROM moved
CROSS JOIN (VALUES (1), (-1)) AS d (sign)
GROUP BY 1, 2, 3
ON CONFLICT (experiment_id, variant, metric) DO UPDATE SET
    units = a.units + EXCLUDED.units, events = a.events + EXCLUDED.events,
    sum = a.sum + EXCLUDED.sum, sum_sq = a.sum_sq + EXCLUDED.sum_sq;

-- name: fold_metrics
-- Per-unit totals from the new metric events, and their deltas on the unit's arm:
-- Σ total grows by the new sum, Σ total² by new_total² − old_total², units by the units new to
-- the metric. Existing (unit, metric) rows are updated in place (one key lookup each, and the
-- page has room for the new version: fillfactor 80, a HOT update); the old total is taken as
-- the new one minus the added sum (within a rounding step of the stored value, like every
-- float sum here). Only the keys the update did not find are inserted: `new` has one row per
-- key, so a key is either updated or inserted, never both.
WITH new AS (
    SELECT experiment_id, unit_id, metric, sum(value) AS s, count(*) AS c
    FROM metric_events
    WHERE ingest_xid >= $1 AND ingest_xid < $2
      AND NOT EXISTS (SELECT 1 FROM experiments x
                      WHERE x.id = experiment_id AND x.stopped_at IS NOT NULL AND ts > x.stopped_at)
    GROUP BY experiment_id, unit_id, metric
), upd AS (
    UPDATE unit_metrics m SET total = m.total + n.s, events = m.events + n.c
    FROM new n
    WHERE m.experiment_id = n.experiment_id AND m.unit_id = n.unit_id AND m.metric = n.metric
    RETURNING m.experiment_id, m.unit_id, m.variant, m.metric, m.total - n.s AS old_total, n.s, n.c
), ins AS (
    -- A new key's arm: its unit's first exposure, folded by the statements before this one.
    INSERT INTO unit_metrics (experiment_id, unit_id, metric, total, events, variant)
    SELECT n.experiment_id, n.unit_id, n.metric, n.s, n.c,
           coalesce((SELECT e.variant FROM unit_exposures e
                     WHERE e.experiment_id = n.experiment_id AND e.unit_id = n.unit_id), -1)
    FROM new n
    WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.experiment_id = n.experiment_id
                      AND u.unit_id = n.unit_id AND u.metric = n.metric)
    RETURNING experiment_id, unit_id, variant, metric, NULL::float8 AS old_total, total AS s,
              events AS c
), deltas AS (
    SELECT * FROM upd UNION ALL SELECT * FROM ins
)
INSERT INTO arm_metrics AS a (experiment_id, variant, metric, units, events, sum, sum_sq)
SELECT experiment_id, variant, metric,
       count(*) FILTER (WHERE old_total IS NULL), sum(c), sum(s),
       sum((coalesce(old_total, 0) + s) * (coalesce(old_total, 0) + s)
           - coalesce(old_total, 0) * coalesce(old_total, 0))
FROM deltas
GROUP BY 1, 2, 3
ON CONFLICT (experiment_id, variant, metric) DO UPDATE SET
    units = a.units + EXCLUDED.units, events = a.events + EXCLUDED.events,
    sum = a.sum + EXCLUDED.sum, sum_sq = a.sum_sq + EXCLUDED.sum_sq;

-- name: fold_reset
TRUNCATE unit_exposures, unit_metrics, arm_exposures, arm_metrics, exposure_timeline,
         exposure_timeline_hourly;

-- name: watermark_set
UPDATE recompute_watermark SET xid_lo = $1, folded_at = now() WHERE id = 1;

-- name: agg_exposures
SELECT variant, units, events FROM arm_exposures WHERE experiment_id = $1;

-- name: agg_metrics
SELECT variant, metric, events AS count, units, sum, sum_sq
FROM arm_metrics WHERE experiment_id = $1;

-- name: agg_timeline
-- $4: read the hourly slots (the bucket is a whole number of hours) instead of the 10-second
-- ones; the other branch is skipped at execution.
SELECT date_bin($2::interval, slot, $3::timestamptz) AS t, variant, sum(units)::bigint AS units
FROM (
    SELECT slot, variant, units FROM exposure_timeline WHERE experiment_id = $1 AND NOT $4
    UNION ALL
    SELECT slot, variant, units FROM exposure_timeline_hourly WHERE experiment_id = $1 AND $4
) slots
GROUP BY 1, 2 HAVING sum(units) <> 0 ORDER BY 1;

-- name: recompute_targets
SELECT id FROM experiments
WHERE status IN ('running', 'paused')
   OR (status = 'stopped' AND stopped_at > now() - $1::interval)
ORDER BY id;

-- name: snapshot_upsert
INSERT INTO results_snapshots (experiment_id, computed_at, snapshot, anytime_p)
VALUES ($1, $2, $3, $4)
ON CONFLICT (experiment_id) DO UPDATE SET
    computed_at = EXCLUDED.computed_at, snapshot = EXCLUDED.snapshot, anytime_p = EXCLUDED.anytime_p;

-- name: snapshot_get
SELECT computed_at, snapshot, anytime_p FROM results_snapshots WHERE experiment_id = $1;

-- name: bandit_get
SELECT weights, p_best, top_variant, converged, converged_at, converged_variant, burn_in, updated_at
FROM bandit_state WHERE experiment_id = $1;

-- name: bandit_upsert
INSERT INTO bandit_state AS b (experiment_id, weights, p_best, top_variant, converged, converged_at,
                               converged_variant, burn_in, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (experiment_id) DO UPDATE SET
    weights = EXCLUDED.weights, p_best = EXCLUDED.p_best, top_variant = EXCLUDED.top_variant,
    converged = EXCLUDED.converged, converged_at = EXCLUDED.converged_at,
    converged_variant = EXCLUDED.converged_variant, burn_in = EXCLUDED.burn_in,
    updated_at = EXCLUDED.updated_at;

-- name: bandit_history_add
INSERT INTO bandit_history (experiment_id, t, weights, p_best) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING;

-- name: bandit_history_get
SELECT t, weights, p_best FROM (
    SELECT t, weights, p_best FROM bandit_history WHERE experiment_id = $1 ORDER BY t DESC LIMIT $2
) h ORDER BY t;
