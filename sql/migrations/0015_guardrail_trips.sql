-- Guardrail trips (README, "Guardrails that act"): the first time a guardrail tripped for one
-- treatment. The primary key is what makes a trip act once, whichever process leads the
-- recompute when it happens: a second insert for the same treatment and metric does nothing.
CREATE TABLE guardrail_trips (
    experiment_id uuid NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    treatment     text NOT NULL,
    metric        text NOT NULL,
    action        text NOT NULL CHECK (action IN ('alert', 'pause', 'rollback')),
    margin        double precision NOT NULL,
    harm          double precision,
    lo            double precision,
    hi            double precision,
    n_control     bigint NOT NULL,
    n_treatment   bigint NOT NULL,
    tripped_at    timestamptz NOT NULL,
    -- When the trip's action was taken and audited; NULL for a trip recorded by a leader that
    -- stopped before acting on it: the next leader acts on it (litmus/services/guardrails.py).
    acted_at      timestamptz,
    PRIMARY KEY (experiment_id, treatment, metric)
);
