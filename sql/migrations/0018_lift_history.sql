-- Lift over time (README, "Reading the results"): each lift row's estimate and intervals as the
-- recompute saw them, one point per experiment and timeline bucket while it runs (the bucket
-- the results timeline uses, about a sixtieth of the experiment's age: about 60 points per
-- e-fold of its age, some 600 in its first three days and 750 in a month). A later recompute
-- in the same bucket replaces the point: the latest estimate in each bucket.
CREATE TABLE lift_history (
    experiment_id uuid NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    bucket        timestamptz NOT NULL,
    computed_at   timestamptz NOT NULL,
    rows          jsonb NOT NULL,
    PRIMARY KEY (experiment_id, bucket)
);
