"""Event ingestion through the API against a real PostgreSQL: validation, dedupe, durability."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from litmus.app import create_app
from litmus.keys import INGEST
from tests.conftest import ADMIN, CLIENT, experiment_payload, launched, make_settings, wait_registry

EXPOSURE = "/api/v1/events/exposure"
METRIC = "/api/v1/events/metric"
TYPED = "/api/v1/events"


async def post(client: TestClient, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    resp = await client.post(path, data=data, headers={**CLIENT, "Content-Type": "application/json"},
                             **kw)
    return resp.status, await resp.json()


async def count(db: asyncpg.Connection, table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}"))


# -- happy paths -----------------------------------------------------------------------------


async def test_one_exposure_is_stored_before_202(client: TestClient, db: asyncpg.Connection) -> None:
    exp = await launched(client)
    status, body = await post(client, EXPOSURE,
                              {"experiment": "ranker", "unit_id": "u1", "variant": "model_b"})
    assert status == 202, body
    assert body == {"accepted": 1, "exposures": 1, "metrics": 0, "duplicates": 0, "durable": True}
    row = await db.fetchrow("SELECT * FROM exposures")
    assert str(row["experiment_id"]) == exp["id"]
    assert (row["unit_id"], row["variant"]) == ("u1", 1)
    assert row["event_id"].startswith("srv-")
    assert abs((row["ts"] - datetime.now(UTC)).total_seconds()) < 5
    assert row["ingest_xid"] > 0


async def test_experiment_by_id_and_ts_forms(client: TestClient, db: asyncpg.Connection) -> None:
    exp = await launched(client)
    ms = int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp() * 1000)
    events = [
        {"experiment": exp["id"], "unit_id": "a", "variant": "model_a", "ts": "2026-01-02T03:04:05Z"},
        {"experiment": "ranker", "unit_id": "b", "variant": "model_a", "ts": ms},
        {"experiment": "ranker", "unit_id": "c", "variant": "model_a", "ts": "2026-01-02T03:04:05"},
        {"experiment": "ranker", "unit_id": "d", "variant": "model_a",
         "ts": "2026-01-02T05:04:05+02:00"},
    ]
    status, body = await post(client, EXPOSURE, {"events": events})
    assert status == 202, body
    stamps = {r["ts"] for r in await db.fetch("SELECT ts FROM exposures")}
    assert stamps == {datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}


async def test_metric_and_typed_events(client: TestClient, db: asyncpg.Connection) -> None:
    await launched(client)
    status, _ = await post(client, METRIC, {"experiment": "ranker", "unit_id": "u1",
                                            "metric": "latency_ms", "value": 12.5})
    assert status == 202
    status, body = await post(client, TYPED, {"events": [
        {"type": "exposure", "experiment": "ranker", "unit_id": "u1", "variant": "model_c"},
        {"type": "conversion", "experiment": "ranker", "unit_id": "u1"},
        {"type": "conversion", "experiment": "ranker", "unit_id": "u2", "metric": "signup",
         "value": 3, "variant": "model_a"},
        {"type": "metric", "experiment": "ranker", "unit_id": "u1", "metric": "revenue",
         "value": -1.25, "variant": "model_c"},
    ]})
    assert status == 202, body
    assert body == {"accepted": 4, "exposures": 1, "metrics": 3, "duplicates": 0, "durable": True}
    rows = await db.fetch("SELECT unit_id, metric, value, variant FROM metric_events ORDER BY metric")
    assert [tuple(r) for r in rows] == [
        ("u1", "conversion", 1.0, None),
        ("u1", "latency_ms", 12.5, None),
        ("u1", "revenue", -1.25, 2),
        ("u2", "signup", 3.0, 0),
    ]
    assert await db.fetchval("SELECT variant FROM exposures") == 2


async def test_paused_and_stopped_experiments_still_take_late_events(
    client: TestClient, db: asyncpg.Connection
) -> None:
    exp = await launched(client)
    await client.post(f"/api/v1/experiments/{exp['id']}/pause", headers=ADMIN)
    await wait_registry(client, "ranker", "paused")
    status, _ = await post(client, EXPOSURE, {"experiment": "ranker", "unit_id": "u1", "variant": "model_a"})
    assert status == 202
    await client.post(f"/api/v1/experiments/{exp['id']}/stop", headers=ADMIN)
    await wait_registry(client, "ranker", "stopped")
    status, _ = await post(client, EXPOSURE, {"experiment": "ranker", "unit_id": "u2", "variant": "model_b"})
    assert status == 202
    status, _ = await post(client, "/api/v1/events/metric",
                           {"experiment": "ranker", "unit_id": "u2", "metric": "revenue", "value": 1.5})
    assert status == 202
    assert await count(db, "exposures") == 2 and await count(db, "metric_events") == 1


async def test_wait_false_answers_at_once_and_stores_soon(client: TestClient, db: asyncpg.Connection) -> None:
    await launched(client)
    status, body = await post(client, EXPOSURE + "?wait=false",
                              {"experiment": "ranker", "unit_id": "u1", "variant": "model_a"})
    assert status == 202 and body["durable"] is False
    deadline = time.monotonic() + 15
    while await count(db, "exposures") != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    status, body = await post(client, EXPOSURE + "?wait=maybe",
                              {"experiment": "ranker", "unit_id": "u1", "variant": "model_a"})
    assert status == 400 and "wait" in body["error"]["message"]


async def test_client_token_may_send_events_and_anonymous_may_not(client: TestClient) -> None:
    await launched(client)
    resp = await client.post(EXPOSURE, json={"experiment": "ranker", "unit_id": "u", "variant": "model_a"})
    assert resp.status == 401
    resp = await client.post(EXPOSURE, json={"experiment": "ranker", "unit_id": "u", "variant": "model_a"},
                             headers=ADMIN)
    assert resp.status == 202


# -- all or nothing, and each validation rule --------------------------------------------------


async def test_batch_with_bad_events_stores_nothing_and_names_each(
    client: TestClient, db: asyncpg.Connection
) -> None:
    await launched(client)
    good = {"experiment": "ranker", "unit_id": "u", "variant": "model_a"}
    events = [good, {**good, "variant": "model_z"}, good, {**good, "experiment": "nope"},
              {**good, "unit_id": ""}]
    status, body = await post(client, EXPOSURE, {"events": events})
    assert status == 422
    err = body["error"]
    assert err["code"] == "validation_error"
    assert err["invalid_events"] == 3
    assert set(err["fields"]) == {"events[1].variant", "events[3].experiment", "events[4].unit_id"}
    assert "model_z" in err["fields"]["events[1].variant"]
    assert "model_a, model_b, model_c" in err["fields"]["events[1].variant"]
    assert "unknown experiment 'nope'" in err["fields"]["events[3].experiment"]
    assert "3 of 5 events are invalid" in err["message"]
    assert await count(db, "exposures") == 0


async def test_draft_experiment_is_refused_with_its_own_message(client: TestClient) -> None:
    resp = await client.post("/api/v1/experiments", json=experiment_payload(key="drafty"), headers=ADMIN)
    assert resp.status == 201
    await wait_registry(client, "drafty", "draft")
    status, body = await post(client, EXPOSURE, {"experiment": "drafty", "unit_id": "u", "variant": "model_a"})
    assert status == 422
    assert "is a draft" in body["error"]["fields"]["experiment"]


NOW_MS = int(time.time() * 1000)
WINDOW = "accepted times are 2000-01-01T00:00:00Z to 24 hours after the server's clock"


@pytest.mark.parametrize(
    ("path", "event", "field", "fragment"),
    [
        (EXPOSURE, {"unit_id": "u", "variant": "model_a"}, "experiment", "field required"),
        (EXPOSURE, {"experiment": 7, "unit_id": "u", "variant": "model_a"}, "experiment", "key or id"),
        (EXPOSURE, {"experiment": "ranker", "variant": "model_a"}, "unit_id", "field required"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": 12, "variant": "model_a"}, "unit_id", "string"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "x" * 257, "variant": "model_a"}, "unit_id",
         "at most 256"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u"}, "variant", "field required"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": 1}, "variant", "variant key"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a", "colour": 1},
         "colour", "unknown field"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a", "ts": "yesterday"},
         "ts", "ISO-8601"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a",
                    "ts": NOW_MS + 2 * 86_400_000}, "ts", "more than a day in the future"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a",
                    "ts": NOW_MS // 1000}, "ts", "looks like seconds"),
        # One window for both forms of ts, named in the message.
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a",
                    "ts": "0001-01-01T00:00:00Z"}, "ts", WINDOW),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a",
                    "ts": "1999-12-31T23:59:59.999Z"}, "ts", "before 2000-01-01T00:00:00Z"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a",
                    "ts": 946_684_799_999}, "ts", WINDOW),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a",
                    "ts": NOW_MS + 2 * 86_400_000}, "ts", WINDOW),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a",
                    "ts": str(NOW_MS)}, "ts", "epoch milliseconds as a JSON number"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a", "ts": True},
         "ts", "ISO-8601"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a", "event_id": 5},
         "event_id", "non-empty string"),
        (EXPOSURE, {"experiment": "ranker", "unit_id": "u", "variant": "model_a",
                    "event_id": "e" * 129}, "event_id", "at most 128"),
        (METRIC, {"experiment": "ranker", "unit_id": "u", "value": 1}, "metric", "field required"),
        (METRIC, {"experiment": "ranker", "unit_id": "u", "metric": "Bad Name", "value": 1},
         "metric", "metric name"),
        (METRIC, {"experiment": "ranker", "unit_id": "u", "metric": "m"}, "value", "field required"),
        (METRIC, {"experiment": "ranker", "unit_id": "u", "metric": "m", "value": "3"},
         "value", "must be a number"),
        (METRIC, {"experiment": "ranker", "unit_id": "u", "metric": "m", "value": "0.5"},
         "value", "must be a number"),
        (METRIC, {"experiment": "ranker", "unit_id": "u", "metric": "m", "value": True},
         "value", "must be a number"),
        (METRIC, {"experiment": "ranker", "unit_id": "u", "metric": "m", "value": 1,
                  "variant": "model_q"}, "variant", "unknown variant"),
        (TYPED, {"experiment": "ranker", "unit_id": "u"}, "type", "field required"),
        (TYPED, {"type": "click", "experiment": "ranker", "unit_id": "u"}, "type", "one of"),
        (TYPED, {"type": "exposure", "experiment": "ranker", "unit_id": "u", "variant": "model_a",
                 "value": 1}, "value", "unknown field"),
    ],
)
async def test_each_rule_has_its_own_message(
    client: TestClient, db: asyncpg.Connection, path: str, event: dict[str, Any], field: str,
    fragment: str,
) -> None:
    await launched(client)
    status, body = await post(client, path, event)
    assert status == 422, body
    assert fragment in body["error"]["fields"][field], body
    status, body = await post(client, path, {"events": [event]})
    assert status == 422
    assert fragment in body["error"]["fields"][f"events[0].{field}"], body
    assert await count(db, "exposures") + await count(db, "metric_events") == 0


async def test_malformed_bodies(client: TestClient) -> None:
    await launched(client)
    status, body = await post(client, EXPOSURE, b'{"experiment": "ranker",')
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = await post(client, EXPOSURE, b"")
    assert status == 400 and "empty" in body["error"]["message"]
    status, body = await post(client, EXPOSURE, [1, 2])
    assert status == 422 and body["error"]["fields"] == {"body": "not an object"}
    status, body = await post(client, EXPOSURE, {"events": {}})
    assert status == 422 and body["error"]["fields"] == {"events": "not a list"}
    status, body = await post(client, EXPOSURE, {"events": []})
    assert status == 422 and "empty" in body["error"]["message"]
    status, body = await post(client, EXPOSURE, {"events": [3]})
    assert status == 422 and body["error"]["fields"] == {"events[0]": "must be an event object"}
    status, body = await post(client, EXPOSURE, {"events": [], "unit_id": "u"})
    assert status == 422 and body["error"]["fields"] == {"unit_id": "unknown field"}


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
async def test_non_finite_values_get_their_own_error(client: TestClient, literal: bytes) -> None:
    await launched(client)
    raw = b'{"experiment": "ranker", "unit_id": "u", "metric": "m", "value": ' + literal + b"}"
    status, body = await post(client, METRIC, raw)
    assert status == 422
    assert "finite" in body["error"]["message"]


async def test_more_than_10000_events_is_413(client: TestClient, db: asyncpg.Connection) -> None:
    await launched(client)
    ev = {"experiment": "ranker", "unit_id": "u", "variant": "model_a"}
    status, body = await post(client, EXPOSURE, {"events": [ev] * 10_001})
    assert status == 413
    assert "at most 10000 events" in body["error"]["message"]
    status, body = await post(client, EXPOSURE, {"events": [ev] * 10_000})
    assert status == 202 and body["accepted"] == 10_000
    assert await count(db, "exposures") == 10_000


# -- dedupe -----------------------------------------------------------------------------------


async def test_retried_batches_count_once(client: TestClient, db: asyncpg.Connection) -> None:
    await launched(client)
    batch = {"events": [
        {"type": "exposure", "experiment": "ranker", "unit_id": f"u{i}", "variant": "model_a",
         "event_id": f"exp-{i}"} for i in range(50)
    ] + [
        {"type": "conversion", "experiment": "ranker", "unit_id": f"u{i}", "event_id": f"conv-{i}"}
        for i in range(20)
    ]}
    answers = [await post(client, TYPED, batch) for _ in range(3)]
    assert answers[0] == (202, {"accepted": 70, "exposures": 50, "metrics": 20, "duplicates": 0,
                                "durable": True})
    # A retry is acknowledged, and says that nothing of it was new.
    for status, body in answers[1:]:
        assert (status, body) == (202, {"accepted": 0, "exposures": 0, "metrics": 0,
                                        "duplicates": 70, "durable": True})
    # The same retried in parallel: the unique claim serialises them.
    results = await asyncio.gather(*(post(client, TYPED, batch) for _ in range(5)))
    assert all(s == 202 and b["accepted"] == 0 and b["duplicates"] == 70 for s, b in results)
    assert await count(db, "exposures") == 50
    assert await count(db, "metric_events") == 20
    assert await count(db, "event_ids") == 70
    ingest = client.app[INGEST]
    assert ingest.stats.duplicates == 70 * 7


async def test_parallel_first_deliveries_are_counted_once_across_answers(
    client: TestClient, db: asyncpg.Connection
) -> None:
    """The same new batch sent six times at once: whether the copies meet in one group commit
    or in two writers' transactions, exactly one answer counts each event as accepted."""
    await launched(client)
    batch = {"events": [
        {"type": "exposure", "experiment": "ranker", "unit_id": f"u{i}", "variant": "model_b",
         "event_id": f"p-{i}"} for i in range(40)
    ] + [
        {"type": "metric", "experiment": "ranker", "unit_id": f"u{i}", "metric": "revenue",
         "value": 1.5, "event_id": f"p-{i}"} for i in range(30)
    ]}
    results = await asyncio.gather(*(post(client, TYPED, batch) for _ in range(6)))
    assert all(s == 202 for s, _ in results), results
    assert sum(b["exposures"] for _, b in results) == 40
    assert sum(b["metrics"] for _, b in results) == 30
    assert sum(b["duplicates"] for _, b in results) == 70 * 5
    assert all(b["accepted"] + b["duplicates"] == 70 for _, b in results)
    assert await count(db, "exposures") == 40
    assert await count(db, "metric_events") == 30


async def test_an_exposure_and_a_metric_may_share_an_event_id(
    client: TestClient, db: asyncpg.Connection
) -> None:
    """The issue's case: the metric was answered `202 {"metrics": 1}` and silently dropped."""
    await launched(client)
    status, body = await post(client, EXPOSURE, {"experiment": "ranker", "unit_id": "u",
                                                 "variant": "model_a", "event_id": "order-7"})
    assert (status, body["exposures"], body["duplicates"]) == (202, 1, 0)
    status, body = await post(client, METRIC, {"experiment": "ranker", "unit_id": "u",
                                               "metric": "revenue", "value": 9.5,
                                               "event_id": "order-7"})
    assert (status, body) == (202, {"accepted": 1, "exposures": 0, "metrics": 1,
                                    "duplicates": 0, "durable": True})
    assert await db.fetchval("SELECT value FROM metric_events WHERE event_id = 'order-7'") == 9.5
    assert await count(db, "exposures") == 1
    # Each type is still deduped in itself.
    for path, ev in ((EXPOSURE, {"variant": "model_a"}),
                     (METRIC, {"metric": "revenue", "value": 9.5})):
        status, body = await post(client, path, {"experiment": "ranker", "unit_id": "u",
                                                 "event_id": "order-7", **ev})
        assert (status, body["accepted"], body["duplicates"]) == (202, 0, 1)
    assert await count(db, "exposures") + await count(db, "metric_events") == 2


async def test_repeats_inside_one_batch_and_across_types(client: TestClient, db: asyncpg.Connection) -> None:
    await launched(client)
    ev = {"type": "exposure", "experiment": "ranker", "unit_id": "u", "variant": "model_a",
          "event_id": "same"}
    conv = {"type": "conversion", "experiment": "ranker", "unit_id": "u", "event_id": "same"}
    # A conversion is a metric event: with a metric's event_id it is that metric's repeat.
    metric = {"type": "metric", "experiment": "ranker", "unit_id": "u", "metric": "signup",
              "value": 2, "event_id": "same"}
    status, body = await post(client, TYPED, {"events": [ev, ev, conv, metric]})
    assert (status, body) == (202, {"accepted": 2, "exposures": 1, "metrics": 1,
                                    "duplicates": 2, "durable": True})
    assert await count(db, "exposures") == 1
    assert [tuple(r) for r in await db.fetch("SELECT metric, value FROM metric_events")] == [
        ("conversion", 1.0)]
    # A retry without ts gets a new server time: the event_id still dedupes it.
    status, body = await post(client, TYPED, {"events": [ev]})
    assert (status, body["accepted"], body["duplicates"]) == (202, 0, 1)
    assert await count(db, "exposures") == 1
    # Without waiting, the answer counts the repeats within the request (the earlier ones
    # are found when written).
    status, body = await post(client, TYPED + "?wait=false", {"events": [conv, conv]})
    assert (status, body) == (202, {"accepted": 1, "exposures": 0, "metrics": 1,
                                    "duplicates": 1, "durable": False})
    # Ids are per experiment: the same id in another experiment is another event.
    await launched(client, key="other")
    status, _ = await post(client, TYPED, {"events": [{**ev, "experiment": "other"}]})
    assert status == 202
    assert await count(db, "exposures") == 2
    assert await count(db, "metric_events") == 1


async def test_events_without_event_id_are_never_deduped(client: TestClient, db: asyncpg.Connection) -> None:
    await launched(client)
    ev = {"experiment": "ranker", "unit_id": "u", "variant": "model_a", "ts": "2026-01-01T00:00:00Z"}
    for _ in range(3):
        assert (await post(client, EXPOSURE, {"events": [ev, ev]}))[0] == 202
    assert await count(db, "exposures") == 6
    assert await count(db, "event_ids") == 0


# -- partitions -------------------------------------------------------------------------------


async def test_rows_land_in_monthly_partitions_and_old_ones_in_default(
    client: TestClient, db: asyncpg.Connection
) -> None:
    await launched(client)
    now = datetime.now(UTC)
    events = [
        {"experiment": "ranker", "unit_id": "new", "variant": "model_a", "ts": now.isoformat()},
        {"experiment": "ranker", "unit_id": "old", "variant": "model_a", "ts": "2001-05-01T00:00:00Z"},
    ]
    assert (await post(client, EXPOSURE, {"events": events}))[0] == 202
    parts = dict(await db.fetch("SELECT unit_id, tableoid::regclass::text FROM exposures"))
    assert parts["new"] == f"exposures_y{now:%Y}m{now:%m}"
    assert parts["old"] == "exposures_default"
    # Creating that month later moves its rows out of the default partition.
    await db.execute("SELECT litmus_ensure_event_partitions(400, 0)")
    parts = dict(await db.fetch("SELECT unit_id, tableoid::regclass::text FROM exposures"))
    assert parts["old"] == "exposures_y2001m05"


async def _settled_watermark(db: asyncpg.Connection, lo: int, expected: int) -> int:
    """The first watermark past `expected` new rows: other transactions in the cluster (the
    app's own recompute fold, say) hold the snapshot xmin back until they end."""
    got = -1
    for _ in range(200):
        hi = int(await db.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
        got = await db.fetchval(
            "SELECT count(*) FROM exposures WHERE ingest_xid >= $1 AND ingest_xid < $2", lo, hi)
        assert got <= expected  # a range below the watermark never holds rows it should not
        if got == expected:
            return hi
        await asyncio.sleep(0.05)
    raise AssertionError(f"watermark range held {got} rows, expected {expected}")


async def test_incremental_reads_by_watermark(client: TestClient, db: asyncpg.Connection) -> None:
    await launched(client)
    ev = {"experiment": "ranker", "unit_id": "u", "variant": "model_a"}
    lo = int(await db.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
    await post(client, EXPOSURE, {"events": [ev] * 3})
    hi = await _settled_watermark(db, lo, 3)
    await post(client, EXPOSURE, {"events": [ev] * 2})
    await _settled_watermark(db, hi, 2)


# -- backpressure, outage, drain (in process) -------------------------------------------------


async def _app(aiohttp_client: Any, database_url: str, tmp_path: Path, **over: Any) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(make_settings(database_url, tmp_path, **over)))
    return client


async def test_full_buffer_answers_503_at_once(
    aiohttp_client: Any, database_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    client = await _app(aiohttp_client, database_url, tmp_path, ingest_buffer_events=300,
                        ingest_wait_s=30.0)
    await launched(client)
    ev = {"experiment": "ranker", "unit_id": "u", "variant": "model_a"}
    locker = await asyncpg.connect(database_url)
    tx = locker.transaction()
    await tx.start()
    await locker.execute("LOCK TABLE exposures IN ACCESS EXCLUSIVE MODE")
    try:
        for _ in range(3):  # 300 events: the buffer is now full, the writer stuck on the lock
            assert (await post(client, EXPOSURE + "?wait=false", {"events": [ev] * 100}))[0] == 202
        refused, timed_out = client.app[INGEST].stats.refused_full, client.app[INGEST].stats.timed_out
        resp = await client.post(EXPOSURE, json=ev, headers=CLIENT)
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert "buffer is full" in (await resp.json())["error"]["message"]
        # Refused for the full buffer before waiting, not after the 30 s wait for the database.
        assert client.app[INGEST].stats.refused_full == refused + 1
        assert client.app[INGEST].stats.timed_out == timed_out
    finally:
        await tx.rollback()
        await locker.close()
    ingest = client.app[INGEST]
    deadline = time.monotonic() + 10
    while ingest.buffered_events:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert await count(db, "exposures") == 300
    assert (await post(client, EXPOSURE, ev))[0] == 202


async def test_slow_database_503_after_wait_and_nothing_of_it_stored(
    aiohttp_client: Any, database_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    client = await _app(aiohttp_client, database_url, tmp_path, ingest_wait_s=0.5)
    await launched(client)
    locker = await asyncpg.connect(database_url)
    tx = locker.transaction()
    await tx.start()
    await locker.execute("LOCK TABLE exposures IN ACCESS EXCLUSIVE MODE")
    try:
        t0 = time.monotonic()
        resp = await client.post(EXPOSURE, json={"experiment": "ranker", "unit_id": "late",
                                                 "variant": "model_a"}, headers=CLIENT)
        waited = time.monotonic() - t0
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1
        assert 0.4 < waited < 3.0
    finally:
        await tx.rollback()
        await locker.close()
    assert (await post(client, EXPOSURE, {"experiment": "ranker", "unit_id": "after",
                                          "variant": "model_a"}))[0] == 202
    await asyncio.sleep(0.3)
    units = {r["unit_id"] for r in await db.fetch("SELECT unit_id FROM exposures")}
    assert units == {"after"}, "a 503'd event must not be stored"


async def test_close_drains_everything_accepted(
    aiohttp_client: Any, database_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    client = await _app(aiohttp_client, database_url, tmp_path, ingest_flush_age_ms=1000.0,
                        ingest_flush_events=100_000)
    await launched(client)
    ev = {"experiment": "ranker", "unit_id": "u", "variant": "model_a"}
    for _ in range(5):
        assert (await post(client, EXPOSURE + "?wait=false", {"events": [ev] * 1000}))[0] == 202
    ingest = client.app[INGEST]
    assert ingest.buffered_events == 5000
    await client.close()  # runs the cleanup contexts: the ingest drain
    assert await count(db, "exposures") == 5000
    assert not ingest.accepting


async def test_assign_log_exposure_feeds_the_same_path(client: TestClient, db: asyncpg.Connection) -> None:
    exp = await launched(client)
    resp = await client.post("/api/v1/assign", json={"experiment": "ranker", "unit_id": "u42",
                                                      "log_exposure": True}, headers=CLIENT)
    assert resp.status == 200
    answer = await resp.json()
    assert answer["variant"] is not None, answer
    deadline = time.monotonic() + 15
    while await count(db, "exposures") == 0:
        assert time.monotonic() < deadline, (answer, client.app[INGEST].stats)
        await asyncio.sleep(0.02)
    row = await db.fetchrow("SELECT * FROM exposures")
    assert row["experiment_id"] == uuid.UUID(exp["id"])
    assert row["unit_id"] == "u42"
    assert row["variant"] == ["model_a", "model_b", "model_c"].index(answer["variant"])


async def test_both_forms_of_ts_share_one_window(client: TestClient, db: asyncpg.Connection) -> None:
    """The window's first instant is accepted as an ISO time and as epoch milliseconds; a
    millisecond before it is refused in both forms (ISO used to take year 0001)."""
    await launched(client)
    ev = {"experiment": "ranker", "unit_id": "u", "variant": "model_a"}
    for first in ("2000-01-01T00:00:00Z", "2000-01-01T01:00:00+01:00", 946_684_800_000):
        status, body = await post(client, EXPOSURE, {**ev, "ts": first})
        assert status == 202, (first, body)
    for before in ("1999-12-31T23:59:59.999Z", "2000-01-01T00:00:00+01:00", 946_684_799_999):
        status, body = await post(client, EXPOSURE, {**ev, "ts": before})
        assert status == 422, before
        assert WINDOW in body["error"]["fields"]["ts"]
    stamps = {r["ts"] for r in await db.fetch("SELECT ts FROM exposures")}
    assert stamps == {datetime(2000, 1, 1, tzinfo=UTC)}


async def test_future_limit_is_one_day(client: TestClient) -> None:
    await launched(client)
    soon = (datetime.now(UTC) + timedelta(hours=23)).isoformat()
    status, _ = await post(client, EXPOSURE, {"experiment": "ranker", "unit_id": "u",
                                              "variant": "model_a", "ts": soon})
    assert status == 202
