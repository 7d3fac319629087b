"""Metric definitions end to end: direction, quantile statistics from the fold's sketches, caps,
validation, edits while running (audited), all against numpy on the raw events."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from scipy import special

from litmus.app import create_app
from litmus.core.quantiles import order_statistic_se
from litmus.keys import RECOMPUTE
from litmus.settings import Settings
from tests.conftest import ADMIN, experiment_payload, launched
from tests.integration.test_results import insert, results

EXP = "/api/v1/experiments"
TWO = [{"key": "model_a", "weight": 0.5}, {"key": "model_b", "weight": 0.5}]
Z = 1.959963984540054


@pytest.fixture
async def app_client(settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(replace(settings, recompute_interval_s=3600)))


async def patch(client: TestClient, exp_id: str, body: dict[str, Any]) -> Any:
    resp = await client.patch(f"{EXP}/{exp_id}", json=body, headers=ADMIN)
    return resp.status, await resp.json()


async def test_quantile_metric_reports_numpy_quantiles_and_compares_them(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    exp = await launched(app_client, variants=TWO, metrics={
        "primary": "latency_ms",
        "definitions": {"latency_ms": {"stat": "p95", "direction": "decrease"}}})
    rng = np.random.default_rng(11)
    now = datetime.now(UTC)
    n = 4000
    arm = rng.integers(0, 2, n)
    exposures = [(f"u{i}", int(arm[i]), now - timedelta(minutes=20)) for i in range(n)]
    # Several events per unit: the quantile is over events, not units.
    values: dict[int, list[float]] = {0: [], 1: []}
    metrics = []
    for i in range(n):
        for _ in range(1 + rng.poisson(1.0)):
            v = float(rng.lognormal(6.0 + 0.3 * arm[i], 0.6))
            values[int(arm[i])].append(v)
            metrics.append((f"u{i}", "latency_ms", v, None, now - timedelta(minutes=5)))
    # Half the metric events arrive before their exposures are folded: they wait, then count.
    half = len(metrics) // 2
    await insert(db, exp["id"], [], metrics[:half])
    await app_client.app[RECOMPUTE].tick()
    await insert(db, exp["id"], exposures, metrics[half:])
    await app_client.app[RECOMPUTE].tick()
    snap = await results(app_client, exp["id"])

    assert snap["definitions"]["latency_ms"] == {"direction": "decrease", "stat": "p95",
                                                 "cap": None}
    a, b = np.sort(values[0]), np.sort(values[1])
    for key, raw in (("model_a", a), ("model_b", b)):
        qs = snap["metrics"]["latency_ms"][key]["quantiles"]
        assert qs["events"] == len(raw)
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert qs[name] == pytest.approx(float(np.quantile(raw, q)), rel=0.01), (key, name)
    row = next(r for r in snap["lift"] if r["metric"] == "latency_ms")
    assert row["stat"] == "p95" and row["goal"] == "minimize"
    qa, qb = float(np.quantile(a, 0.95)), float(np.quantile(b, 0.95))
    se_a, se_b = order_statistic_se(a, 0.95), order_statistic_se(b, 0.95)
    se = math.hypot(se_a, se_b)
    assert row["control_mean"] == pytest.approx(qa, rel=0.01)
    assert row["treatment_mean"] == pytest.approx(qb, rel=0.01)
    assert row["abs_lift"] == pytest.approx(qb - qa, rel=0.02)
    assert row["se"] == pytest.approx(se, rel=0.05)
    assert row["p_value"] == pytest.approx(float(2 * special.ndtr(-abs(qb - qa) / se)), abs=1e-3)
    rel_se = math.sqrt(se_b**2 / qa**2 + qb**2 * se_a**2 / qa**4)
    assert row["rel_ci"] == pytest.approx([qb / qa - 1 - Z * rel_se, qb / qa - 1 + Z * rel_se],
                                          rel=0.05)
    # model_b is slower: with "decrease", its chance to beat control is near 0.
    assert row["chance_to_beat"] < 0.01
    assert row["treatment_units"] == len(b)  # for a quantile: the events compared


async def test_a_cap_winsorizes_each_units_total(app_client: TestClient,
                                                 db: asyncpg.Connection) -> None:
    exp = await launched(app_client, variants=TWO, metrics={
        "primary": "revenue", "definitions": {"revenue": {"cap": 50}}})
    rng = np.random.default_rng(12)
    now = datetime.now(UTC)
    n = 2000
    arm = rng.integers(0, 2, n)
    totals = np.zeros(n)
    metrics = []
    for i in range(n):
        for _ in range(rng.poisson(1.5)):
            v = float(rng.exponential(30))
            totals[i] += v
            metrics.append((f"u{i}", "revenue", v, None, now))
    await insert(db, exp["id"], [(f"u{i}", int(arm[i]), now) for i in range(n)], metrics)
    await app_client.app[RECOMPUTE].tick()
    snap = await results(app_client, exp["id"])
    capped = np.minimum(totals, 50)
    for k, key in enumerate(("model_a", "model_b")):
        m = snap["metrics"]["revenue"][key]
        assert m["cap"] == 50
        assert m["unit_mean"] == pytest.approx(capped[arm == k].mean(), rel=1e-9)
        assert m["unit_variance"] == pytest.approx(capped[arm == k].var(ddof=1), rel=1e-7)
    row = next(r for r in snap["lift"] if r["metric"] == "revenue")
    ca, cb = capped[arm == 0], capped[arm == 1]
    assert row["abs_lift"] == pytest.approx(cb.mean() - ca.mean(), rel=1e-9, abs=1e-12)

    # The cap changes while running: the next snapshot follows, and the audit log keeps it.
    status, body = await patch(app_client, exp["id"], {"metrics": {
        "primary": "revenue", "definitions": {"revenue": {"cap": 20}}}})
    assert status == 200, body
    await app_client.app[RECOMPUTE].tick()
    snap = await results(app_client, exp["id"])
    assert snap["metrics"]["revenue"]["model_a"]["unit_mean"] == pytest.approx(
        np.minimum(totals, 20)[arm == 0].mean(), rel=1e-9)
    resp = await app_client.get(f"{EXP}/{exp['id']}/history", headers=ADMIN)
    history = await resp.json()
    text = str(history)
    assert "'cap': 20" in text and "'cap': 50" in text, text[:2000]


async def test_direction_decrease_mirrors_chance_to_beat(app_client: TestClient,
                                                          db: asyncpg.Connection) -> None:
    exp = await launched(app_client, variants=TWO, metrics={
        "primary": "errors", "definitions": {"errors": {"direction": "decrease"}}})
    now = datetime.now(UTC)
    n = 1000
    exposures = [(f"u{i}", i % 2, now) for i in range(n)]
    # model_b makes fewer errors: it is better.
    metrics = [(f"u{i}", "errors", 1.0, None, now) for i in range(n)
               if (i % 2 == 0 and i % 5 == 0) or (i % 2 == 1 and i % 25 == 1)]
    await insert(db, exp["id"], exposures, metrics)
    await app_client.app[RECOMPUTE].tick()
    snap = await results(app_client, exp["id"])
    row = next(r for r in snap["lift"] if r["metric"] == "errors")
    assert row["abs_lift"] < 0 and row["goal"] == "minimize" and row["chance_to_beat"] > 0.99


@pytest.mark.parametrize(("metrics", "field"), [
    ({"definitions": {"latency_ms": {"stat": "p42"}}}, "metrics.definitions.latency_ms.stat"),
    ({"definitions": {"revenue": {"cap": -5}}}, "metrics.definitions.revenue.cap"),
    ({"definitions": {"revenue": {"cap": 0}}}, "metrics.definitions.revenue.cap"),
    ({"definitions": {"revenue": {"direction": "up"}}}, "metrics.definitions.revenue.direction"),
    ({"definitions": {"revenue": {"colour": "red"}}}, "metrics.definitions.revenue.colour"),
])
async def test_bad_definitions_are_422_naming_the_field(app_client: TestClient,
                                                        metrics: dict[str, Any],
                                                        field: str) -> None:
    resp = await app_client.post(EXP, json=experiment_payload(metrics=metrics), headers=ADMIN)
    body = await resp.json()
    assert resp.status == 422, body
    assert field in body["error"]["fields"], body


def _bandit(objective: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return experiment_payload(
        variants=TWO, allocation="bandit",
        metrics={"primary": "quality", "definitions": {
            "latency_ms": {"stat": "p95", "direction": "decrease"},
            "cost_usd": {"direction": "decrease"}}},
        bandit={"objective": objective, **extra})


@pytest.mark.parametrize(("objective", "extra", "field"), [
    ({"metric": "quality", "constraints": [{"metric": "gpu_hours", "max": 2}]}, {},
     "bandit.objective.constraints[0].metric"),
    ({"metric": "quality", "constraints": [{"metric": "cost_usd"}]}, {},
     "bandit.objective.constraints[0]"),
    ({"metric": "quality", "constraints": [{"metric": "cost_usd", "max": 1, "min": 0}]}, {},
     "bandit.objective.constraints[0]"),
    ({"metric": "quality", "constraints": [{"metric": "cost_usd", "max": 1}] * 6}, {},
     "bandit.objective.constraints"),
    ({"metric": "quality", "constraints": []}, {"reward_metric": "clicks"},
     "bandit.objective.metric"),
])
async def test_bad_objectives_are_422_naming_the_field(app_client: TestClient,
                                                       objective: dict[str, Any],
                                                       extra: dict[str, Any], field: str) -> None:
    resp = await app_client.post(EXP, json=_bandit(objective, **extra), headers=ADMIN)
    body = await resp.json()
    assert resp.status == 422, body
    assert field in body["error"]["fields"], body


async def test_an_objective_is_stored_and_sets_the_reward_metric(app_client: TestClient) -> None:
    objective = {"metric": "quality", "constraints": [
        {"metric": "cost_usd", "max": 1.5}, {"metric": "latency_ms", "max": 1500}]}
    resp = await app_client.post(EXP, json=_bandit(objective), headers=ADMIN)
    body = await resp.json()
    assert resp.status == 201, body
    assert body["bandit"]["objective"] == objective
    assert body["bandit"]["reward_metric"] == "quality"
    # PATCH a constraint's bound: stored, and a bad one refused without losing the good one.
    objective["constraints"][0]["max"] = 2.0
    status, out = await patch(app_client, body["id"], {"bandit": {"objective": objective}})
    assert status == 200, out
    assert out["bandit"]["objective"]["constraints"][0]["max"] == 2.0
    status, out = await patch(app_client, body["id"], {"bandit": {"objective": {
        "metric": "quality", "constraints": [{"metric": "nope", "max": 1}]}}})
    assert status == 422
    resp = await app_client.get(f"{EXP}/{body['id']}", headers=ADMIN)
    assert (await resp.json())["bandit"]["objective"]["constraints"][0]["max"] == 2.0


async def test_a_constrained_bandit_prefers_the_best_feasible_model(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    # model_b has the better quality but costs 3 per request against a bound of 1.5, and its p95
    # latency is over the 1500 ms bound: the constrained bandit leans to model_a.
    objective = {"metric": "quality", "constraints": [
        {"metric": "cost_usd", "max": 1.5}, {"metric": "latency_ms", "max": 1500}]}
    body = _bandit(objective, burn_in_units=50, min_units=100, update_interval_s=0.5)
    body["key"] = "router"
    resp = await app_client.post(EXP, json=body, headers=ADMIN)
    exp = await resp.json()
    assert resp.status == 201, exp
    resp = await app_client.post(f"{EXP}/{exp['id']}/launch", json={}, headers=ADMIN)
    assert resp.status == 200
    rng = np.random.default_rng(21)
    now = datetime.now(UTC)
    n = 2000
    arm = np.arange(n) % 2
    quality = rng.random(n) < np.where(arm == 0, 0.70, 0.82)
    metrics = []
    for i in range(n):
        metrics.append((f"u{i}", "quality", float(quality[i]), None, now))
        metrics.append((f"u{i}", "cost_usd", 0.5 if arm[i] == 0 else 3.0, None, now))
        lat = rng.lognormal(math.log(400 if arm[i] == 0 else 1300), 0.4)
        metrics.append((f"u{i}", "latency_ms", float(lat), None, now))
    await insert(db, exp["id"], [(f"u{i}", int(arm[i]), now) for i in range(n)], metrics)
    await asyncio.sleep(0.6)  # the update interval since the loop's first (empty) update
    await app_client.app[RECOMPUTE].tick()
    snap = await results(app_client, exp["id"])
    bandit = snap["bandit"]
    assert bandit["objective"] == objective
    assert bandit["p_feasible"]["model_a"] == pytest.approx({"cost_usd": 1.0, "latency_ms": 1.0})
    assert bandit["p_feasible"]["model_b"]["cost_usd"] == 0.0
    assert bandit["p_feasible"]["model_b"]["latency_ms"] < 0.01
    assert bandit["top_variant"] == "model_a" and bandit["p_best"]["model_a"] > 0.99
    # The plain bandit on quality alone would pick model_b: shown by the same data unconstrained.
    assert snap["estimates"]["quality"]["model_b"]["value"] > snap["estimates"]["quality"]["model_a"]["value"]
    assert snap["estimates"]["latency_ms"]["model_b"]["value"] > 1500
    # Between updates the stored state keeps p_feasible.
    await app_client.app[RECOMPUTE].tick()
    again = await results(app_client, exp["id"])
    assert again["bandit"]["p_feasible"] == bandit["p_feasible"]
