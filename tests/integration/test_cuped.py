"""CUPED end to end: covariates sent on exposures, kept by the fold, and each lift row's `cuped`
object equal to the regression-adjusted comparison computed with numpy on the raw units
(theta over both arms' units together, as gbstats' RegressionAdjustedStatistic)."""

from __future__ import annotations

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
TWO = [{"key": "control", "weight": 0.5, "is_control": True},
       {"key": "treatment", "weight": 0.5}]
METRICS = {"primary": "revenue", "covariates": ["pre_sessions", "pre_revenue"],
           "definitions": {"revenue": {"cuped": "pre_revenue"}}}


@pytest.fixture
async def app_client(settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(replace(settings, recompute_interval_s=3600)))


def adjusted(x: np.ndarray, y: np.ndarray, arm: np.ndarray) -> dict[str, float]:
    """The regression-adjusted difference of means and its standard error, from raw units."""
    xc, yc, xt, yt = x[arm == 0], y[arm == 0], x[arm == 1], y[arm == 1]

    def cov(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.cov(a, b, ddof=1)[0, 1])

    nc, nt = len(yc), len(yt)
    # theta over the units of both arms together (gbstats' compute_theta).
    theta = cov(x, y) / x.var(ddof=1)
    mc = yc.mean() - theta * xc.mean()
    mt = yt.mean() - theta * xt.mean()
    vc = yc.var(ddof=1) + theta**2 * xc.var(ddof=1) - 2 * theta * cov(xc, yc)
    vt = yt.var(ddof=1) + theta**2 * xt.var(ddof=1) - 2 * theta * cov(xt, yt)
    se = float(np.sqrt(vc / nc + vt / nt))
    plain = float(np.sqrt(yc.var(ddof=1) / nc + yt.var(ddof=1) / nt))
    return {"theta": float(theta), "abs_lift": float(mt - mc), "se": se,
            "variance_reduction": 1 - se**2 / plain**2}


async def test_lift_rows_carry_the_regression_adjusted_comparison(
        app_client: TestClient) -> None:
    exp = await launched(app_client, key="cuped", variants=TWO, metrics=METRICS)
    rng = np.random.default_rng(5)
    n = 2000
    arm = rng.integers(0, 2, n)
    pre = rng.gamma(2.0, 10.0, n)  # the covariate: pre-experiment revenue
    y = 0.8 * pre + rng.normal(0, 6, n) + 1.5 * arm  # correlated with it; +1.5 in treatment
    sent = rng.random(n) < 0.9  # some units' exposures send no covariate: x = 0
    x = np.where(sent, pre, 0.0)
    t0 = int(time.time() * 1000) - 3_600_000
    events: list[dict[str, Any]] = []
    for i in range(n):
        ev: dict[str, Any] = {"type": "exposure", "experiment": "cuped", "unit_id": f"u{i}",
                              "variant": TWO[arm[i]]["key"], "ts": t0 + i}
        if sent[i]:
            ev["covariates"] = {"pre_revenue": float(pre[i]), "pre_sessions": i % 7}
        events.append(ev)
        # A later exposure's covariates change nothing: the first exposure's count.
        if i % 13 == 0:
            events.append({**ev, "ts": t0 + n + i, "covariates": {"pre_revenue": 1e6}})
        events.append({"type": "metric", "experiment": "cuped", "unit_id": f"u{i}",
                       "metric": "revenue", "value": float(y[i])})
    for at in range(0, len(events), 5000):
        resp = await app_client.post("/api/v1/events", json={"events": events[at:at + 5000]},
                                     headers=CLIENT)
        assert resp.status == 202, await resp.text()
    await app_client.app[RECOMPUTE].tick()
    snap = await (await app_client.get(f"{EXP}/{exp['id']}/results", headers=ADMIN)).json()
    row = next(r for r in snap["lift"] if r["metric"] == "revenue")
    got = row["cuped"]
    assert got["covariate"] == "pre_revenue"
    want = adjusted(x, y, arm)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9), k
    # A strong covariate: most of the variance is gone, and the plain row is unchanged.
    assert got["variance_reduction"] > 0.45
    plain = y[arm == 1].mean() - y[arm == 0].mean()
    assert row["abs_lift"] == pytest.approx(plain, rel=1e-9)
    assert got["abs_ci"][0] < want["abs_lift"] < got["abs_ci"][1]
