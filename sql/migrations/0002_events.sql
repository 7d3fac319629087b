-- Events: exposures and metric events (conversions are metric events with value 1).
--
-- Layout, chosen for the results queries and for cheap retention:
--  * Both tables are PARTITION BY RANGE (ts), one partition per calendar month (UTC), created
--    ahead by litmus_ensure_event_partitions() (called by the migration, and by each
--    process's ingest writer at its first flush and every 6 hours), plus a DEFAULT partition
--    for anything outside the created months. Dropping a month of history is `DROP TABLE exposures_yYYYYmMM`.
--  * experiment_id is the experiment's uuid; variant is the variant's position in the
--    experiment's variant list (variant keys and count are frozen after launch, so the
--    position is stable): a smallint instead of a repeated text key.
--  * ingest_xid is the id of the transaction that stored the row (pg_current_xact_id(), the
--    64-bit xid8 that never wraps, kept as bigint because xid8 has no BRIN support). It lets
--    a reader consume "everything committed since my last watermark" without ever skipping
--    a row that a slower transaction commits later:
--        hi := pg_snapshot_xmin(pg_current_snapshot())::text::bigint  -- every xid < hi ended
--        read rows WHERE ingest_xid >= lo AND ingest_xid < hi; then lo := hi
--    (a plain sequence cannot do this: sequence values are handed out in one order and
--    committed in another). A BRIN index makes that range scan cheap: xids grow with time.
--  * Dedupe happens at write time through event_ids (below): a row in these tables is never a
--    repeat of an earlier event_id of the same experiment, so aggregates can simply sum.
--  * text columns use COLLATE "C": byte order, no locale work in comparisons.
--
-- What the results side reads (README, "How it works, briefly"): a unit's variant is the variant of its FIRST
-- exposure (min ts, ties broken by ingest_xid); metric events without a variant belong to
-- that first exposure's variant; metric events of units never exposed are "unattributed".

CREATE TABLE exposures (
    experiment_id uuid        NOT NULL,
    unit_id       text COLLATE "C" NOT NULL,
    variant       smallint    NOT NULL,
    ts            timestamptz NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    ingest_xid    bigint      NOT NULL DEFAULT pg_current_xact_id()::text::bigint
) PARTITION BY RANGE (ts);

CREATE TABLE metric_events (
    experiment_id uuid             NOT NULL,
    unit_id       text COLLATE "C" NOT NULL,
    metric        text COLLATE "C" NOT NULL,
    value         double precision NOT NULL,
    variant       smallint,        -- NULL: attribute to the unit's first exposure
    ts            timestamptz      NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    received_at   timestamptz      NOT NULL DEFAULT now(),
    ingest_xid    bigint           NOT NULL DEFAULT pg_current_xact_id()::text::bigint
) PARTITION BY RANGE (ts);

CREATE TABLE exposures_default PARTITION OF exposures DEFAULT;
CREATE TABLE metric_events_default PARTITION OF metric_events DEFAULT;

-- Indexes: the raw tables are append-only logs that the results side reads by ingest_xid
-- range (new rows since its watermark) into per-unit tables (unit_exposures, unit_metrics in
-- 0003), which hold the per-unit keys. So only BRIN indexes here, nearly free to maintain:
-- btree indexes on (experiment_id, unit_id) and (experiment_id, ts) cut the COPY throughput
-- 2.4-3.3x (docs/PERFORMANCE.md, "Ingestion") and no results query uses them. For ad-hoc
-- digging into one unit, create such an index on the one partition you look at.
CREATE INDEX exposures_xid_brin ON exposures USING brin (ingest_xid);
CREATE INDEX exposures_ts_brin ON exposures USING brin (ts);
CREATE INDEX metric_events_xid_brin ON metric_events USING brin (ingest_xid);
CREATE INDEX metric_events_ts_brin ON metric_events USING brin (ts);

-- Write-time dedupe. A unique index on a partitioned table must contain the partition key
-- (ts), and a retry of an event sent without `ts` gets a new server time, so the events
-- tables cannot enforce "one row per event_id" themselves. This unpartitioned table does:
-- each flush COPYs the client-supplied event_ids of its events here in the same transaction
-- as the events. A repeat hits the primary key; the writer then redoes that flush through
-- staging tables, claiming ids with ON CONFLICT DO NOTHING and storing only the events whose
-- id it claimed (sql/events.sql, stage_flush). Concurrent writers (several processes)
-- serialise on the primary key, so a retry racing its original is still stored once. Ids
-- the server makes (events sent without event_id) are unique by construction and skip this
-- table. One namespace per experiment across event types. Rows here can be deleted once
-- retries of those events can no longer arrive (e.g. with the partitions they belong to).
CREATE TABLE event_ids (
    experiment_id uuid        NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_id, event_id)
);

-- Create the monthly partitions of both tables from `months_back` before the current month
-- to `months_ahead` after it. Rows already sitting in a DEFAULT partition for a month being
-- created are moved into the new partition, so creation never fails on them.
CREATE FUNCTION litmus_ensure_event_partitions(months_back int DEFAULT 1, months_ahead int DEFAULT 3)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    parent text;
    lo timestamptz;
    hi timestamptz;
    part text;
    created int := 0;
    i int;
BEGIN
    -- One creator at a time across every process.
    PERFORM pg_advisory_xact_lock(hashtext('litmus_event_partitions'));
    FOREACH parent IN ARRAY ARRAY['exposures', 'metric_events'] LOOP
        FOR i IN -months_back..months_ahead LOOP
            lo := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                  + make_interval(months => i);
            hi := lo + interval '1 month';
            part := format('%s_y%sm%s', parent, to_char(lo AT TIME ZONE 'UTC', 'YYYY'),
                           to_char(lo AT TIME ZONE 'UTC', 'MM'));
            IF to_regclass(part) IS NOT NULL THEN
                CONTINUE;
            END IF;
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
            EXECUTE format('WITH moved AS (DELETE FROM %I WHERE ts >= %L AND ts < %L RETURNING *) '
                           'INSERT INTO %I SELECT * FROM moved', parent || '_default', lo, hi, part);
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (ts >= %L AND ts < %L)',
                           part, part || '_range', lo, hi);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           parent, part, lo, hi);
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_range');
            created := created + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;

SELECT litmus_ensure_event_partitions();
