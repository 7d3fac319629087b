-- Arm-level sufficient statistics kept up to date by the recompute fold, so that a recompute
-- costs what the new events cost: the fold turns each batch of new events into deltas of the
-- per-unit totals (0003) and of these per-arm sums; reading a snapshot then reads a handful of
-- rows per experiment instead of one row per unit.
CREATE TABLE arm_exposures (
    experiment_id uuid     NOT NULL,
    variant       smallint NOT NULL,
    units         bigint   NOT NULL DEFAULT 0,  -- units whose FIRST exposure was this variant
    events        bigint   NOT NULL DEFAULT 0,  -- exposure events logged with this variant
    PRIMARY KEY (experiment_id, variant)
);

CREATE TABLE arm_metrics (
    experiment_id uuid             NOT NULL,
    variant       smallint         NOT NULL,  -- -1: units never exposed (unattributed)
    metric        text             NOT NULL,
    units         bigint           NOT NULL DEFAULT 0,  -- units with at least one event
    events        bigint           NOT NULL DEFAULT 0,
    sum           double precision NOT NULL DEFAULT 0,  -- Σ unit totals
    sum_sq        double precision NOT NULL DEFAULT 0,  -- Σ unit totals²
    PRIMARY KEY (experiment_id, variant, metric)
);

-- New units per 10-second slot and variant (by first exposure), for the exposures timeline.
CREATE TABLE exposure_timeline (
    experiment_id uuid        NOT NULL,
    slot          timestamptz NOT NULL,
    variant       smallint    NOT NULL,
    units         bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_id, slot, variant)
);

-- Experiments folded before this migration: derive the arm tables from the per-unit tables.
INSERT INTO arm_exposures (experiment_id, variant, units, events)
SELECT experiment_id, variant, count(*), sum(exposures) FROM unit_exposures GROUP BY 1, 2;
INSERT INTO arm_metrics (experiment_id, variant, metric, units, events, sum, sum_sq)
SELECT m.experiment_id, coalesce(e.variant, -1), m.metric, count(*), sum(m.events), sum(m.total),
       sum(m.total * m.total)
FROM unit_metrics m LEFT JOIN unit_exposures e USING (experiment_id, unit_id)
GROUP BY 1, 2, 3;
INSERT INTO exposure_timeline (experiment_id, slot, variant, units)
SELECT experiment_id, date_bin('10 seconds', first_ts, timestamptz '2000-01-01'), variant, count(*)
FROM unit_exposures GROUP BY 1, 2, 3;
