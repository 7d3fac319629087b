"""Lift over time: every recompute stores its lift rows as the point of its timeline bucket (a
later recompute in the same bucket replaces it), and GET .../results/history returns the points
oldest first, each equal to the lift table of the snapshot it came from."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from litmus.app import create_app
from litmus.core.snapshot import HISTORY_FIELDS
from litmus.core.times import iso
from litmus.db import results as db_results
from litmus.keys import POOL, RECOMPUTE
from litmus.services.recompute import SLOT_ORIGIN
from litmus.settings import Settings
from tests.conftest import ADMIN, CLIENT, experiment_payload, launched

TWO = [{"key": "control", "weight": 0.5, "is_control": True},
       {"key": "treatment", "weight": 0.5}]


@pytest.fixture
async def app_client(settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(replace(settings, recompute_interval_s=3600)))


async def _send(c: TestClient, start: int, n: int, lift: float) -> None:
    events: list[dict[str, Any]] = []
    for i in range(start, start + n):
        arm = i % 2
        events.append({"type": "exposure", "experiment": "hist", "unit_id": f"u{i}",
                       "variant": TWO[arm]["key"]})
        events.append({"type": "metric", "experiment": "hist", "unit_id": f"u{i}",
                       "metric": "revenue", "value": 10.0 + (i % 7) + lift * arm})
    resp = await c.post("/api/v1/events", json={"events": events}, headers=CLIENT)
    assert resp.status == 202, await resp.text()


async def _get(c: TestClient, path: str) -> Any:
    resp = await c.get(path, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def _rows(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: row[k] for k in HISTORY_FIELDS} for row in snapshot["lift"]]


async def test_one_point_per_bucket_equal_to_the_snapshots_lift(app_client: TestClient) -> None:
    c = app_client
    exp = await launched(c, key="hist", variants=TWO, metrics={"primary": "revenue"})
    base = f"/api/v1/experiments/{exp['id']}"
    assert (await _get(c, base + "/results/history"))["points"] == []

    async def history() -> dict[str, Any]:
        # The points of the ticks below (the app's own first tick may add one at the real time,
        # before them: without events it adds none).
        out = await _get(c, base + "/results/history")
        out["points"] = [p for p in out["points"] if p["t"] >= iso(t1)]
        return dict(out)

    # Young experiments use 10 s buckets: t1 and t1 + 2 s share one, t1 + 20 s is the next.
    now = datetime.now(UTC) + timedelta(seconds=30)
    grid = (now - SLOT_ORIGIN).total_seconds()
    t1 = SLOT_ORIGIN + timedelta(seconds=10 * math.floor(grid / 10) + 1)
    recompute = c.app[RECOMPUTE]

    await _send(c, 0, 200, 1.0)
    await recompute.tick(now=t1)
    first = await _get(c, base + "/results")
    await _send(c, 200, 200, 2.0)
    await recompute.tick(now=t1 + timedelta(seconds=2))
    second = await _get(c, base + "/results")
    hist = await history()
    assert hist["experiment_key"] == "hist"
    assert len(hist["points"]) == 1  # the same bucket: replaced
    assert hist["points"][0] == {"t": iso(t1 + timedelta(seconds=2)), "rows": _rows(second)}
    assert _rows(first) != _rows(second)

    await _send(c, 400, 200, 3.0)
    await recompute.tick(now=t1 + timedelta(seconds=20))
    third = await _get(c, base + "/results")
    hist = await history()
    assert [p["t"] for p in hist["points"]] == [iso(t1 + timedelta(seconds=2)),
                                               iso(t1 + timedelta(seconds=20))]
    assert hist["points"][0]["rows"] == _rows(second)
    assert hist["points"][1]["rows"] == _rows(third)
    row = hist["points"][1]["rows"][0]
    assert (row["metric"], row["treatment"], row["treatment_units"]) == ("revenue", "treatment",
                                                                         300)


async def test_an_older_recompute_never_replaces_a_newer_point(app_client: TestClient) -> None:
    exp = await launched(app_client, key="hist", variants=TWO)
    pool = app_client.app[POOL]
    bucket = datetime(2026, 1, 1, tzinfo=UTC)
    newer = [{"metric": "m", "rel_lift": 0.2}]
    async with pool.acquire() as conn:
        await db_results.save_lift_point(conn, exp["id"], bucket, bucket + timedelta(seconds=5),
                                         newer)
        await db_results.save_lift_point(conn, exp["id"], bucket, bucket + timedelta(seconds=3),
                                         [{"metric": "m", "rel_lift": 0.1}])
    assert await db_results.lift_history(pool, exp["id"]) == [
        {"t": iso(bucket + timedelta(seconds=5)), "rows": newer}]


async def test_history_of_an_unknown_experiment_is_404_and_a_draft_has_none(
        app_client: TestClient) -> None:
    resp = await app_client.get("/api/v1/experiments/00000000-0000-0000-0000-000000000000"
                                "/results/history", headers=ADMIN)
    assert resp.status == 404
    resp = await app_client.post("/api/v1/experiments", json=experiment_payload(key="d"),
                                 headers=ADMIN)
    draft = await resp.json()
    hist = await _get(app_client, f"/api/v1/experiments/{draft['id']}/results/history")
    assert hist["points"] == []
