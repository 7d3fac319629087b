-- Lift over time (README, "Reading the results"): each lift row's estimate and intervals as the
-- recompute saw them, one point per experiment and timeline bucket (the bucket the results
-- timeline uses, so an experiment keeps at most about 60 points per doubling of its age). A
-- later recompute in the same bucket replaces the point: the latest estimate in each bucket.
CREATE TABLE lift_history (
    experiment_id uuid NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    bucket        timestamptz NOT NULL,
    computed_at   timestamptz NOT NULL,
    rows          jsonb NOT NULL,
    PRIMARY KEY (experiment_id, bucket)
);
