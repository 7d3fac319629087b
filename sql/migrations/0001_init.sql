-- Experiments, their audit log, and the change notification every committed change sends.
CREATE TABLE experiments (
    id            uuid PRIMARY KEY,
    key           text NOT NULL UNIQUE,
    name          text NOT NULL,
    description   text NOT NULL,
    owner_team    text NOT NULL,
    hypothesis    text,
    status        text NOT NULL CHECK (status IN ('draft', 'running', 'paused', 'stopped')),
    ramp          double precision NOT NULL CHECK (ramp >= 0 AND ramp <= 1),
    variants      jsonb NOT NULL,
    allocation    text NOT NULL CHECK (allocation IN ('fixed', 'bandit')),
    bandit        jsonb,
    targeting     jsonb NOT NULL DEFAULT '[]',
    overrides     jsonb NOT NULL DEFAULT '{}',
    metrics       jsonb NOT NULL,
    analysis_mode text NOT NULL CHECK (analysis_mode IN ('sequential', 'fixed')),
    salt          text,
    winner        text,
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    launched_at   timestamptz,
    stopped_at    timestamptz
);
CREATE INDEX experiments_status_idx ON experiments (status, created_at DESC);
CREATE INDEX experiments_team_idx ON experiments (owner_team, created_at DESC);

CREATE TABLE experiment_audit (
    id            bigserial PRIMARY KEY,
    experiment_id uuid NOT NULL,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor         text NOT NULL,
    action        text NOT NULL,
    changes       jsonb NOT NULL DEFAULT '{}',
    before        jsonb,
    after         jsonb
);
CREATE INDEX experiment_audit_exp_idx ON experiment_audit (experiment_id, id);

-- Every change to an experiment NOTIFYs its id in the same transaction, so that the
-- registry of every process hears about it exactly when the change becomes visible.
CREATE FUNCTION litmus_notify_experiment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('litmus_experiments', OLD.id::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('litmus_experiments', NEW.id::text);
    RETURN NEW;
END $$;

CREATE TRIGGER experiments_notify AFTER INSERT OR UPDATE OR DELETE ON experiments
    FOR EACH ROW EXECUTE FUNCTION litmus_notify_experiment();
