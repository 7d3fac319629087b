"""Recompute and results: numbers against numpy/scipy on the raw per-unit data, incremental
folding, attribution rules, the stop cut-off, leader election, bandit weights reaching assignment."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from scipy import stats as sps

from litmus.app import create_app
from litmus.keys import RECOMPUTE
from litmus.services.fold import Folder
from litmus.services.recompute import Recompute
from litmus.settings import Settings
from tests.conftest import ADMIN, CLIENT, experiment_payload, launched

EXP = "/api/v1/experiments"


@pytest.fixture
async def app_client(settings: Settings, aiohttp_client: Any) -> TestClient:
    # A long interval: the tests drive recompute ticks themselves.
    return await aiohttp_client(create_app(replace(settings, recompute_interval_s=3600)))


async def insert(db: asyncpg.Connection, exp_id: str, exposures: list[tuple[str, int, datetime]],
                 metrics: list[tuple[str, str, float, int | None, datetime]]) -> None:
    uid = uuid.UUID(exp_id)
    await db.copy_records_to_table(
        "exposures", columns=["experiment_id", "unit_id", "variant", "ts", "event_id"],
        records=[(uid, u, v, ts, uuid.uuid4().hex) for u, v, ts in exposures])
    await db.copy_records_to_table(
        "metric_events",
        columns=["experiment_id", "unit_id", "metric", "value", "variant", "ts", "event_id"],
        records=[(uid, u, m, val, v, ts, uuid.uuid4().hex) for u, m, val, v, ts in metrics])


async def assert_arm_tables_match_state(db: asyncpg.Connection, folder: Folder,
                                        exp_id: str) -> None:
    """The per-arm tables (sums of every fold's deltas) equal a recount of the in-memory state."""
    assert folder.states is not None
    want = folder.states[exp_id].arm_totals()
    uid = uuid.UUID(exp_id)
    units = {r["variant"]: r["units"] for r in await db.fetch(
        "SELECT variant, units FROM arm_exposures WHERE experiment_id = $1", uid) if r["units"]}
    assert units == {arm: u for arm, (u, _) in want.exposures.items() if u}
    rows = {(r["variant"], r["metric"]): r for r in await db.fetch(
        "SELECT * FROM arm_metrics WHERE experiment_id = $1", uid) if r["units"] or r["events"]}
    assert rows.keys() == {k for k, v in want.metrics.items() if v[0] or v[1]}
    for k, r in rows.items():
        u, e, s, q, p = want.metrics[k]
        assert (r["units"], r["events"], r["positive"]) == (u, e, p), k
        assert r["sum"] == pytest.approx(s, rel=1e-9, abs=1e-9)
        assert r["sum_sq"] == pytest.approx(q, rel=1e-9, abs=1e-9)
    origin = datetime(2000, 1, 1, tzinfo=UTC)
    slots = {((r["slot"] - origin) // timedelta(microseconds=1), r["variant"]): r["units"]
             for r in await db.fetch("SELECT slot, variant, units FROM exposure_timeline "
                                     "WHERE experiment_id = $1", uid) if r["units"]}
    assert slots == {k: v for k, v in want.timeline.items() if v}


async def results(client: TestClient, exp_id: str) -> dict[str, Any]:
    resp = await client.get(f"{EXP}/{exp_id}/results", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    out: dict[str, Any] = await resp.json()
    return out


async def test_no_results_before_first_snapshot(app_client: TestClient) -> None:
    resp = await app_client.post(EXP, json=experiment_payload(), headers=ADMIN)
    exp = await resp.json()
    resp = await app_client.get(f"{EXP}/{exp['id']}/results", headers=ADMIN)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "no_results"


async def test_numbers_match_numpy_on_raw_units(app_client: TestClient, db: asyncpg.Connection) -> None:
    exp = await launched(app_client, variants=[
        {"key": "model_a", "weight": 0.5}, {"key": "model_b", "weight": 0.5}])
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    n = 3000
    variants = rng.integers(0, 2, n)
    # Revenue per unit: some units have several events, many none; model_b earns more.
    exposures, metrics = [], []
    totals = np.zeros(n)
    counts = np.zeros(n, dtype=int)
    for i in range(n):
        unit = f"u{i}"
        exposures.append((unit, int(variants[i]), now - timedelta(minutes=30)))
        if rng.random() < 0.3:  # a second, later exposure to the other variant changes nothing
            exposures.append((unit, int(1 - variants[i]), now - timedelta(minutes=10)))
        for _ in range(rng.poisson(0.8)):
            value = float(rng.exponential(10 + 3 * variants[i]))
            explicit = int(variants[i]) if rng.random() < 0.5 else None
            metrics.append((unit, "revenue", value, explicit, now - timedelta(minutes=5)))
            totals[i] += value
            counts[i] += 1
    # Units never exposed: unattributed.
    metrics += [(f"ghost{i}", "revenue", 5.0, None, now) for i in range(7)]
    await insert(db, exp["id"], exposures, metrics)
    await app_client.app[RECOMPUTE].tick()
    snap = await results(app_client, exp["id"])

    assert snap["experiment_id"] == exp["id"] and snap["computed_at"]
    a, b = totals[variants == 0], totals[variants == 1]
    assert snap["exposures"]["total_units"] == n
    assert snap["exposures"]["variants"]["model_a"]["units"] == len(a)
    assert snap["exposures"]["variants"]["model_b"]["units"] == len(b)
    # Exposure events count under the variant they were logged with.
    for i, key in enumerate(("model_a", "model_b")):
        logged = sum(1 for _, v, _ in exposures if v == i)
        assert snap["exposures"]["variants"][key]["events"] == logged
    rev = snap["metrics"]["revenue"]
    for key, arr, mask in (("model_a", a, variants == 0), ("model_b", b, variants == 1)):
        assert rev[key]["count"] == int(counts[mask].sum())
        assert rev[key]["sum"] == pytest.approx(arr.sum(), rel=1e-9)
        assert rev[key]["units"] == int((counts[mask] > 0).sum())
        assert rev[key]["unit_mean"] == pytest.approx(arr.mean(), rel=1e-9)
        assert rev[key]["unit_variance"] == pytest.approx(arr.var(ddof=1), rel=1e-7)
        assert rev[key]["mean"] == pytest.approx(arr.sum() / counts[mask].sum(), rel=1e-9)
    row = next(r for r in snap["lift"] if r["metric"] == "revenue")
    t = sps.ttest_ind(b, a, equal_var=False)
    assert row["abs_lift"] == pytest.approx(b.mean() - a.mean(), rel=1e-9)
    assert row["p_value"] == pytest.approx(t.pvalue, rel=1e-6)
    ci = t.confidence_interval(0.95)
    assert row["abs_ci"] == pytest.approx([ci.low, ci.high], rel=1e-6)
    assert snap["unattributed"]["revenue"]["count"] == 7
    assert snap["srm"]["flagged"] is False
    assert snap["exposures"]["timeline"], "timeline has points"
    assert sum(p["model_a"] + p["model_b"] for p in snap["exposures"]["timeline"]) == n

    resp = await app_client.get(f"{EXP}/{exp['id']}/results.csv", headers=ADMIN)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    lines = (await resp.text()).strip().splitlines()
    assert lines[0].startswith("metric,control,treatment")
    assert any(line.startswith("revenue,model_a,model_b") for line in lines[1:])


async def test_incremental_fold_equals_full_recount(app_client: TestClient, db: asyncpg.Connection) -> None:
    exp = await launched(app_client)
    now = datetime.now(UTC)
    rec = app_client.app[RECOMPUTE]
    all_exp: list[tuple[str, int, datetime]] = []
    all_met: list[tuple[str, str, float, int | None, datetime]] = []
    rng = np.random.default_rng(3)
    for round_ in range(4):
        exps = [(f"u{rng.integers(0, 500)}", int(rng.integers(0, 3)),
                 now - timedelta(seconds=float(rng.integers(0, 3600)))) for _ in range(400)]
        mets = [(f"u{rng.integers(0, 600)}", "conversion", 1.0, None, now) for _ in range(300)]
        await insert(db, exp["id"], exps, mets)
        all_exp += exps
        all_met += mets
        await rec.tick()
        snap = await results(app_client, exp["id"])
        first: dict[str, tuple[datetime, int]] = {}
        for u, v, ts in all_exp:
            if u not in first or ts < first[u][0]:
                first[u] = (ts, v)
        keys = ["model_a", "model_b", "model_c"]
        for i, k in enumerate(keys):
            units = [u for u, (_, v) in first.items() if v == i]
            conv = sum(1 for u, *_ in all_met if u in set(units))
            assert snap["exposures"]["variants"][k]["units"] == len(units), round_
            got = snap["metrics"].get("conversion", {}).get(k, {"count": 0})["count"]
            assert got == conv, round_
            if conv:
                per_unit = np.array([sum(1 for w, *_ in all_met if w == u) for u in units], float)
                m = snap["metrics"]["conversion"][k]
                assert m["unit_mean"] == pytest.approx(per_unit.mean(), rel=1e-9)
                assert m["unit_variance"] == pytest.approx(per_unit.var(ddof=1), rel=1e-7)
        unexposed = sum(1 for u, *_ in all_met if u not in first)
        assert snap["unattributed"].get("conversion", {"count": 0})["count"] == unexposed
        # The per-arm tables, built from four folds' deltas, equal a recount of the state.
        await assert_arm_tables_match_state(db, rec.folder, exp["id"])


async def test_a_missing_watermark_refolds_from_scratch(app_client: TestClient,
                                                       db: asyncpg.Connection) -> None:
    """With the watermark row gone (an operator's manual re-fold), the folded tables cannot be
    matched to events any more: the next tick empties them and folds every event again, and
    the results agree with before (nothing counted twice)."""
    exp = await launched(app_client)
    now = datetime.now(UTC)
    rng = np.random.default_rng(11)
    rec = app_client.app[RECOMPUTE]
    for _ in range(2):  # two folds, so the rebuild has to add up more than one batch
        await insert(db, exp["id"],
                     [(f"u{rng.integers(0, 300)}", int(rng.integers(0, 3)),
                       now - timedelta(seconds=float(rng.integers(0, 600)))) for _ in range(300)],
                     [(f"u{rng.integers(0, 350)}", "revenue", float(rng.gamma(2.0, 3.0)), None, now)
                      for _ in range(400)])
        await rec.tick()
    before = await results(app_client, exp["id"])
    await db.execute("DELETE FROM recompute_watermark")  # the folded tables keep their rows
    await rec.tick()
    after = await results(app_client, exp["id"])
    assert after["exposures"] == before["exposures"]
    assert after["unattributed"].keys() == before["unattributed"].keys()
    for metric, u in before["unattributed"].items():  # sums: same events, another order
        assert after["unattributed"][metric]["count"] == u["count"]
        assert after["unattributed"][metric]["sum"] == pytest.approx(u["sum"], rel=1e-12)
    assert after["metrics"].keys() == before["metrics"].keys()
    for metric, per in before["metrics"].items():
        assert after["metrics"][metric].keys() == per.keys()
        for variant, m in per.items():
            for field, value in m.items():
                got = after["metrics"][metric][variant][field]
                assert got == (value if value is None else pytest.approx(value, rel=1e-9)), field
    assert [r["p_value"] for r in after["lift"]] == pytest.approx([r["p_value"] for r in before["lift"]])
    assert await db.fetchval("SELECT count(*) FROM recompute_watermark") == 1


async def test_new_brin_ranges_are_summarized_before_a_fold(app_client: TestClient,
                                                            db: asyncpg.Connection) -> None:
    """Events stored since the last VACUUM get their BRIN ranges summarized by the fold, so
    the next fold's range scan skips them."""
    exp = await launched(app_client)
    now = datetime.now(UTC)
    await insert(db, exp["id"], [(f"u{i}", i % 3, now) for i in range(30_000)], [])

    await app_client.app[RECOMPUTE].tick()
    index = await db.fetchval(
        "SELECT i.inhrelid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'exposures_xid_brin'::regclass AND c.relname LIKE $1",
        "exposures_y" + now.strftime("%Ym%m") + "%")
    # 30,000 rows fill several 128-page ranges; the tick summarized them all, so a second
    # call finds nothing left (without the fold's call it returns the number of ranges).
    assert await db.fetchval("SELECT brin_summarize_new_values($1::regclass)", index) == 0


async def test_events_after_stop_are_not_counted(app_client: TestClient, db: asyncpg.Connection) -> None:
    exp = await launched(app_client)
    before = datetime.now(UTC) - timedelta(seconds=5)
    await insert(db, exp["id"], [("u1", 0, before), ("u2", 1, before)], [])
    resp = await app_client.post(f"{EXP}/{exp['id']}/stop", json={"winner": "model_b"}, headers=ADMIN)
    assert resp.status == 200
    after = datetime.now(UTC) + timedelta(seconds=1)
    await insert(db, exp["id"], [("u3", 1, after), ("u4", 1, after)],
                 [("u1", "conversion", 1.0, None, after)])
    await app_client.app[RECOMPUTE].tick()
    snap = await results(app_client, exp["id"])
    assert snap["exposures"]["total_units"] == 2
    assert snap["status"] == "stopped"
    assert "conversion" not in snap["metrics"] or all(
        m["count"] == 0 for m in snap["metrics"]["conversion"].values())


async def test_one_leader_and_takeover(app_client: TestClient, database_url: str) -> None:
    registry_owner = app_client.app[RECOMPUTE]
    for _ in range(100):  # the app's own loop takes the lock as it starts
        if registry_owner.is_leader:
            break
        await asyncio.sleep(0.02)
    assert registry_owner.is_leader
    other = Recompute(None, database_url, None, 0.05)  # type: ignore[arg-type]
    assert await other._ensure_leader() is False
    await registry_owner.stop()
    assert await other._ensure_leader() is True
    await other.stop()


async def test_bandit_weights_reach_assignment(app_client: TestClient, db: asyncpg.Connection) -> None:
    variants = [{"key": f"model_{c}", "weight": 0.25} for c in "abcd"]
    exp = await launched(app_client, allocation="bandit", variants=variants,
                             bandit={"update_interval_s": 1, "burn_in_units": 50, "min_units": 100})
    now = datetime.now(UTC)
    rates = [0.02, 0.03, 0.04, 0.30]
    exps, mets = [], []
    rng = np.random.default_rng(11)
    for i in range(2000):
        v = i % 4
        exps.append((f"u{i}", v, now))
        if rng.random() < rates[v]:
            mets.append((f"u{i}", "conversion", 1.0, None, now))
    await insert(db, exp["id"], exps, mets)
    rec = app_client.app[RECOMPUTE]
    await rec.tick(now + timedelta(seconds=2))
    snap = await results(app_client, exp["id"])
    band = snap["bandit"]
    assert band["top_variant"] == "model_d"
    assert band["p_best"]["model_d"] > 0.95
    assert band["converged"] is True and band["converged_at"]
    assert band["weights"]["model_d"] > 0.9
    assert sum(band["weights"].values()) == pytest.approx(1.0)
    # The app's own first tick (before any event) may have stored the burn-in weights too.
    n_hist = len(band["history"])
    assert n_hist in (1, 2) and band["history"][-1]["weights"] == band["weights"]
    # The registry hears the new weights through NOTIFY and assignment follows them.
    for _ in range(100):
        resp = await app_client.post("/api/v1/assign", json={"experiment": exp["key"], "unit_id": "x"},
                                     headers=CLIENT)
        body = await resp.json()
        if body["variant"] == "model_d" and body["probability"] > 0.9:
            break
        await asyncio.sleep(0.02)
    counts: dict[str, int] = {}
    for i in range(300):
        resp = await app_client.post("/api/v1/assign", json={"experiment": exp["key"], "unit_id": f"n{i}"},
                                     headers=CLIENT)
        v = (await resp.json())["variant"]
        counts[v] = counts.get(v, 0) + 1
    assert counts.get("model_d", 0) > 250
    # Not due yet: a tick within update_interval_s keeps the weights and adds no history.
    await rec.tick(now + timedelta(seconds=2.5))
    assert len((await results(app_client, exp["id"]))["bandit"]["history"]) == n_hist


def test_timeline_bucket() -> None:
    from litmus.services.recompute import timeline_bucket

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert timeline_bucket(t0, t0 + timedelta(minutes=60)) == timedelta(seconds=60)
    assert timeline_bucket(t0, t0 + timedelta(minutes=5)) == timedelta(seconds=10)
    assert timeline_bucket(t0, t0 + timedelta(seconds=601)) == timedelta(seconds=20)
    assert timeline_bucket(t0, t0) == timedelta(seconds=10)
    # Up to 60 hours: multiples of the 10-second slots; beyond, whole hours (hourly slots).
    assert timeline_bucket(t0, t0 + timedelta(hours=59)) == timedelta(seconds=3540)
    assert timeline_bucket(t0, t0 + timedelta(hours=61)) == timedelta(hours=2)
    assert timeline_bucket(t0, t0 + timedelta(days=30)) == timedelta(hours=12)


async def test_an_old_experiments_timeline_comes_from_hourly_slots(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """A month-old experiment: 60 points of 12 hours, read from the hourly slots, equal to
    the first exposures binned directly; a late earlier exposure moves its unit's point."""
    exp = await launched(app_client)
    now = datetime.now(UTC).replace(microsecond=0)
    started = now - timedelta(days=30)
    await db.execute("UPDATE experiments SET launched_at = $2 WHERE id = $1",
                     uuid.UUID(exp["id"]), started)
    rng = np.random.default_rng(5)
    exps = [(f"u{i}", int(rng.integers(0, 3)),
             started + timedelta(seconds=float(rng.integers(0, 30 * 86400)))) for i in range(600)]
    rec = app_client.app[RECOMPUTE]
    await insert(db, exp["id"], exps, [])
    await rec.tick(now)
    moved = ("u7", (exps[7][1] + 1) % 3, started + timedelta(minutes=1))  # earlier: moves u7
    await insert(db, exp["id"], [moved], [])
    exps[7] = moved
    await rec.tick(now)
    # Only the hourly slots can answer now: a read of the 10-second ones would find nothing.
    await db.execute("DELETE FROM exposure_timeline WHERE experiment_id = $1", uuid.UUID(exp["id"]))
    await rec.tick(now)
    snap = await results(app_client, exp["id"])
    timeline = snap["exposures"]["timeline"]
    origin = datetime(2000, 1, 1, tzinfo=UTC)
    bucket = timedelta(hours=12)
    expected: dict[str, dict[str, int]] = {}
    for _, v, ts in exps:
        t = origin + (ts - origin) // bucket * bucket
        point = expected.setdefault(t.isoformat().replace("+00:00", "Z"),
                                    {"model_a": 0, "model_b": 0, "model_c": 0})
        point[["model_a", "model_b", "model_c"][v]] += 1
    got = {p["t"]: {k: p[k] for k in ("model_a", "model_b", "model_c")} for p in timeline}
    assert {t: p for t, p in got.items() if any(p.values())} == expected
    assert len(timeline) <= 61
    hourly = await db.fetchval("SELECT count(*) FROM exposure_timeline_hourly WHERE experiment_id = $1",
                               uuid.UUID(exp["id"]))
    assert 0 < hourly <= 3 * 30 * 24 + 3


async def test_events_through_the_api_reach_the_results(app_client: TestClient) -> None:
    exp = await launched(app_client, key="e2e", variants=[
        {"key": "model_a", "weight": 0.5}, {"key": "model_b", "weight": 0.5}])
    conversions = {"model_a": 0, "model_b": 0}
    units = {"model_a": 0, "model_b": 0}
    events: list[dict[str, Any]] = []
    for i in range(200):
        resp = await app_client.post("/api/v1/assign", json={"experiment": "e2e", "unit_id": f"p{i}"},
                                     headers=CLIENT)
        variant = (await resp.json())["variant"]
        units[variant] += 1
        events.append({"type": "exposure", "experiment": "e2e", "unit_id": f"p{i}", "variant": variant})
        if i % (3 if variant == "model_b" else 5) == 0:
            events.append({"type": "conversion", "experiment": "e2e", "unit_id": f"p{i}"})
            conversions[variant] += 1
    resp = await app_client.post("/api/v1/events", json={"events": events}, headers=CLIENT)
    assert resp.status == 202, await resp.text()
    await app_client.app[RECOMPUTE].tick()
    snap = await results(app_client, exp["id"])
    for k in ("model_a", "model_b"):
        assert snap["exposures"]["variants"][k]["units"] == units[k]
        conv = snap["metrics"]["conversion"][k]
        assert conv["count"] == conversions[k]
        assert conv["unit_mean"] == pytest.approx(conversions[k] / units[k])
    row = snap["lift"][0]
    assert (row["metric"], row["control"], row["treatment"]) == ("conversion", "model_a", "model_b")
    assert row["abs_lift"] == pytest.approx(conversions["model_b"] / units["model_b"]
                                            - conversions["model_a"] / units["model_a"])


async def test_brin_summarization_turns_itself_off_for_a_role_that_does_not_own_the_tables(
        database_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    from litmus.db import fold as db_results

    monkeypatch.setattr(db_results, "_summarize", True)
    role = f"litmus_reader_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await db.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        parts = urlsplit(database_url)
        netloc = parts.netloc.split("@", 1)[-1]
        conn = await asyncpg.connect(urlunsplit((parts.scheme, f"{role}@{netloc}", parts.path,
                                                 parts.query, parts.fragment)))
        try:
            assert await db_results.summarize_new_ranges(conn) == 0
            assert db_results._summarize is False  # said once, not on every fold
            assert await db_results.summarize_new_ranges(conn) == 0
        finally:
            await conn.close()
    finally:
        await db.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        await db.execute(f"DROP ROLE {role}")
