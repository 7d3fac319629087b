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

-- name: experiment_live
SELECT * FROM experiments WHERE status IN ('running', 'paused', 'stopped');

-- name: audit_insert
INSERT INTO experiment_audit (experiment_id, actor, action, changes, before, after)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: audit_list
SELECT at, actor, action, changes, before, after FROM experiment_audit
WHERE experiment_id = $1 ORDER BY id DESC LIMIT $2;
