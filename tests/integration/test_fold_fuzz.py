"""Randomised sequences against the fold's durable side (first written by a reviewer of the
in-memory fold): events of four experiments dated before, after and at their stops, folds,
checkpoints (some failing after they wrote), API stops and stops backdated past the eviction
window, leader changes, deposed leaders and manual re-folds. After every sequence the per-arm
tables equal a recount of the raw events in SQL (with the stop cut-offs the folds pinned),
and a last leader that loads every experiment holds exactly the tables' state."""

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
from litmus.db import fold as db_fold
from litmus.keys import RECOMPUTE
from litmus.services import fold as svc_fold
from litmus.settings import Settings
from tests.conftest import ADMIN, launched
from tests.integration.test_fold import checkpoint, new_leader
from tests.integration.test_results import assert_arm_tables_match_state, insert

# The fold's rule (sql/fold.sql): an event is left out when its experiment's stop was pinned
# at or before the event's transaction and the event is dated after the stop.
CUT = """AND NOT EXISTS (SELECT 1 FROM experiments x JOIN fold_cutoffs c ON c.experiment_id = x.id
      WHERE x.id = e.experiment_id AND e.ts > x.stopped_at AND e.ingest_xid >= c.xid)
      AND e.ingest_xid < (SELECT xid_lo FROM recompute_watermark)"""
UNITS = f"""SELECT variant, count(*) AS n FROM (SELECT DISTINCT ON (unit_id) variant FROM exposures e
  WHERE experiment_id = $1 {CUT} ORDER BY unit_id, ts, hashtextextended(event_id, 0)) f GROUP BY 1"""
RECOUNT = f"""
WITH first AS (
    SELECT DISTINCT ON (unit_id) unit_id, variant FROM exposures e WHERE experiment_id = $1 {CUT}
    ORDER BY unit_id, ts, hashtextextended(event_id, 0)
), tot AS (
    SELECT unit_id, metric, sum(value) AS total, count(*) AS n FROM metric_events e
    WHERE experiment_id = $1 {CUT} GROUP BY 1, 2
)
SELECT coalesce(f.variant, -1) AS variant, t.metric, count(*) AS units, sum(t.n) AS events,
       sum(t.total) AS sum FROM tot t LEFT JOIN first f USING (unit_id) GROUP BY 1, 2
"""


@pytest.fixture
async def app_client(settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(replace(settings, recompute_interval_s=3600)))


def event_time(rng: np.random.Generator, base: datetime, now: datetime) -> datetime:
    """Before the stop (or now), up to 30 minutes after it, or now."""
    k = int(rng.integers(0, 3))
    if k == 0:
        return base - timedelta(minutes=float(rng.integers(1, 600)))
    return base + timedelta(minutes=float(rng.integers(1, 30))) if k == 1 else now


async def check(db: asyncpg.Connection, exp_id: str) -> None:
    uid = uuid.UUID(exp_id)
    want = {r["variant"]: r["n"] for r in await db.fetch(UNITS, uid)}
    got = {r["variant"]: r["units"] for r in await db.fetch(
        "SELECT variant, units FROM arm_exposures WHERE experiment_id = $1", uid) if r["units"]}
    assert got == want, exp_id
    w = {(r["variant"], r["metric"]): (r["units"], r["events"], round(r["sum"], 6))
         for r in await db.fetch(RECOUNT, uid)}
    g = {(r["variant"], r["metric"]): (r["units"], r["events"], round(r["sum"], 6))
         for r in await db.fetch("SELECT * FROM arm_metrics WHERE experiment_id = $1", uid)
         if r["units"] or r["events"]}
    assert g == w, exp_id


@pytest.mark.parametrize("seed", range(8))
async def test_random_sequences_keep_the_tables_exact(app_client: TestClient,
                                                     db: asyncpg.Connection, seed: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_fold, "CHUNK_BYTES", 700)  # rows split across COPY chunks
    await app_client.app[RECOMPUTE].stop()
    rng = np.random.default_rng(seed)
    exps = [(await launched(app_client, key=f"e{i}"))["id"] for i in range(4)]
    stopped: dict[str, datetime] = {}
    rec, other = new_leader(app_client), new_leader(app_client)
    metric_names = ["conversion", "revenue", "m3", "m4"]
    for _ in range(60):
        now = datetime.now(UTC)
        a = rng.integers(0, 13)
        if a < 5:
            e = exps[int(rng.integers(0, 4))]
            base = stopped.get(e, now)
            ex = [(f"u{rng.integers(0, 60)}", int(rng.integers(0, 3)), event_time(rng, base, now))
                  for _ in range(int(rng.integers(1, 30)))]
            me = [(f"u{rng.integers(0, 70)}", metric_names[int(rng.integers(0, 4))],
                   float(rng.integers(1, 9)), None, event_time(rng, base, now))
                  for _ in range(int(rng.integers(1, 30)))]
            await insert(db, e, ex, me)
        elif a < 7:
            await rec.tick()
        elif a == 7:
            await checkpoint(app_client, rec)
        elif a == 8:
            cands = [e for e in exps if e not in stopped]
            if cands:
                e = cands[int(rng.integers(0, len(cands)))]
                if rng.integers(0, 2):
                    resp = await app_client.post(f"/api/v1/experiments/{e}/stop", json={},
                                                 headers=ADMIN)
                    assert resp.status == 200
                else:  # stopped long ago: evicted at the next checkpoint
                    await db.execute("UPDATE experiments SET status = 'stopped', stopped_at = "
                                     "now() - interval '2 days' WHERE id = $1", uuid.UUID(e))
                stopped[e] = await db.fetchval("SELECT stopped_at FROM experiments WHERE id = $1",
                                               uuid.UUID(e))
        elif a == 9:
            await rec.stop()
            rec = new_leader(app_client)
        elif a == 10:  # deposed: two leaders alternate without stopping
            rec, other = other, rec
            await rec.tick()
        elif a == 11:  # a checkpoint that fails after its DELETE and COPY
            write = db_fold.write_checkpoint

            async def failing(*args: Any, write: Any = write) -> int:
                await write(*args)
                raise RuntimeError("boom")
            monkeypatch.setattr(db_fold, "write_checkpoint", failing)
            rec.folder.checkpoint_every_s = 0.0
            rec.folder._checkpoint_retry_at = 0.0
            await rec.tick()
            rec.folder.checkpoint_every_s = 300.0
            monkeypatch.setattr(db_fold, "write_checkpoint", write)
        elif rng.integers(0, 4) == 0:
            await db.execute("DELETE FROM recompute_watermark")  # a manual re-fold
    await rec.tick()
    for e in exps:
        await check(db, e)
    await checkpoint(app_client, rec)
    await rec.stop()
    await other.stop()
    monkeypatch.setattr(svc_fold, "STOPPED_WINDOW", timedelta(days=3650))  # load them all
    final = new_leader(app_client)
    await final.tick()
    assert final.folder.states is not None
    for e in exps:
        if e in final.folder.states:
            await assert_arm_tables_match_state(db, final.folder, e)
    await final.stop()
