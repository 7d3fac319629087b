-- A constrained bandit's latest chance, per variant and constraint metric, that the variant
-- meets the constraint (README, "Quality, cost and latency together"): kept with the weights and
-- P(best) it came from, so every snapshot between two updates shows the same numbers.
ALTER TABLE bandit_state ADD COLUMN p_feasible jsonb NOT NULL DEFAULT '{}';
