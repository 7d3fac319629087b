-- Client event ids are deduped per experiment AND event type. Until now event_ids (0002) held
-- one namespace per experiment across types, so a metric sent with the event_id of an earlier
-- exposure was taken for a repeat and silently dropped. An id names one event of one type:
-- an exposure and a metric event may share it. A conversion is stored as a metric event, so
-- it is of type metric: a conversion and a metric event with the same id are one event.
--
-- kind: 0 for exposures, 1 for metric events (litmus/db/events.py EXPOSURE_KIND, METRIC_KIND).
-- No default on purpose: a writer of the previous version still running during a rolling
-- upgrade COPYs (experiment_id, event_id) only, and must fail (its flush is refused, its
-- clients retry elsewhere) rather than claim an id for the wrong type, which would store a
-- later retry of that metric twice. Events without a client event_id never touch this table.
-- kind last in the key: the event_id decides nearly every comparison of an insert, and a
-- COPY of claims measured about 10% slower with kind between experiment_id and event_id
-- (and within 3% of the old two-column key with kind last).
CREATE TABLE event_ids_by_kind (
    experiment_id uuid        NOT NULL,
    event_id      text COLLATE "C" NOT NULL,
    kind          smallint    NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_id, event_id, kind)
);

-- Each existing claim goes to the type of the event stored under it. Under the old rule an id
-- stored at most one event, so it is an exposure's or a metric event's; an id whose event is
-- gone (its month's partition dropped) keeps both types, as the old rule kept it. The events
-- tables have no index on event_id, so only hash joins are allowed here: a misestimated
-- nested loop would scan a whole events table once per claim (seen: minutes for 180,000
-- claims and 400,000 events; hash joins take about a second).
SET LOCAL enable_nestloop = off;
SET LOCAL work_mem = '256MB';
INSERT INTO event_ids_by_kind (experiment_id, event_id, kind, received_at)
SELECT c.experiment_id, c.event_id, 0, c.received_at FROM event_ids c
WHERE EXISTS (SELECT 1 FROM exposures e
              WHERE e.experiment_id = c.experiment_id AND e.event_id = c.event_id);
INSERT INTO event_ids_by_kind (experiment_id, event_id, kind, received_at)
SELECT c.experiment_id, c.event_id, 1, c.received_at FROM event_ids c
WHERE EXISTS (SELECT 1 FROM metric_events m
              WHERE m.experiment_id = c.experiment_id AND m.event_id = c.event_id);
INSERT INTO event_ids_by_kind (experiment_id, event_id, kind, received_at)
SELECT c.experiment_id, c.event_id, k.kind, c.received_at
FROM event_ids c CROSS JOIN (VALUES (0::smallint), (1::smallint)) AS k (kind)
WHERE NOT EXISTS (SELECT 1 FROM event_ids_by_kind n
                  WHERE n.experiment_id = c.experiment_id AND n.event_id = c.event_id);

DROP TABLE event_ids;
ALTER TABLE event_ids_by_kind RENAME TO event_ids;
ALTER INDEX event_ids_by_kind_pkey RENAME TO event_ids_pkey;
