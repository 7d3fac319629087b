"""A guardrail end to end on a real server with two workers: events through the API, an error
rate that jumps on one model, the recompute leader trips the guardrail and pauses the
experiment, and every assign answer of both workers says `paused` within a second of the trip;
the webhook receiver gets exactly one POST and the audit log has the entry. And the live
simulation's incident scenario against a real server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from litmus import payloads
from tests.conftest import ADMIN, ADMIN_SECRET, CLIENT, experiment_payload
from tests.integration.test_guardrails import Receiver
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow

EXP = "/api/v1/experiments"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "live_bandit_simulation.py"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def call(s: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with s.request(method, url, **kw) as resp:
        return resp.status, await resp.json()


async def is_leader(s: aiohttp.ClientSession, base: str) -> bool:
    """Whether the worker behind this session's one connection holds the recompute lock."""
    async with s.get(base + "/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("litmus_recompute_leader "):
                return float(line.split()[-1]) == 1.0
    raise AssertionError("no litmus_recompute_leader in /metrics")


async def send_units(s: aiohttp.ClientSession, base: str, key: str, prefix: str,
                     units: int, rates: dict[str, float]) -> None:
    """`units` exposed units per variant, round(units·rate) of them failing (errors = 1)."""
    batch: list[dict[str, Any]] = []
    for variant, rate in rates.items():
        failing = round(units * rate)
        for i in range(units):
            unit = f"{prefix}-{variant}-{i}"
            batch.append(payloads.exposure(key, unit, variant))
            # Spread the failures over the units rather than bunching them at the start.
            if i * failing // units != (i + 1) * failing // units:
                batch.append(payloads.metric(key, unit, "errors", 1.0))
    for start in range(0, len(batch), 5000):
        status, body = await call(s, "POST", base + "/api/v1/events",
                                  json=payloads.events(batch[start:start + 5000]), headers=CLIENT)
        assert status == 202, body


async def test_a_tripped_guardrail_pauses_every_worker_within_a_second(
        database_url: str, tmp_path: Path, receiver: Receiver) -> None:
    server = ServerProcess(database_url, tmp_path / "srv", workers=2, env={
        "LITMUS_ALERT_WEBHOOK_URL": receiver.url, "LITMUS_ASSIGN_PORT": "0",
        "LITMUS_RECOMPUTE_INTERVAL_S": "0.5"}).start()
    base = server.base_url
    sessions: list[aiohttp.ClientSession] = []
    try:
        async with aiohttp.ClientSession() as s:
            status, exp = await call(s, "POST", base + EXP, headers=ADMIN, json=experiment_payload(
                key="guarded", variants=[{"key": "model_a", "weight": 0.5},
                                         {"key": "model_b", "weight": 0.5}],
                metrics={"primary": "errors", "definitions": {"errors": {"direction": "decrease"}},
                         "guardrails": [{"metric": "errors", "action": "pause"}]}))
            assert status == 201, exp
            status, _ = await call(s, "POST", base + f"{EXP}/{exp['id']}/launch", headers=ADMIN,
                                   json={"ramp": 1})
            assert status == 200

            # One keep-alive connection per session: find one on each worker (the leader's
            # /metrics says 1, the other worker's 0). First the leader's, so that a 0 afterwards
            # means the other worker rather than a worker before the lock was taken. The server
            # answers /healthz once its first worker listens; on a busy machine the second binds
            # the port seconds later, so keep opening connections (each lands on a listening
            # worker at random), closing the ones not kept.
            by_role: dict[bool, aiohttp.ClientSession] = {}
            deadline = time.monotonic() + 60
            for wanted in (True, False):
                while wanted not in by_role and time.monotonic() < deadline:
                    fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
                    if await is_leader(fresh, base) == wanted:
                        by_role[wanted] = fresh
                        sessions.append(fresh)
                    else:
                        await fresh.close()
                        await asyncio.sleep(0.05)
            assert len(by_role) == 2, "new connections never reached both workers in 60 s"
            workers = list(by_role.values())

            # Both models fail 1%: the guardrail is ready and ok.
            await send_units(s, base, "guarded", "base", 2000, {"model_a": 0.01, "model_b": 0.01})
            deadline = time.monotonic() + 30
            while True:
                status, snap = await call(s, "GET", base + f"{EXP}/{exp['id']}/results",
                                          headers=ADMIN)
                gs = snap.get("guardrails") if status == 200 else None
                if gs and gs[0]["ready"]:
                    break
                assert time.monotonic() < deadline, snap
                await asyncio.sleep(0.2)
            assert gs[0]["status"] == "ok", gs

            # Watch both workers' answers while model_b's error rate jumps to 8%.
            answers: list[list[tuple[float, str | None]]] = [[], []]
            stop = asyncio.Event()

            async def watch(i: int, sess: aiohttp.ClientSession) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    status, r = await call(sess, "POST", base + "/api/v1/assign", headers=CLIENT,
                                           json=payloads.assign("guarded", f"w{i}-{n}"))
                    assert status == 200, r
                    answers[i].append((time.time(), r["reason"]))
                    await asyncio.sleep(0.01)

            watchers = [asyncio.create_task(watch(i, w)) for i, w in enumerate(workers)]
            await send_units(s, base, "guarded", "jump", 4000, {"model_a": 0.01, "model_b": 0.08})
            deadline = time.monotonic() + 60
            while True:
                status, snap = await call(s, "GET", base + f"{EXP}/{exp['id']}/results",
                                          headers=ADMIN)
                if snap["guardrails"][0]["status"] == "tripped":
                    break
                assert time.monotonic() < deadline, snap["guardrails"]
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # every answer from here on must say paused
            stop.set()
            await asyncio.gather(*watchers)

            g = snap["guardrails"][0]
            assert g["treatment"] == "model_b" and g["interval"][0] > 0
            tripped = datetime.fromisoformat(g["tripped_at"].replace("Z", "+00:00")).timestamp()
            lags = []
            for i, seen in enumerate(answers):
                assert seen and seen[0][1] == "assigned", seen[:3]
                last_running = max(t for t, reason in seen if reason != "paused")
                first_paused = min(t for t, reason in seen if reason == "paused")
                # Once paused, never running again.
                assert all(reason == "paused" for t, reason in seen if t >= first_paused), i
                lags.append(last_running - tripped)
                assert last_running - tripped < 1.0, (i, last_running - tripped)
            print(f"last running answer after the trip, per worker: "
                  f"{[round(x, 3) for x in lags]} s")

            status, body = await call(s, "GET", base + f"{EXP}/{exp['id']}", headers=ADMIN)
            assert body["status"] == "paused"
            status, hist = await call(s, "GET", base + f"{EXP}/{exp['id']}/history",
                                      headers=ADMIN)
            mine = [e for e in hist["history"] if e["actor"] == "guardrail"]
            assert sorted(e["action"] for e in mine) == ["guardrail_trip", "pause"]
            deadline = time.monotonic() + 10
            while not receiver.posts and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # a second POST, if any, would have come by now
            assert len(receiver.posts) == 1, receiver.posts
            assert receiver.posts[0]["experiment_id"] == exp["id"]
            assert receiver.posts[0]["status"] == "paused"
            metrics_text = ""
            for sess in workers:
                async with sess.get(base + "/metrics") as resp:
                    metrics_text += await resp.text()
            assert ('litmus_guardrail_trips_total{action="pause",experiment="guarded",'
                    'metric="errors"} 1.0') in metrics_text
    finally:
        for sess in sessions:
            await sess.close()
        server.stop()
    assert "Traceback" not in server.log()


def test_the_incident_simulation_prints_a_guardrail_line(database_url: str,
                                                         tmp_path: Path) -> None:
    server = ServerProcess(database_url, tmp_path / "sim", env={
        "LITMUS_ASSIGN_PORT": "0", "LITMUS_RECOMPUTE_INTERVAL_S": "1"}).start()
    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--base-url", server.base_url, "--token", ADMIN_SECRET,
             "--scenario", "incident", "--json", "--seed", "3", "--warmup", "5",
             "--users-per-second", "400", "--snapshot-every", "1", "--max-seconds", "150"],
            capture_output=True, text=True, timeout=240, env={"PATH": "/usr/bin:/bin"})
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    events = [e["event"] for e in lines]
    assert events[0] == "started" and "incident" in events and events[-1] == "next"
    g = next(e for e in lines if e["event"] == "guardrail")
    assert events.index("guardrail") > events.index("incident")
    assert g["treatment"] == "model_b" and g["metric"] == "errors" and g["status"] == "paused"
    assert g["interval"][0] > 0 and g["message"].startswith("Paused by guardrail: errors of model_b")
    print(f"incident simulation: paused {g['seconds_after_incident']} s after the incident began")
