-- Guardrail trips (litmus/db/guardrails.py).

-- name: trip_insert
-- Returns the row only when this is the first trip of the treatment and metric.
INSERT INTO guardrail_trips (experiment_id, treatment, metric, action, margin, harm, lo, hi,
                             n_control, n_treatment, tripped_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (experiment_id, treatment, metric) DO NOTHING
RETURNING tripped_at;

-- name: trips_list
SELECT treatment, metric, action, margin, harm, lo, hi, n_control, n_treatment, tripped_at
FROM guardrail_trips WHERE experiment_id = $1 ORDER BY tripped_at, treatment, metric;

-- name: trips_forget
-- Trips of guardrails a person removed or changed: the guardrail as it is now starts afresh.
DELETE FROM guardrail_trips WHERE experiment_id = $1 AND metric = ANY($2::text[]);

-- name: trip_forget
DELETE FROM guardrail_trips WHERE experiment_id = $1 AND treatment = $2 AND metric = $3;

-- name: trips_forget_all
DELETE FROM guardrail_trips WHERE experiment_id = $1;

-- name: trips_unacted
-- Trips recorded but never acted on (their leader stopped in between).
SELECT metric, treatment, tripped_at FROM guardrail_trips
WHERE experiment_id = $1 AND acted_at IS NULL;

-- name: trip_action_taken
-- Whether a guardrail paused or stopped the experiment since a trip (its leader stopped after
-- the action and before the trip's audit entry).
SELECT action FROM experiment_audit
WHERE experiment_id = $1 AND actor = $2 AND action IN ('pause', 'stop') AND at >= $3
ORDER BY at LIMIT 1;

-- name: trip_audit
-- The audit entry of a trip, and the trip marked as acted on, in one statement.
WITH acted AS (
    UPDATE guardrail_trips SET acted_at = now()
    WHERE experiment_id = $1 AND treatment = $4 AND metric = $5
)
INSERT INTO experiment_audit (experiment_id, actor, action, changes)
VALUES ($1, $2, 'guardrail_trip', $3);
