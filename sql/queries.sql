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

-- name: experiment_keys_like
-- A key and its numbered forms (`ranker-v2`, `ranker-v2-7`): which suffixes are taken.
SELECT key FROM experiments WHERE key = $1 OR key LIKE $1 || '-%';

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
SELECT weights, p_best, top_variant, converged, converged_at, converged_variant, burn_in, updated_at,
       p_feasible
FROM bandit_state WHERE experiment_id = $1;

-- name: bandit_upsert
INSERT INTO bandit_state AS b (experiment_id, weights, p_best, top_variant, converged, converged_at,
                               converged_variant, burn_in, updated_at, p_feasible)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (experiment_id) DO UPDATE SET
    weights = EXCLUDED.weights, p_best = EXCLUDED.p_best, top_variant = EXCLUDED.top_variant,
    converged = EXCLUDED.converged, converged_at = EXCLUDED.converged_at,
    converged_variant = EXCLUDED.converged_variant, burn_in = EXCLUDED.burn_in,
    updated_at = EXCLUDED.updated_at, p_feasible = EXCLUDED.p_feasible;

-- name: bandit_history_add
INSERT INTO bandit_history (experiment_id, t, weights, p_best) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING;

-- name: bandit_history_get
SELECT t, weights, p_best FROM (
    SELECT t, weights, p_best FROM bandit_history WHERE experiment_id = $1 ORDER BY t DESC LIMIT $2
) h ORDER BY t;

-- name: lift_history_put
INSERT INTO lift_history (experiment_id, bucket, computed_at, rows) VALUES ($1, $2, $3, $4)
ON CONFLICT (experiment_id, bucket) DO UPDATE SET
    computed_at = EXCLUDED.computed_at, rows = EXCLUDED.rows
WHERE lift_history.computed_at <= EXCLUDED.computed_at;

-- name: lift_history_get
SELECT computed_at, rows FROM (
    SELECT computed_at, rows FROM lift_history WHERE experiment_id = $1
    ORDER BY computed_at DESC LIMIT $2
) h ORDER BY computed_at;

-- name: arm_positive
-- Per arm, the units whose total of this metric is above 0: a binary bandit's successes (0012).
SELECT variant, positive FROM arm_metrics
WHERE experiment_id = $1 AND metric = $2 AND variant >= 0;

-- name: bandit_updates
-- Bandit updates stored so far: the update number that seeds the next one's Monte Carlo.
SELECT count(*) FROM bandit_history WHERE experiment_id = $1;

-- name: segment_keys
-- The attribute names the experiment's exposures carry (README, "Segments"): a scan of its
-- exposures, read on request only.
SELECT DISTINCT k AS key FROM exposures e, LATERAL jsonb_object_keys(e.attributes::jsonb) AS k
WHERE e.experiment_id = $1 AND e.attributes IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM experiments x JOIN fold_cutoffs c ON c.experiment_id = x.id
                  WHERE x.id = e.experiment_id AND e.ts > x.stopped_at AND e.ingest_xid >= c.xid)
ORDER BY 1;

-- name: segment_timeout
-- The breakdown reads raw events on request: bounded, so that it cannot hold a connection long.
SELECT set_config('statement_timeout', $1, true);

-- name: segment_aggregates
-- Per segment of attribute $2 and variant, what the recompute's per-arm tables hold for the
-- whole experiment, from the raw events: each unit's first exposure (earliest ts; of two at
-- one time the lower event-id hash, as the fold decides) gives its variant and its segment.
-- The first $3 distinct values (by when their first unit arrived) are segments; later ones
-- are `other` (other = true); units whose first exposure lacks the attribute have value NULL.
-- `rank` numbers the tracked values in that order (1 first).
-- Rows with metric NULL are the exposures (units, events); the others are a metric's units
-- with events, events, Σ of unit totals and Σ of squared unit totals, each total capped at
-- the metric's cap ($4 names, $5 caps). Events after a stopped experiment's pinned cutoff are
-- left out, by the fold's rule (sql/fold.sql, fold_read_exposures). The float sums add in a
-- fixed order (each unit's events by ts and event id, the units by id): the same events give
-- the same bits whatever plan reads them, so two reads of one breakdown agree exactly.
WITH u AS MATERIALIZED (
    SELECT unit_id,
           (array_agg(variant ORDER BY ts, hashtextextended(event_id, 0)))[1] AS variant,
           (array_agg(attributes::jsonb ->> $2 ORDER BY ts, hashtextextended(event_id, 0)))[1]
               AS value,
           min(ts) AS first_ts, count(*) AS events
    FROM exposures e WHERE e.experiment_id = $1
      AND NOT EXISTS (SELECT 1 FROM experiments x JOIN fold_cutoffs c ON c.experiment_id = x.id
                      WHERE x.id = e.experiment_id AND e.ts > x.stopped_at
                        AND e.ingest_xid >= c.xid)
    GROUP BY unit_id
), tracked AS (
    SELECT value, row_number() OVER (ORDER BY min(first_ts), value) AS rank
    FROM u WHERE value IS NOT NULL
    GROUP BY value ORDER BY rank LIMIT $3
), seg AS MATERIALIZED (
    SELECT u.unit_id, u.variant, u.events, t.value, t.rank,
           u.value IS NOT NULL AND t.value IS NULL AS other
    FROM u LEFT JOIN tracked t ON t.value = u.value
), tot AS (
    SELECT unit_id, metric, count(*) AS events, sum(value ORDER BY ts, event_id) AS total
    FROM metric_events e WHERE e.experiment_id = $1
      AND NOT EXISTS (SELECT 1 FROM experiments x JOIN fold_cutoffs c ON c.experiment_id = x.id
                      WHERE x.id = e.experiment_id AND e.ts > x.stopped_at
                        AND e.ingest_xid >= c.xid)
    GROUP BY unit_id, metric
), caps AS (
    SELECT * FROM unnest($4::text[], $5::float8[]) AS c(metric, cap)
), capped AS (
    SELECT unit_id, s.value, s.rank, s.other, s.variant, t.metric, t.events,
           least(t.total, coalesce(c.cap, 'Infinity'::float8)) AS total
    FROM seg s JOIN tot t USING (unit_id) LEFT JOIN caps c USING (metric)
)
SELECT value, rank, other, variant, NULL::text AS metric, count(*)::bigint AS units,
       sum(events)::bigint AS events, 0::float8 AS sum, 0::float8 AS sum_sq
FROM seg GROUP BY value, rank, other, variant
UNION ALL
SELECT value, rank, other, variant, metric, count(*)::bigint, sum(events)::bigint,
       sum(total ORDER BY unit_id), sum(total * total ORDER BY unit_id)
FROM capped GROUP BY value, rank, other, variant, metric;

-- name: units_export
-- One row per exposed unit: its first exposure (earliest ts; of two at one time the lower
-- event-id hash, as the fold decides) and its total for one metric (0 without events).
WITH first AS (
    SELECT DISTINCT ON (unit_id) unit_id, variant, probability, ts
    FROM exposures WHERE experiment_id = $1
    ORDER BY unit_id, ts, hashtextextended(event_id, 0)
), tot AS (
    SELECT unit_id, sum(value) AS total FROM metric_events
    WHERE experiment_id = $1 AND metric = $2 GROUP BY unit_id
)
SELECT f.unit_id, f.variant, abs(f.probability) AS probability, f.ts,
       coalesce(t.total, 0) AS value
FROM first f LEFT JOIN tot t USING (unit_id)
ORDER BY f.unit_id;
