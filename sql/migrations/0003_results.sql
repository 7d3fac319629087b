-- Bandit weights (written by the recompute leader, read by every registry) and stored
-- results snapshots (served by every process, never computed on the request path).
CREATE TABLE bandit_state (
    experiment_id uuid PRIMARY KEY REFERENCES experiments (id) ON DELETE CASCADE,
    weights       jsonb NOT NULL,
    p_best        jsonb NOT NULL,
    top_variant   text,
    converged     boolean NOT NULL DEFAULT false,
    converged_at  timestamptz,
    converged_variant text,
    burn_in       boolean NOT NULL DEFAULT true,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bandit_history (
    experiment_id uuid NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    t             timestamptz NOT NULL,
    weights       jsonb NOT NULL,
    p_best        jsonb NOT NULL,
    PRIMARY KEY (experiment_id, t)
);

CREATE TABLE results_snapshots (
    experiment_id uuid PRIMARY KEY REFERENCES experiments (id) ON DELETE CASCADE,
    computed_at   timestamptz NOT NULL,
    snapshot      jsonb NOT NULL,
    -- running minimum of each lift row's anytime-valid p-value, keyed "metric/treatment"
    anytime_p     jsonb NOT NULL DEFAULT '{}'
);

-- Per-unit totals, folded incrementally from the events tables: each recompute reads only the
-- events committed since the watermark (see 0002_events.sql for why ingest_xid is safe), so its
-- cost grows with the new events; the per-experiment aggregates then read one row per unit.
CREATE TABLE unit_exposures (
    experiment_id uuid        NOT NULL,
    unit_id       text        NOT NULL,
    variant       smallint    NOT NULL,  -- the variant of the unit's FIRST exposure
    first_ts      timestamptz NOT NULL,
    exposures     bigint      NOT NULL,
    PRIMARY KEY (experiment_id, unit_id)
);
CREATE INDEX unit_exposures_first_ts_idx ON unit_exposures (experiment_id, first_ts);

CREATE TABLE unit_metrics (
    experiment_id uuid             NOT NULL,
    unit_id       text             NOT NULL,
    metric        text             NOT NULL,
    total         double precision NOT NULL,  -- the unit's value: the sum of its events' values
    events        bigint           NOT NULL,
    PRIMARY KEY (experiment_id, unit_id, metric)
);

CREATE TABLE recompute_watermark (
    id      smallint PRIMARY KEY CHECK (id = 1),
    xid_lo  bigint NOT NULL,
    folded_at timestamptz
);
INSERT INTO recompute_watermark (id, xid_lo) VALUES (1, 0);

-- New weights must reach assignment in every process: notify like an experiment change.
CREATE FUNCTION litmus_notify_bandit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('litmus_experiments', NEW.experiment_id::text);
    RETURN NEW;
END $$;

CREATE TRIGGER bandit_state_notify AFTER INSERT OR UPDATE ON bandit_state
    FOR EACH ROW EXECUTE FUNCTION litmus_notify_bandit();
