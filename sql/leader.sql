-- The recompute leader (litmus/db/leader.py): one session-level advisory lock, held by the
-- leader's own connection, so that it is released the moment that session ends.

-- name: leader_try_lock
SELECT pg_try_advisory_lock($1);
