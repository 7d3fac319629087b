"""Counterfactual estimates end to end: exposures carry their probability (given, filled in,
forced), the fold keeps the sums, and the route's IPS/SNIPS/DR equal the formulas computed with
numpy on the exported units.csv."""

from __future__ import annotations

import asyncio
import csv
import io
import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from litmus.app import create_app
from litmus.keys import RECOMPUTE
from litmus.settings import Settings
from tests.conftest import ADMIN, CLIENT, launched

EXP = "/api/v1/experiments"
THREE = [{"key": "model_a", "weight": 0.4}, {"key": "model_b", "weight": 0.3},
         {"key": "model_c", "weight": 0.3}]
Z = 1.959963984540054


@pytest.fixture
async def app_client(settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(replace(settings, recompute_interval_s=3600)))


async def send(client: TestClient, events: list[dict[str, Any]]) -> Any:
    resp = await client.post("/api/v1/events", json={"events": events}, headers=CLIENT)
    return resp.status, await resp.json()


async def export(client: TestClient, exp_id: str, metric: str) -> list[dict[str, str]]:
    resp = await client.get(f"{EXP}/{exp_id}/units.csv?metric={metric}", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/csv")
    text = await resp.text()
    assert text.splitlines()[0] == "unit_id,variant,probability,first_exposure_at,value"
    return list(csv.DictReader(io.StringIO(text)))


def numpy_estimates(rows: list[dict[str, str]], policy: dict[str, float]) -> dict[str, float]:
    """The formulas on the exported units (probability in (0, 1) only)."""
    use = [r for r in rows if r["probability"] and 0 < float(r["probability"]) < 1]
    keys = sorted({r["variant"] for r in use})
    a = np.array([keys.index(r["variant"]) for r in use])
    p = np.array([float(r["probability"]) for r in use])
    r = np.array([float(r["value"]) for r in use])
    n = len(r)
    pa = np.array([policy.get(k, 0.0) for k in keys])[a]
    t, u = pa * r / p, pa / p
    q = np.array([r[a == i].mean() for i in range(len(keys))])
    c = sum(policy.get(k, 0.0) * q[i] for i, k in enumerate(keys))
    d = c + pa * (r - q[a]) / p
    snips = t.sum() / u.sum()
    return {"ips": t.mean(), "ips_se": math.sqrt(t.var(ddof=1) / n), "snips": snips,
            "snips_se": math.sqrt((t - snips * u).var(ddof=1) / n) / u.mean(),
            "dr": d.mean(), "dr_se": math.sqrt(d.var(ddof=1) / n),
            "ess": u.sum() ** 2 / (u * u).sum(), "units": n, "logged": r.mean()}


async def test_estimates_equal_numpy_on_the_export(app_client: TestClient) -> None:
    exp = await launched(app_client, key="router", variants=THREE)
    rng = np.random.default_rng(31)
    n = 3000
    # Weights that moved over time, as a bandit's do; the logged probability is the weight.
    steps = np.linspace(0, 1, n)
    w = np.stack([0.5 - 0.3 * steps, 0.3 + 0.05 * steps, 0.2 + 0.25 * steps], axis=1)
    arm = (rng.random(n)[:, None] > np.cumsum(w, axis=1)).sum(axis=1)
    keys = [v["key"] for v in THREE]
    t0 = int(time.time() * 1000) - 3_600_000
    events: list[dict[str, Any]] = []
    for i in range(n):
        ev: dict[str, Any] = {"type": "exposure", "experiment": "router", "unit_id": f"u{i}",
                              "variant": keys[arm[i]], "ts": t0 + i}
        if i % 10 == 3:
            pass  # no probability: the server fills in the configured weight
        elif i % 50 == 7:
            ev["probability"] = 1.0  # forced (an override): left out
        else:
            ev["probability"] = float(w[i, arm[i]])
        events.append(ev)
        # A later exposure with another probability changes nothing: the first one decides.
        if i % 17 == 0:
            events.append({**ev, "ts": ev["ts"] + 60_000, "probability": 0.99})
        for _ in range(int(rng.poisson(0.3 + 0.2 * arm[i]))):
            events.append({"type": "metric", "experiment": "router", "unit_id": f"u{i}",
                           "metric": "revenue", "value": float(rng.exponential(10))})
    for at in range(0, len(events), 5000):
        status, body = await send(app_client, events[at:at + 5000])
        assert status == 202, body
    await app_client.app[RECOMPUTE].tick()
    snap = (await (await app_client.get(f"{EXP}/{exp['id']}/results", headers=ADMIN)).json())
    prop = snap["propensity"]
    assert prop["forced_units"] == len(range(7, n, 50)) - len([i for i in range(7, n, 50)
                                                                 if i % 10 == 3])
    assert prop["server_filled_units"] == len(range(3, n, 10))

    rows = await export(app_client, exp["id"], "revenue")
    assert len(rows) == n
    filled = {f"u{i}" for i in range(3, n, 10)}
    for row in rows:
        if row["unit_id"] in filled:  # the configured weight of the served variant
            assert float(row["probability"]) == {"model_a": 0.4, "model_b": 0.3,
                                                 "model_c": 0.3}[row["variant"]]
    policies = {"all_a": {"model_a": 1.0}, "all_c": {"model_c": 1.0},
                "even": {"model_a": 1 / 3, "model_b": 1 / 3, "model_c": 1 / 3},
                "tilted": {"model_a": 0.1, "model_b": 0.2, "model_c": 0.7}}
    resp = await app_client.post(f"{EXP}/{exp['id']}/counterfactual", headers=ADMIN,
                                 json={"metric": "revenue", "policies": policies})
    body = await resp.json()
    assert resp.status == 200, body
    for name, policy in policies.items():
        want = numpy_estimates(rows, policy)
        got = body["policies"][name]
        assert body["units"] == want["units"]
        assert isinstance(body["units"], int)
        assert body["logged_value"] == pytest.approx(want["logged"], rel=1e-9)
        for est in ("ips", "snips", "dr"):
            assert got[est]["value"] == pytest.approx(want[est], rel=1e-9), (name, est)
            assert got[est]["se"] == pytest.approx(want[est + "_se"], rel=1e-9), (name, est)
            lo, hi = got[est]["ci"]
            assert (lo, hi) == pytest.approx((want[est] - Z * want[est + "_se"],
                                              want[est] + Z * want[est + "_se"]), rel=1e-9)
            assert got[est]["anytime_ci"][0] < lo and got[est]["anytime_ci"][1] > hi
        assert got["ess"] == pytest.approx(want["ess"], rel=1e-9) and got["support"] is True
    # The snapshot's weighted means sit beside the plain ones.
    for k in keys:
        cell = prop["metrics"]["revenue"][k]
        assert cell["weighted_mean"] is not None and cell["mean"] is not None


async def test_log_exposure_stores_the_answers_probability(app_client: TestClient) -> None:
    exp = await launched(app_client, key="logged", variants=THREE,
                         overrides={"vip": "model_c"})
    answers = {}
    for unit in ["vip", *(f"u{i}" for i in range(40))]:
        resp = await app_client.post("/api/v1/assign", headers=CLIENT, json={
            "experiment": "logged", "unit_id": unit, "log_exposure": True})
        a = await resp.json()
        answers[unit] = a
    assert answers["vip"]["probability"] == 1.0  # an override is forced
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        rows = {r["unit_id"]: r for r in await export(app_client, exp["id"], "conversion")}
        if len(rows) == len(answers) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert len(rows) == len(answers)
    for unit, a in answers.items():
        assert rows[unit]["variant"] == a["variant"]
        assert float(rows[unit]["probability"]) == a["probability"]


@pytest.mark.parametrize("bad", [0, 1.5, -0.2, "0.5", True, None])
async def test_a_bad_probability_is_422_naming_the_event_and_field(app_client: TestClient,
                                                                  bad: Any) -> None:
    await launched(app_client, key="probs", variants=THREE)
    ok = {"type": "exposure", "experiment": "probs", "unit_id": "u1", "variant": "model_a",
          "probability": 0.4}
    bad_ev = {**ok, "unit_id": "u2", "probability": bad}
    if bad is None:
        bad_ev["probability"] = float("nan")
        resp = await app_client.post("/api/v1/events", headers={**CLIENT, "Content-Type":
                                     "application/json"},
                                     data='{"events": [' + ", ".join([
                                         '{"type": "exposure", "experiment": "probs", '
                                         '"unit_id": "u1", "variant": "model_a"}',
                                         '{"type": "exposure", "experiment": "probs", '
                                         '"unit_id": "u2", "variant": "model_a", '
                                         '"probability": NaN}']) + "]}")
        assert resp.status in (400, 422), await resp.text()
        return
    status, body = await send(app_client, [ok, bad_ev])
    assert status == 422, body
    assert "events[1].probability" in body["error"]["fields"], body
    # Nothing of the batch was stored.
    resp = await app_client.get("/api/v1/experiments/probs/units.csv?metric=conversion",
                                headers=ADMIN)
    assert (await resp.text()).count("\n") == 1


async def test_counterfactual_request_errors(app_client: TestClient) -> None:
    exp = await launched(app_client, key="cf", variants=THREE)
    status, body = await send(app_client, [
        {"type": "exposure", "experiment": "cf", "unit_id": f"u{i}",
         "variant": THREE[i % 3]["key"], "probability": 0.3} for i in range(30)])
    assert status == 202, body
    await app_client.app[RECOMPUTE].tick()
    url = f"{EXP}/{exp['id']}/counterfactual"
    cases = [
        ({"metric": "conversion", "policies": {"x": {"model_z": 1.0}}}, "policies.x.model_z"),
        ({"metric": "conversion", "policies": {"x": {"model_a": 0.5}}}, "policies.x"),
        ({"metric": "nope", "policies": {"x": {"model_a": 1.0}}}, "metric"),
        ({"metric": "conversion", "policies": {}}, "policies"),
        ({"metric": "conversion", "policies": {"x": {"model_a": -1}}}, "policies.x.model_a"),
    ]
    for req, field in cases:
        resp = await app_client.post(url, json=req, headers=ADMIN)
        body = await resp.json()
        assert resp.status == 422, (req, body)
        assert field in body["error"]["fields"], (req, body)
    resp = await app_client.post(url, headers=ADMIN, json={
        "metric": "conversion", "policies": {"x": {"model_a": 1.0}}})
    body = await resp.json()
    assert resp.status == 200 and body["policies"]["x"]["support"] is True
