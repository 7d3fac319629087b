"""The results fold's durable side: the checkpoint, a new leader's load and replay, a deposed
leader, raw events dropped after a checkpoint, and a fold that fails half-way. Every check recounts the per-arm tables from the raw events (or from the known inputs when the
raw events are gone)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from litmus import metrics
from litmus.app import create_app
from litmus.keys import DSN, POOL, RECOMPUTE
from litmus.services.recompute import Recompute
from litmus.settings import Settings
from tests.conftest import ADMIN, launched
from tests.integration.test_results import assert_arm_tables_match_state, insert, results

RECOUNT = """
WITH first AS (
    SELECT DISTINCT ON (unit_id) unit_id, variant FROM exposures WHERE experiment_id = $1
    ORDER BY unit_id, ts, hashtextextended(event_id, 0)
), tot AS (
    SELECT unit_id, metric, sum(value) AS total, count(*) AS n FROM metric_events
    WHERE experiment_id = $1 GROUP BY 1, 2
)
SELECT coalesce(f.variant, -1) AS variant, t.metric, count(*) AS units, sum(t.n) AS events,
       sum(t.total) AS sum, sum(t.total * t.total) AS sum_sq, count(*) FILTER (WHERE t.total > 0)
       AS positive
FROM tot t LEFT JOIN first f USING (unit_id) GROUP BY 1, 2
"""


@pytest.fixture
async def app_client(settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(replace(settings, recompute_interval_s=3600)))


async def assert_matches_raw_events(db: asyncpg.Connection, exp_id: str) -> None:
    """The per-arm tables equal a from-scratch recount of the raw events in SQL."""
    uid = uuid.UUID(exp_id)
    want_units = {r["variant"]: r["n"] for r in await db.fetch(
        "SELECT variant, count(*) AS n FROM (SELECT DISTINCT ON (unit_id) variant FROM exposures "
        "WHERE experiment_id = $1 ORDER BY unit_id, ts, hashtextextended(event_id, 0)) f "
        "GROUP BY 1", uid)}
    units = {r["variant"]: r["units"] for r in await db.fetch(
        "SELECT variant, units FROM arm_exposures WHERE experiment_id = $1", uid) if r["units"]}
    assert units == want_units
    want = {(r["variant"], r["metric"]): r for r in await db.fetch(RECOUNT, uid)}
    got = {(r["variant"], r["metric"]): r for r in await db.fetch(
        "SELECT * FROM arm_metrics WHERE experiment_id = $1", uid) if r["units"] or r["events"]}
    assert got.keys() == want.keys()
    for k, w in want.items():
        assert (got[k]["units"], got[k]["events"], got[k]["positive"]) == (
            w["units"], w["events"], w["positive"]), k
        assert got[k]["sum"] == pytest.approx(w["sum"], rel=1e-9, abs=1e-9), k
        assert got[k]["sum_sq"] == pytest.approx(w["sum_sq"], rel=1e-9, abs=1e-9), k


async def checkpoint(app_client: TestClient, rec: Recompute) -> int:
    """Write `rec`'s checkpoint now (as its fold does every 5 minutes); returns bytes."""
    async with app_client.app[POOL].acquire() as conn:
        return await rec.folder.checkpoint(conn)


def new_leader(app_client: TestClient) -> Recompute:
    """Another process's recompute (nothing in memory), driven by direct tick() calls."""
    return Recompute(app_client.app[POOL], app_client.app[DSN], None, 3600)  # type: ignore[arg-type]


async def folded_rounds(app_client: TestClient, db: asyncpg.Connection, exp_id: str,
                        rng: np.random.Generator, rounds: int) -> Recompute:
    """`rounds` rounds of events, each folded by the app's recompute; returns it."""
    rec = app_client.app[RECOMPUTE]
    now = datetime.now(UTC)
    for _ in range(rounds):
        await a_round(db, exp_id, rng, now)
        await rec.tick()
    return rec


async def a_round(db: asyncpg.Connection, exp_id: str, rng: np.random.Generator,
                  now: datetime) -> int:
    """Exposures (some late and earlier, so units move arm) and two metrics; returns events."""
    exps = [(f"u{rng.integers(0, 400)}", int(rng.integers(0, 3)),
             now - timedelta(seconds=float(rng.integers(0, 7200)))) for _ in range(300)]
    mets = [(f"u{rng.integers(0, 450)}", str(rng.choice(["conversion", "revenue"])),
             float(rng.gamma(2.0, 3.0)), None, now) for _ in range(400)]
    await insert(db, exp_id, exps, mets)
    return len(exps) + len(mets)


async def test_a_new_leader_loads_the_checkpoint_and_replays_only_what_followed(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """Two rounds folded and checkpointed, a third folded only: a new leader loads the
    checkpoint and replays exactly the third round's events (no deltas: the per-arm tables
    already hold them), then folds a fourth. The events of the first two rounds are deleted
    before it takes over (retention after a checkpoint), and the tables still equal the
    definitions."""
    exp = await launched(app_client)
    now = datetime.now(UTC)
    rng = np.random.default_rng(21)
    rec = await folded_rounds(app_client, db, exp["id"], rng, 2)
    assert await checkpoint(app_client, rec) > 0
    cp = await db.fetchval("SELECT checkpoint_xid FROM recompute_watermark")
    assert cp == rec.folder.xid
    third = await a_round(db, exp["id"], rng, now)
    await rec.tick()
    await assert_matches_raw_events(db, exp["id"])
    before = await results(app_client, exp["id"])
    old_state = rec.folder.states
    await rec.stop()  # this leader goes away
    # Retention: the events the checkpoint covers are dropped.
    for table in ("exposures", "metric_events"):
        await db.execute(f"DELETE FROM {table} WHERE ingest_xid < $1", cp)
    other = new_leader(app_client)
    await other.tick()
    assert other.last_fold is not None and other.last_fold.replayed == third
    assert other.last_fold.events == 0
    after = await results(app_client, exp["id"])
    assert after["exposures"] == before["exposures"]
    assert after["metrics"] == before["metrics"]
    assert other.folder.states is not None and old_state is not None
    loaded = other.folder.states[exp["id"]].arrays()
    for name, arr in old_state[exp["id"]].arrays().items():
        assert np.array_equal(loaded[name], arr), name
    await a_round(db, exp["id"], rng, now)
    await other.tick()
    await assert_arm_tables_match_state(db, other.folder, exp["id"])
    await other.stop()


async def test_a_deposed_leader_reloads_before_it_folds_again(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """Leader A folds, loses the lock without knowing, B folds; when A folds next its state is
    behind the watermark: it loads again (here: replays every event, there is no checkpoint)
    instead of adding deltas computed from stale per-unit totals."""
    exp = await launched(app_client)
    now = datetime.now(UTC)
    rng = np.random.default_rng(22)
    a = app_client.app[RECOMPUTE]
    b = new_leader(app_client)
    for i, leader in enumerate((a, b, a, b)):
        await a_round(db, exp["id"], rng, now)
        await leader.tick()
        assert leader.last_fold is not None
        if i:  # a switch: the other one folded since, so this one replays
            assert leader.last_fold.replayed > 0
        await assert_matches_raw_events(db, exp["id"])
    await b.stop()


async def test_a_fold_that_fails_leaves_nothing_behind(app_client: TestClient,
                                                       db: asyncpg.Connection,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An error after the state took a batch (here: writing the deltas) rolls the fold back and
    throws the in-memory state away; the next fold loads it again and counts every event once."""
    from litmus.db import fold as db_fold

    exp = await launched(app_client)
    now = datetime.now(UTC)
    rng = np.random.default_rng(23)
    rec = app_client.app[RECOMPUTE]
    await a_round(db, exp["id"], rng, now)
    await rec.tick()
    await a_round(db, exp["id"], rng, now)

    async def boom(*_: Any) -> None:
        raise RuntimeError("disk full")

    with monkeypatch.context() as m:
        m.setattr(db_fold, "write_deltas", boom)
        with pytest.raises(RuntimeError):
            await rec.folder.fold(db)
    assert rec.folder.states is None
    await rec.tick()
    await assert_matches_raw_events(db, exp["id"])


async def test_a_fold_that_fails_mid_copy_leaves_its_connection_usable_and_nothing_behind(
        app_client: TestClient, db: asyncpg.Connection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An error while the fold holds a chunk of a COPY (here: folding the metric events) rolls
    the fold back on the same connection at once; the state is thrown away, and the next fold
    on that connection counts every event once."""
    from litmus.core.unitfold import ExperimentUnits
    from litmus.db import fold as db_fold

    monkeypatch.setattr(db_fold, "CHUNK_BYTES", 333)
    exp = await launched(app_client)
    rec = app_client.app[RECOMPUTE]
    await rec.stop()
    await a_round(db, exp["id"], np.random.default_rng(32), datetime.now(UTC))
    fold_metrics = ExperimentUnits.fold_metrics
    calls = 0

    def failing(self: ExperimentUnits, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("out of memory")
        fold_metrics(self, *args)

    watermark = await db.fetchval("SELECT xid_lo FROM recompute_watermark")
    async with app_client.app[POOL].acquire() as conn:
        with monkeypatch.context() as m:
            m.setattr(ExperimentUnits, "fold_metrics", failing)
            with pytest.raises(RuntimeError, match="out of memory"):
                # Far below the pool's command timeout: a rollback waiting on the COPY hangs.
                await asyncio.wait_for(rec.folder.fold(conn), 10)
        assert rec.folder.states is None
        assert await db.fetchval("SELECT xid_lo FROM recompute_watermark") == watermark
        stats = await rec.folder.fold(conn)
    assert stats.events == 700
    await assert_matches_raw_events(db, exp["id"])


async def test_a_copy_reads_on_only_when_the_next_chunk_is_asked_for(
        app_client: TestClient, db: asyncpg.Connection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The events come out of the COPY one chunk at a time: while the fold holds a chunk, the
    next one is not parsed (so about one chunk of events is in memory), and every row comes
    out once across the chunks."""
    from litmus.db import fold as db_fold

    monkeypatch.setattr(db_fold, "CHUNK_BYTES", 333)
    exp = await launched(app_client)
    await app_client.app[RECOMPUTE].stop()
    # Enough rows for PostgreSQL to send them in several network reads, one chunk each.
    await insert(db, exp["id"], [(f"u{i}", i % 3, datetime.now(UTC)) for i in range(20_000)], [])
    drains = 0
    drain = db_fold._RowReader._drain

    async def counted(self: Any) -> None:
        nonlocal drains
        drains += 1
        await drain(self)

    monkeypatch.setattr(db_fold._RowReader, "_drain", counted)
    sizes, units = [], set()
    async with app_client.app[POOL].acquire() as conn, conn.transaction():
        hi = int(await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
        chunks = db_fold.read_exposures(conn, 0, hi)
        async for rows in chunks:
            seen = drains
            await asyncio.sleep(0.05)  # time enough for a COPY that read on to parse more
            assert drains == seen
            sizes.append(len(rows))
            units.update(rows["unit"].tolist())
    assert len(sizes) > 3 and sum(sizes) == len(units) == 20_000


async def test_a_fold_lets_go_of_each_chunk_before_the_copy_reads_the_next(
        app_client: TestClient, db: asyncpg.Connection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a whole fold (exposures and metric events in many chunks): whenever the COPY
    parses a chunk, no earlier chunk is still referenced, so one chunk of events is in memory
    at a time, as docs/PERFORMANCE.md's fold figures assume."""
    import weakref

    from litmus.db import fold as db_fold

    monkeypatch.setattr(db_fold, "CHUNK_BYTES", 333)
    exp = await launched(app_client)
    rec = app_client.app[RECOMPUTE]
    await rec.stop()
    now = datetime.now(UTC)
    await insert(db, exp["id"], [(f"u{i}", i % 3, now) for i in range(10_000)],
                 [(f"u{i}", "revenue", 1.0, None, now) for i in range(10_000)])
    handed: list[weakref.ref[Any]] = []
    alive_at_parse: list[int] = []
    init, drain = db_fold._RowReader.__init__, db_fold._RowReader._drain

    def recording(self: Any, dtype: Any, on_rows: Any) -> None:
        async def hand(rows: Any) -> None:
            handed.append(weakref.ref(rows))
            await on_rows(rows)
        init(self, dtype, hand)

    async def checked(self: Any) -> None:
        # A worker thread drops its reference to the chunk it folded just after handing back
        # its result, once it gets the GIL: let it.
        time.sleep(0.01)
        alive_at_parse.append(sum(r() is not None for r in handed))
        await drain(self)

    monkeypatch.setattr(db_fold._RowReader, "__init__", recording)
    monkeypatch.setattr(db_fold._RowReader, "_drain", checked)
    await rec.tick()
    assert rec.last_fold is not None and rec.last_fold.events == 20_000
    assert len(handed) > 6 and alive_at_parse and max(alive_at_parse) == 0
    await assert_matches_raw_events(db, exp["id"])


async def test_a_reader_closed_early_leaves_its_connection_ready_at_once(
        app_client: TestClient, db: asyncpg.Connection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fold that stops while it holds a chunk of a COPY the server has finished sending
    (a few rows, sent at once) closes the reader: the connection answers the next statement
    at once, not after the pool's command timeout (cancelling a finished COPY leaves asyncpg
    waiting for an acknowledgement that never comes)."""
    from contextlib import aclosing

    from litmus.db import fold as db_fold

    monkeypatch.setattr(db_fold, "CHUNK_BYTES", 333)
    exp = await launched(app_client)
    await app_client.app[RECOMPUTE].stop()
    await insert(db, exp["id"], [(f"u{i}", i % 3, datetime.now(UTC)) for i in range(40)], [])
    async with app_client.app[POOL].acquire() as conn:
        hi = int(await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
        async with aclosing(db_fold.read_exposures(conn, 0, hi)) as chunks:
            async for rows in chunks:  # handed over from inside the COPY (CHUNK_BYTES)
                assert len(rows) == 40
                await asyncio.sleep(0.2)  # the server has finished by now
                break
        assert await asyncio.wait_for(conn.fetchval("SELECT 1"), 10) == 1


async def test_interleaved_experiments_are_folded_apart(app_client: TestClient,
                                                        db: asyncpg.Connection) -> None:
    """Events of three experiments stored interleaved in the same transactions are split by
    experiment in one fold: each one's tables equal its own recount, with no leaks."""
    exps = [await launched(app_client, key=f"ranker_{i}") for i in range(3)]
    now = datetime.now(UTC)
    rng = np.random.default_rng(24)
    uids = [uuid.UUID(e["id"]) for e in exps]
    for _ in range(2):
        picks = rng.integers(0, 3, 900)
        await db.copy_records_to_table(
            "exposures", columns=["experiment_id", "unit_id", "variant", "ts", "event_id"],
            records=[(uids[p], f"u{rng.integers(0, 200)}", int(rng.integers(0, 3)),
                      now - timedelta(seconds=float(rng.integers(0, 600))), uuid.uuid4().hex)
                     for p in picks])
        await db.copy_records_to_table(
            "metric_events", columns=["experiment_id", "unit_id", "metric", "value", "ts", "event_id"],
            records=[(uids[p], f"u{rng.integers(0, 220)}", "revenue", float(rng.gamma(2.0, 3.0)),
                      now, uuid.uuid4().hex) for p in picks])
        await app_client.app[RECOMPUTE].tick()
    for e in exps:
        await assert_matches_raw_events(db, e["id"])


async def arm_units(db: asyncpg.Connection, exp_id: str) -> dict[int, int]:
    return {r["variant"]: r["units"] for r in await db.fetch(
        "SELECT variant, units FROM arm_exposures WHERE experiment_id = $1 AND units <> 0",
        uuid.UUID(exp_id))}


async def test_the_stop_cut_off_is_decided_once_and_a_replay_keeps_it(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """An exposure dated after the stop (a client clock 10 minutes ahead) folded while the
    experiment ran stays counted: a new leader's replay after the stop must not leave it out,
    or a later move of that unit would take it out of an arm it was never added to in memory.
    Events committed after the stop was seen and dated after it are left out."""
    exp = await launched(app_client)
    now = datetime.now(UTC)
    rec = app_client.app[RECOMPUTE]
    await insert(db, exp["id"], [("w", 0, now - timedelta(hours=1))], [])
    await rec.tick()
    assert await checkpoint(app_client, rec) > 0
    ahead = now + timedelta(minutes=10)
    await insert(db, exp["id"], [("u1", 0, ahead)], [("u1", "revenue", 5.0, None, ahead)])
    await rec.tick()
    resp = await app_client.post(f"/api/v1/experiments/{exp['id']}/stop",
                                 json={"winner": "model_b"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await rec.stop()
    other = new_leader(app_client)
    await other.tick()
    assert other.last_fold is not None and other.last_fold.replayed == 2
    # A late exposure from before the stop moves u1 to model_b with its revenue; an event
    # dated after the stop, committed now, is left out.
    await insert(db, exp["id"], [("u1", 1, now - timedelta(minutes=30)), ("u2", 2, ahead)],
                 [("u1", "revenue", 1.0, None, now - timedelta(minutes=30))])
    await other.tick()
    assert await arm_units(db, exp["id"]) == {0: 1, 1: 1}
    await assert_arm_tables_match_state(db, other.folder, exp["id"])
    snap = await results(app_client, exp["id"])
    assert snap["metrics"]["revenue"]["model_b"]["sum"] == pytest.approx(6.0)
    assert snap["metrics"]["revenue"]["model_b"]["units"] == 1
    await other.stop()


async def test_checkpoints_in_many_parts_and_copy_in_many_chunks(
        app_client: TestClient, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny COPY chunks (rows split across them) and tiny checkpoint parts give the same state:
    a new leader loads exactly the arrays the old one wrote. A checkpoint also records this
    fold version on the watermark (0009's marker)."""
    from litmus.db import fold as db_fold

    monkeypatch.setattr(db_fold, "CHUNK_BYTES", 333)
    monkeypatch.setattr(db_fold, "CHECKPOINT_PART_BYTES", 96)
    exp = await launched(app_client)
    rec = await folded_rounds(app_client, db, exp["id"], np.random.default_rng(25), 2)
    await assert_matches_raw_events(db, exp["id"])
    await checkpoint(app_client, rec)
    assert await db.fetchval("SELECT fold_version FROM recompute_watermark") == 3
    assert await db.fetchval("SELECT max(part) FROM fold_checkpoint") > 10
    assert rec.folder.states is not None
    mine = rec.folder.states[exp["id"]].arrays()
    await rec.stop()
    other = new_leader(app_client)
    await other.tick()
    assert other.folder.states is not None
    loaded = other.folder.states[exp["id"]].arrays()
    assert loaded.keys() == mine.keys()
    for name, arr in mine.items():
        assert loaded[name].dtype == arr.dtype and np.array_equal(loaded[name], arr), name
    await other.stop()


async def test_a_checkpoint_ahead_of_the_watermark_refolds_everything(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """A checkpoint newer than the watermark cannot be the state of the per-arm tables (say,
    the tables were restored from another backup): the next leader folds every event again."""
    exp = await launched(app_client)
    rec = await folded_rounds(app_client, db, exp["id"], np.random.default_rng(26), 1)
    await checkpoint(app_client, rec)
    await rec.stop()
    await db.execute("UPDATE recompute_watermark SET checkpoint_xid = xid_lo + 1000")
    await db.execute("UPDATE arm_exposures SET units = units + 7")  # garbage the refold drops
    other = new_leader(app_client)
    await other.tick()
    assert await db.fetchval("SELECT checkpoint_xid FROM recompute_watermark") is None
    await assert_matches_raw_events(db, exp["id"])
    await other.stop()


async def test_stopped_experiments_leave_memory_and_come_back_for_late_events(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """An experiment stopped more than a day ago is no longer recomputed: its state leaves
    memory at the next checkpoint and a new leader does not load it. A late event dated
    before the stop brings it back from the checkpoint, and the tables stay exact."""
    old, live = await launched(app_client, key="old"), await launched(app_client, key="live")
    now = datetime.now(UTC)
    rng = np.random.default_rng(27)
    rec = app_client.app[RECOMPUTE]
    for e in (old, live):
        await a_round(db, e["id"], rng, now - timedelta(days=3))
    await rec.tick()
    await db.execute("UPDATE experiments SET status = 'stopped', stopped_at = now() - "
                     "interval '2 days' WHERE id = $1", uuid.UUID(old["id"]))
    await checkpoint(app_client, rec)
    assert rec.folder.states is not None
    assert set(rec.folder.states) == {live["id"]} and rec.folder.evicted == {old["id"]}
    await rec.stop()
    other = new_leader(app_client)
    await other.tick()
    assert other.folder.states is not None and set(other.folder.states) == {live["id"]}
    await a_round(db, old["id"], rng, now - timedelta(days=3))
    await a_round(db, live["id"], rng, now)
    await other.tick()
    assert set(other.folder.states) == {old["id"], live["id"]}
    for e in (old, live):
        await assert_matches_raw_events(db, e["id"])
    await other.stop()


async def test_a_failing_checkpoint_does_not_stop_the_results(
        app_client: TestClient, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The fold has committed when its checkpoint runs: a checkpoint error is logged, the
    snapshots are still computed, and the checkpoint is tried again later."""
    from litmus.db import fold as db_fold

    exp = await launched(app_client)
    rec = app_client.app[RECOMPUTE]
    await rec.stop()  # no tick of its own loop in between: this test drives them
    rec.folder.checkpoint_every_s = 0.0

    async def boom(*_: Any) -> int:
        raise RuntimeError("disk full")

    monkeypatch.setattr(db_fold, "write_checkpoint", boom)
    await a_round(db, exp["id"], np.random.default_rng(28), datetime.now(UTC))
    failures = metrics.RECOMPUTE.checkpoint_failures
    with caplog.at_level(logging.ERROR, logger="litmus.recompute"):
        assert exp["id"] in await rec.tick()
    assert "recompute checkpoint failed" in caplog.text
    assert metrics.RECOMPUTE.checkpoint_failures == failures + 1  # on /metrics
    snap = await results(app_client, exp["id"])
    assert snap["exposures"]["total_units"] > 0
    await assert_matches_raw_events(db, exp["id"])
    # Not again on the next tick: it waits before retrying.
    caplog.clear()
    await a_round(db, exp["id"], np.random.default_rng(29), datetime.now(UTC))
    with caplog.at_level(logging.ERROR, logger="litmus.recompute"):
        await rec.tick()
    assert "recompute checkpoint failed" not in caplog.text


async def test_a_late_event_of_an_evicted_experiment_with_a_new_metric_folds(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """One fold holds a late event of an experiment whose state is only in the checkpoint and
    a metric nobody has seen yet: the state comes back while the new metric is still unnamed,
    and the fold goes through (it used to send the placeholder name to PostgreSQL and fail
    on every tick)."""
    rec = app_client.app[RECOMPUTE]
    await rec.stop()
    old, live = await launched(app_client, key="old"), await launched(app_client, key="live")
    now = datetime.now(UTC)
    for e in (old, live):
        await insert(db, e["id"], [("u1", 0, now - timedelta(days=3))],
                     [("u1", "revenue", 1.0, None, now - timedelta(days=3))])
    await rec.tick()
    await db.execute("UPDATE experiments SET status = 'stopped', stopped_at = now() - "
                     "interval '2 days' WHERE id = $1", uuid.UUID(old["id"]))
    await checkpoint(app_client, rec)
    assert rec.folder.evicted == {old["id"]}
    await insert(db, old["id"], [("u2", 1, now - timedelta(days=3))],
                 [("u2", "brand_new", 3.0, None, now - timedelta(days=3))])
    await insert(db, live["id"], [], [("u1", "brand_new", 2.0, None, now)])
    await rec.tick()
    for e in (old, live):
        await assert_matches_raw_events(db, e["id"])


async def test_states_a_new_leader_replayed_go_into_its_checkpoint(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """Leader B replays what A folded after A's checkpoint, then writes its own checkpoint,
    which must hold the replayed state (not A's older one) since it is marked at B's
    watermark. C, loading B's checkpoint with the older events gone, has the tables' state."""
    exp = await launched(app_client)
    rng = np.random.default_rng(30)
    a = await folded_rounds(app_client, db, exp["id"], rng, 2)
    await checkpoint(app_client, a)
    await folded_rounds(app_client, db, exp["id"], rng, 1)
    await a.stop()
    b = new_leader(app_client)
    await b.tick()
    assert b.last_fold is not None and b.last_fold.replayed > 0
    await checkpoint(app_client, b)
    cp = await db.fetchval("SELECT checkpoint_xid FROM recompute_watermark")
    await b.stop()
    for table in ("exposures", "metric_events"):
        await db.execute(f"DELETE FROM {table} WHERE ingest_xid < $1", cp)
    c = new_leader(app_client)
    await c.tick()
    assert c.last_fold is not None and c.last_fold.replayed == 0
    await assert_arm_tables_match_state(db, c.folder, exp["id"])
    await c.stop()


async def test_a_refold_from_scratch_cuts_every_event_dated_after_the_stop(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """An exposure dated after the stop, folded before the stop was seen, stays counted by
    the folds that follow; a manual re-fold starts over and, like the results' rule, leaves out
    every event dated after the stop."""
    exp = await launched(app_client)
    now = datetime.now(UTC)
    rec = app_client.app[RECOMPUTE]
    await insert(db, exp["id"], [("w", 0, now - timedelta(hours=1)),
                                 ("ahead", 1, now + timedelta(minutes=10))], [])
    await rec.tick()
    resp = await app_client.post(f"/api/v1/experiments/{exp['id']}/stop",
                                 json={"winner": "model_b"}, headers=ADMIN)
    assert resp.status == 200
    await insert(db, exp["id"], [("x", 2, now - timedelta(minutes=5))], [])
    await rec.tick()
    assert await arm_units(db, exp["id"]) == {0: 1, 1: 1, 2: 1}
    await db.execute("DELETE FROM recompute_watermark")
    await rec.tick()
    assert await arm_units(db, exp["id"]) == {0: 1, 2: 1}


async def test_a_watermark_set_back_to_zero_by_hand_starts_over(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """A watermark of 0 means nothing is folded: a leader finding one empties the per-arm
    tables and the checkpoint before it folds every event, instead of adding them again."""
    exp = await launched(app_client)
    rec = await folded_rounds(app_client, db, exp["id"], np.random.default_rng(31), 2)
    await checkpoint(app_client, rec)
    await rec.stop()
    await db.execute("UPDATE recompute_watermark SET xid_lo = 0")
    other = new_leader(app_client)
    await other.tick()
    await assert_matches_raw_events(db, exp["id"])
    await assert_arm_tables_match_state(db, other.folder, exp["id"])
    await other.stop()


async def test_a_fold_by_a_version_before_0012_has_its_units_above_zero_recounted(
        app_client: TestClient, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """0012's count of units whose total is above 0 is left alone by the folds of an older
    version (a rolling upgrade) and is 0 for rows folded before the migration. A leader of
    this version that finds an older fold's mark on the watermark recounts it from the
    per-unit states: those it loaded and replayed, and an evicted one still in the checkpoint."""
    from litmus.services import fold as svc_fold

    old, live = await launched(app_client, key="old"), await launched(app_client, key="live")
    now = datetime.now(UTC)
    rng = np.random.default_rng(31)

    async def a_round_crossing_zero(exp_id: str, at: datetime) -> None:
        await insert(db, exp_id, [(f"u{rng.integers(0, 80)}", int(rng.integers(0, 3)), at)
                                  for _ in range(60)],
                     [(f"u{rng.integers(0, 90)}", "conversion", float(rng.integers(-2, 3)), None,
                       at) for _ in range(150)])

    rec = app_client.app[RECOMPUTE]
    for e in (old, live):
        await a_round_crossing_zero(e["id"], now - timedelta(days=3))
    await rec.tick()
    await db.execute("UPDATE experiments SET status = 'stopped', stopped_at = now() - "
                     "interval '2 days' WHERE id = $1", uuid.UUID(old["id"]))
    await checkpoint(app_client, rec)
    assert rec.folder.evicted == {old["id"]}
    await rec.stop()
    # A leader of version 2 folds more events: it adds no units above 0, and marks the watermark.
    await a_round_crossing_zero(live["id"], now)
    monkeypatch.setattr(svc_fold, "FOLD_VERSION", 2)
    older = new_leader(app_client)
    await older.tick()
    await older.stop()
    monkeypatch.undo()
    await db.execute("UPDATE arm_metrics SET positive = 0")
    assert await db.fetchval("SELECT fold_version FROM recompute_watermark") == 2
    caplog.set_level(logging.INFO, "litmus.recompute")
    newer = new_leader(app_client)
    await newer.tick()
    assert newer.folder.states is not None and set(newer.folder.states) == {live["id"]}
    for e in (old, live):
        assert await db.fetchval("SELECT sum(positive) FROM arm_metrics WHERE experiment_id = $1",
                                 uuid.UUID(e["id"])) > 0
        await assert_matches_raw_events(db, e["id"])
    assert "units with a total above 0 recounted for 2 experiments" in caplog.text
    assert await db.fetchval("SELECT fold_version FROM recompute_watermark") == 3
    # Recounted once: the next fold of this version adds deltas as usual.
    caplog.clear()
    await a_round_crossing_zero(live["id"], now)
    await newer.tick()
    assert "recounted" not in caplog.text
    await assert_matches_raw_events(db, live["id"])
    await newer.stop()


async def test_a_connection_lost_during_brin_summarization_fails_the_fold_loudly(
    database_url: str,
) -> None:
    """Summarization is an optimisation and skips what it cannot do, but a lost connection is
    not "skip": it is raised (an outage the recompute loop reports once), instead of the fold
    going on with a dead connection and failing with a misleading error."""
    from litmus.db import fold as fold_db

    victim = await asyncpg.connect(database_url)
    killer = await asyncpg.connect(database_url)
    try:
        await killer.execute("SELECT pg_terminate_backend($1)", victim.get_server_pid())
        # Which error asyncpg meets first depends on when the termination notice arrives: the
        # broken connection, the server's "terminating connection", a protocol state error, or
        # (on a loaded machine, the notice handled before the first query) "connection is
        # closed". Each is raised; none is skipped.
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError,
                            asyncpg.InternalClientError, asyncpg.InterfaceError)):
            await fold_db.summarize_new_ranges(victim)
    finally:
        await killer.close()
        await victim.close()
