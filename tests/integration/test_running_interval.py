"""The running anytime interval through the recompute: each tick intersects the stored
snapshot's running interval with the new anytime interval, so it never widens, and a row once
significant stays significant (docs/STATISTICS.md)."""

from __future__ import annotations

import itertools
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

TWO = [{"key": "control", "weight": 0.5, "is_control": True},
       {"key": "treatment", "weight": 0.5}]


@pytest.fixture
async def app_client(settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(replace(settings, recompute_interval_s=3600)))


async def test_the_running_interval_narrows_tick_by_tick_and_significance_stays(
        app_client: TestClient) -> None:
    exp = await launched(app_client, key="run", variants=TWO, metrics={"primary": "revenue"})
    rng = np.random.default_rng(11)
    t0 = int(time.time() * 1000) - 3_600_000
    rows: list[dict[str, Any]] = []
    start = 0
    # A strong effect first, then the opposite: today's anytime interval drifts back over 0,
    # the running one keeps what was learned.
    for batch, effect in ((400, 3.0), (400, -1.0), (400, -1.0), (400, -1.0)):
        events: list[dict[str, Any]] = []
        for i in range(start, start + batch):
            arm = i % 2
            events.append({"type": "exposure", "experiment": "run", "unit_id": f"u{i}",
                           "variant": TWO[arm]["key"], "ts": t0 + i})
            events.append({"type": "metric", "experiment": "run", "unit_id": f"u{i}",
                           "metric": "revenue", "value": float(rng.normal(10 + effect * arm, 3))})
        start += batch
        resp = await app_client.post("/api/v1/events", json={"events": events}, headers=CLIENT)
        assert resp.status == 202, await resp.text()
        await app_client.app[RECOMPUTE].tick()
        snap = await (await app_client.get(f"/api/v1/experiments/{exp['id']}/results",
                                           headers=ADMIN)).json()
        rows.append(next(r for r in snap["lift"] if r["metric"] == "revenue"))
    for before, after in itertools.pairwise(rows):
        lo0, hi0 = before["anytime_abs_ci_running"]
        lo1, hi1 = after["anytime_abs_ci_running"]
        now_lo, now_hi = after["anytime_abs_ci"]
        assert lo1 >= lo0 - 1e-12 and hi1 <= hi0 + 1e-12  # never widens
        if now_lo <= hi0 and lo0 <= now_hi:  # overlapping: exactly the intersection
            assert (lo1, hi1) == pytest.approx((max(lo0, now_lo), min(hi0, now_hi)), rel=1e-12)
        if before["significant"]:
            assert after["significant"]
        # The flag never contradicts the interval shown.
        if after["significant"]:
            assert lo1 > 0 or hi1 < 0
    assert rows[0]["significant"], rows[0]
    lo, hi = rows[-1]["anytime_abs_ci"]
    assert lo < 0 < hi, rows[-1]  # today's interval alone would say "not significant"
    assert rows[-1]["significant"], rows[-1]
