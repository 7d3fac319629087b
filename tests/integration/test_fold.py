"""The results fold's durable side: the checkpoint, a new leader's load and replay, a deposed
leader, raw events dropped after a checkpoint, and the takeover of an older version's tables.
Every check recounts the per-arm tables from the raw events (or from the known inputs when the
raw events are gone)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from litmus.app import create_app
from litmus.keys import DSN, POOL, RECOMPUTE
from litmus.services.recompute import Recompute
from litmus.settings import Settings
from tests.conftest import launched
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
       sum(t.total) AS sum, sum(t.total * t.total) AS sum_sq
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
        assert (got[k]["units"], got[k]["events"]) == (w["units"], w["events"]), k
        assert got[k]["sum"] == pytest.approx(w["sum"], rel=1e-9, abs=1e-9), k
        assert got[k]["sum_sq"] == pytest.approx(w["sum_sq"], rel=1e-9, abs=1e-9), k


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
    rec = app_client.app[RECOMPUTE]
    for _ in range(2):
        await a_round(db, exp["id"], rng, now)
        await rec.tick()
    async with app_client.app[POOL].acquire() as conn:
        assert await rec.folder.checkpoint(conn) > 0
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
    other = Recompute(app_client.app[POOL], app_client.app[DSN], None, 3600)  # type: ignore[arg-type]
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
    b = Recompute(app_client.app[POOL], app_client.app[DSN], None, 3600)  # type: ignore[arg-type]
    for i, leader in enumerate((a, b, a, b)):
        await a_round(db, exp["id"], rng, now)
        await leader.tick()
        assert leader.last_fold is not None
        if i:  # a switch: the other one folded since, so this one replays
            assert leader.last_fold.replayed > 0
        await assert_matches_raw_events(db, exp["id"])
    await b.stop()


async def test_the_tables_of_the_previous_version_become_the_first_state(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """A database folded by the previous version (per-unit rows in unit_exposures and
    unit_metrics, renamed *_v1 by 0010, no checkpoint) whose raw events are already dropped:
    the first leader of this version takes its state from those tables, drops them and writes
    a checkpoint, and later events land on the right arms with the right totals."""
    exp = await launched(app_client)
    uid = uuid.UUID(exp["id"])
    now = datetime.now(UTC)
    rec = app_client.app[RECOMPUTE]
    await insert(db, exp["id"], [(f"u{i}", i % 3, now - timedelta(hours=1)) for i in range(30)],
                 [(f"u{i}", "revenue", float(i), None, now) for i in range(30)])
    await rec.tick()
    # What the previous version leaves behind, built from the raw events as its fold did.
    await db.execute("""
        CREATE TABLE unit_exposures_v1 AS
        SELECT DISTINCT ON (experiment_id, unit_id) experiment_id, unit_id, variant,
               ts AS first_ts, 1::bigint AS exposures
        FROM exposures ORDER BY experiment_id, unit_id, ts;
        CREATE TABLE unit_metrics_v1 AS
        SELECT experiment_id, unit_id, metric, sum(value) AS total, count(*)::bigint AS events,
               (-1)::smallint AS variant
        FROM metric_events GROUP BY 1, 2, 3;
        DELETE FROM fold_checkpoint;
        UPDATE recompute_watermark SET checkpoint_xid = NULL;  -- a fold by version 0
        DELETE FROM exposures; DELETE FROM metric_events;
        DELETE FROM exposure_timeline_hourly;""")
    await rec.stop()
    other = Recompute(app_client.app[POOL], app_client.app[DSN], None, 3600)  # type: ignore[arg-type]
    await insert(db, exp["id"], [], [(f"u{i}", "revenue", 1.0, None, now) for i in range(30)])
    await other.tick()
    assert await db.fetchval("SELECT to_regclass('unit_exposures_v1')") is None
    assert await db.fetchval("SELECT checkpoint_xid FROM recompute_watermark") is not None
    # The hourly slots of a pre-0008 fold are rebuilt from the 10-second ones.
    assert await db.fetchval("SELECT sum(units) FROM exposure_timeline_hourly "
                             "WHERE experiment_id = $1", uid) == 30
    snap = await results(app_client, exp["id"])
    for i, k in enumerate(["model_a", "model_b", "model_c"]):
        totals = np.array([u + 1.0 for u in range(30) if u % 3 == i])
        m = snap["metrics"]["revenue"][k]
        assert m["units"] == len(totals) and m["count"] == 2 * len(totals)
        assert m["sum"] == pytest.approx(totals.sum())
        assert m["unit_variance"] == pytest.approx(totals.var(ddof=1))
    await assert_arm_tables_match_state(db, other.folder, exp["id"])
    await other.stop()


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
