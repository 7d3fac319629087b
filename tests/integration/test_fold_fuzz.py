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
from litmus.core.counterfactual import PropensitySums
from litmus.db import fold as db_fold
from litmus.db.events import covariate_columns
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
       sum(t.total) AS sum, count(*) FILTER (WHERE t.total > 0) AS positive
FROM tot t LEFT JOIN first f USING (unit_id) GROUP BY 1, 2
"""


PROPENSITY = f"""
WITH first AS (
    SELECT DISTINCT ON (unit_id) unit_id, variant, coalesce(probability, 0) AS p
    FROM exposures e WHERE experiment_id = $1 {CUT}
    ORDER BY unit_id, ts, hashtextextended(event_id, 0)
), tot AS (
    SELECT unit_id, sum(value) AS total FROM metric_events e
    WHERE experiment_id = $1 AND metric = $2 {CUT} GROUP BY 1
)
SELECT f.variant, f.p, coalesce(t.total, 0) AS r FROM first f LEFT JOIN tot t USING (unit_id)
"""
CUPED = f"""
WITH first AS (
    SELECT DISTINCT ON (unit_id) unit_id, variant,
           coalesce((ARRAY[covariate_1, covariate_2, covariate_3, covariate_4,
                           covariate_5])[$3::int + 1], 0) AS x
    FROM exposures e WHERE experiment_id = $1 {CUT}
    ORDER BY unit_id, ts, hashtextextended(event_id, 0)
), tot AS (
    SELECT unit_id, sum(value) AS total FROM metric_events e
    WHERE experiment_id = $1 AND metric = $2 {CUT} GROUP BY 1
)
SELECT f.variant, count(*)::float8 AS n, sum(x) AS x, sum(x * x) AS x2,
       sum(coalesce(t.total, 0)) AS y, sum(coalesce(t.total, 0) ^ 2) AS y2,
       sum(x * coalesce(t.total, 0)) AS xy
FROM first f LEFT JOIN tot t USING (unit_id) GROUP BY 1
"""
# Covariates an exposure sends: none, or the first one or two positions (one maybe NULL).
COVS: tuple[list[float | None] | None, ...] = (None, None, [3.0], [1.5, 2.0], [None, 4.0],
                                               [-2.0])
# Stored probabilities: given, server-filled (negative), forced (1), unknown (NULL).
PROBS = (0.25, 0.5, 0.9, -0.3, -0.6, 1.0, -1.0, None)


async def check_propensity(db: asyncpg.Connection, folder: Any, exp_id: str,
                           metrics: list[str]) -> None:
    """The propensity sums the state gives equal a recount over the raw events."""
    st = folder.states.get(exp_id) if folder.states else None
    if st is None:
        return
    for m in metrics:
        rows = await db.fetch(PROPENSITY, uuid.UUID(exp_id), m)
        by_arm: dict[int, tuple[list[float], list[float]]] = {}
        for r in rows:
            p = abs(r["p"])
            if 0 < p < 1:
                by_arm.setdefault(r["variant"], ([], []))[0].append(r["r"])
                by_arm[r["variant"]][1].append(p)
        want = {a: PropensitySums.of(np.array(rs), np.array(ps)) for a, (rs, ps) in by_arm.items()}
        got = st.propensity(m)
        assert set(got) == set(want), (exp_id, m)
        for a, w in want.items():
            for f in PropensitySums.__slots__:
                assert getattr(got[a], f) == pytest.approx(getattr(w, f), rel=1e-9, abs=1e-9), \
                    (exp_id, m, a, f)
        for position in (0, 1):
            rows = await db.fetch(CUPED, uuid.UUID(exp_id), m, position)
            want_c = {r["variant"]: (r["n"], r["x"], r["x2"], r["y"], r["y2"], r["xy"])
                      for r in rows}
            got_c = st.cuped(m, position)
            assert set(got_c) == set(want_c), (exp_id, m, position)
            for a, w in want_c.items():
                assert got_c[a] == pytest.approx(w, rel=1e-9, abs=1e-9), (exp_id, m, position, a)


async def insert_p(db: asyncpg.Connection, exp_id: str,
                   exposures: list[tuple[str, int, datetime, float | None,
                                         list[float | None] | None]]) -> None:
    await db.copy_records_to_table(
        "exposures", columns=["experiment_id", "unit_id", "variant", "ts", "event_id",
                              "probability", "covariate_1", "covariate_2", "covariate_3",
                              "covariate_4", "covariate_5"],
        records=[(uuid.UUID(exp_id), u, v, ts, uuid.uuid4().hex, p, *covariate_columns(c))
                 for u, v, ts, p, c in exposures])


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
    w = {(r["variant"], r["metric"]): (r["units"], r["events"], round(r["sum"], 6),
                                       r["positive"])
         for r in await db.fetch(RECOUNT, uid)}
    g = {(r["variant"], r["metric"]): (r["units"], r["events"], round(r["sum"], 6),
                                       r["positive"])
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
            ex = [(f"u{rng.integers(0, 60)}", int(rng.integers(0, 3)), event_time(rng, base, now),
                   PROBS[int(rng.integers(0, len(PROBS)))], COVS[int(rng.integers(0, len(COVS)))])
                  for _ in range(int(rng.integers(1, 30)))]
            # Values from -3 to 8: a unit's total crosses 0 both ways (units above 0).
            me = [(f"u{rng.integers(0, 70)}", metric_names[int(rng.integers(0, 4))],
                   float(rng.integers(-3, 9)), None, event_time(rng, base, now))
                  for _ in range(int(rng.integers(1, 30)))]
            await insert_p(db, e, ex)
            await insert(db, e, [], me)
        elif a < 7:
            await rec.tick()
            for e in exps:  # after every fold: the sums equal a recount
                await check_propensity(db, rec.folder, e, metric_names)
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
        await check_propensity(db, rec.folder, e, metric_names)
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
