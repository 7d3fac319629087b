"""Several Litmus nodes behind HAProxy, PostgreSQL with a synchronous standby, across network
namespaces (scripts/cluster.sh): a primary SIGKILLed and its standby promoted, a node SIGKILLed,
and configuration changes reaching every node, all under load (docs/DEPLOYMENT.md)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster import cluster
from tests.conftest import ADMIN, CLIENT
from tests.integration.test_ingest_processes import (
    Load,
    check_exactly_once,
    launch,
    run_load,
    stored_ids,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CLUSTER_DIR = Path("/tmp/litmus-cluster-test")
NODES = 3
# A short recompute interval, so a new recompute leader shows itself soon after a failover; a
# short ingest wait, so that the 4 s without a primary outlast it and requests get 503s.
NODE_ENV = "LITMUS_RECOMPUTE_INTERVAL_S=1 LITMUS_INGEST_WAIT_S=2"
NO_PRIMARY_S = 4
PROPAGATION_LIMIT_S = 1.0
RESUME_LIMIT_S = 15.0


@pytest.fixture
def nodes() -> Iterator[int]:
    """A fresh cluster of NODES Litmus nodes for one test, removed afterwards whatever happens."""
    if os.environ.get("LITMUS_TEST_DATABASE_URL"):
        pytest.skip("the cluster test brings its own PostgreSQL servers: it runs once, in the "
                    "embedded run (LITMUS_TEST_DATABASE_URL is set)")
    reason = cluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    env = {"LITMUS_CLUSTER_DIR": str(CLUSTER_DIR), "LITMUS_CLUSTER_ENV": NODE_ENV}
    try:
        cluster.run("up", str(NODES), env=env)
        yield NODES
    finally:
        for name in [f"app{i}" for i in range(1, NODES + 1)] + ["haproxy"]:
            tail = cluster.log_tail(CLUSTER_DIR, name, 15)
            if tail:
                print(f"--- {name} (last lines)\n{tail}")
        cluster.run("down", env=env)


async def assign_reason(session: aiohttp.ClientSession, base_url: str, key: str) -> str:
    """The assign answer's reason for one unit on one node."""
    async with session.post(base_url + "/api/v1/assign", json={"experiment": key, "unit_id": "u-1"},
                            headers=CLIENT) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return str(body["reason"])


async def propagation(exp: dict[str, Any], action: str, want: str, via: int,
                      nodes: int) -> list[float]:
    """Seconds from sending `action` to node `via` until each node's assign answers `want`."""
    urls = [cluster.node_url(i) for i in range(1, nodes + 1)]
    async with aiohttp.ClientSession() as session:
        before = [await assign_reason(session, u, exp["key"]) for u in urls]
        assert want not in before, before
        seen: list[float] = [float("nan")] * nodes
        t0 = time.monotonic()

        async def poll(i: int) -> None:
            while time.monotonic() - t0 < 10.0:
                if await assign_reason(session, urls[i], exp["key"]) == want:
                    seen[i] = time.monotonic() - t0
                    return
                await asyncio.sleep(0.002)

        pollers = [asyncio.create_task(poll(i)) for i in range(nodes)]
        async with session.post(urls[via - 1] + f"/api/v1/experiments/{exp['id']}/{action}",
                                json={}, headers=ADMIN) as r:
            assert r.status == 200, await r.text()
        await asyncio.gather(*pollers)
    return seen


async def all_ready(nodes: int, within_s: float) -> float:
    """Seconds until every node's /readyz answers 200."""
    t0 = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for i in range(1, nodes + 1):
            while True:
                try:
                    async with session.get(cluster.node_url(i) + "/readyz") as r:
                        if r.status == 200:
                            break
                except (TimeoutError, aiohttp.ClientError):
                    pass
                assert time.monotonic() - t0 < within_s, f"node {i} not ready in {within_s} s"
                await asyncio.sleep(0.1)
    return time.monotonic() - t0


async def computed_after(exp_id: str, after: float, within_s: float) -> float:
    """Seconds until the experiment's results were computed after the wall time `after`."""
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - t0 < within_s:
            async with session.get(cluster.LB_URL + f"/api/v1/experiments/{exp_id}/results",
                                   headers=ADMIN) as r:
                if r.status == 200:
                    body = await r.json()
                    at = datetime.fromisoformat(body["computed_at"].replace("Z", "+00:00"))
                    if at.timestamp() > after:
                        return time.monotonic() - t0
            await asyncio.sleep(0.2)
    raise AssertionError(f"no recompute leader produced results within {within_s} s")


def only_202_and_503(load: Load) -> None:
    """Clients saw acknowledgements or 503s that say when to retry, never another error."""
    others = {s: n for s, n in load.statuses.items() if s not in (202, 503)}
    assert not others, f"clients got {others} (all answers: {load.statuses})"
    assert load.retry_after == load.refused, "every 503 carries Retry-After"


def test_a_pause_through_one_node_reaches_every_node_within_a_second(nodes: int) -> None:
    async def scenario() -> tuple[list[float], list[float]]:
        exp = await launch(cluster.node_url(1))
        await all_ready(nodes, 10)
        paused = await propagation(exp, "pause", "paused", via=1, nodes=nodes)
        resumed = await propagation(exp, "launch", "assigned", via=nodes, nodes=nodes)
        return paused, resumed

    paused, resumed = cluster.in_client_namespace(scenario)
    print(f"pause through node 1 seen by nodes 1..{nodes} after "
          f"{', '.join(f'{s * 1000:.0f}' for s in paused)} ms; resume through node {nodes}: "
          f"{', '.join(f'{s * 1000:.0f}' for s in resumed)} ms")
    assert max(paused) <= PROPAGATION_LIMIT_S, paused
    assert max(resumed) <= PROPAGATION_LIMIT_S, resumed


def test_a_node_killed_mid_load_loses_nothing_acknowledged_and_the_others_serve(
    nodes: int,
) -> None:
    async def scenario() -> tuple[Load, float, dict[str, int]]:
        await launch(cluster.LB_URL)
        load = Load()
        stop = asyncio.Event()
        t0 = time.monotonic()
        task = asyncio.create_task(run_load(cluster.LB_URL, stop, load, tag="nk"))
        await asyncio.sleep(3.0)
        loop = asyncio.get_running_loop()
        killed = time.monotonic() - t0
        await loop.run_in_executor(None, lambda: cluster.run("kill-node", "2"))
        await asyncio.sleep(5.0)
        stop.set()
        await task
        return load, killed, await stored_ids(cluster.dsn())

    load, killed_at, stored = cluster.in_client_namespace(scenario)
    after = [t for t in load.acked_after.values() if t > killed_at + 1.0]
    print(f"node kill: statuses {load.statuses}; acked {len(load.acked)}, "
          f"{len(after)} of them more than 1 s after the kill; no answer for {len(load.lost)}; "
          f"stored {len(stored)}")
    check_exactly_once(load, stored)
    assert len(after) > 500, "the remaining nodes go on serving"
    only_202_and_503(load)
    assert not load.lost, "HAProxy resends what the killed node never answered"


def test_primary_killed_and_standby_promoted_loses_nothing_acknowledged(nodes: int) -> None:
    env = {"LITMUS_CLUSTER_DIR": str(CLUSTER_DIR)}

    async def scenario() -> dict[str, Any]:
        exp = await launch(cluster.LB_URL)
        load = Load()
        stop = asyncio.Event()
        t0 = time.monotonic()
        task = asyncio.create_task(run_load(cluster.LB_URL, stop, load, tag="fo"))
        await asyncio.sleep(3.0)
        loop = asyncio.get_running_loop()
        # Kill, then NO_PRIMARY_S in which nothing can commit (events wait, then 503), promote.
        await loop.run_in_executor(
            None, lambda: cluster.run("failover", str(NO_PRIMARY_S), env=env))
        wall, mono = time.time(), time.monotonic()
        killed = mono - (wall - float((CLUSTER_DIR / "killed_at").read_text())) - t0
        promoted_wall = float((CLUSTER_DIR / "promoted_at").read_text())
        promoted = mono - (wall - promoted_wall) - t0
        await asyncio.sleep(8.0)
        stop.set()
        await task
        out: dict[str, Any] = {"load": load, "killed": killed, "promoted": promoted}
        out["ready_s"] = await all_ready(nodes, 15)
        out["stored"] = await stored_ids(cluster.dsn())
        out["leader_s"] = await computed_after(exp["id"], promoted_wall, 20)
        out["paused"] = await propagation(exp, "pause", "paused", via=2, nodes=nodes)
        out["resumed"] = await propagation(exp, "launch", "assigned", via=1, nodes=nodes)
        return out

    out = cluster.in_client_namespace(scenario)
    load: Load = out["load"]
    after = sorted(t for t in load.acked_after.values() if t > out["promoted"])
    resume_s = after[0] - out["promoted"] if after else float("inf")
    print(f"failover: statuses {load.statuses}; acked {len(load.acked)}; refused "
          f"{len(load.refused)} (of them stored all the same: "
          f"{len(load.refused & out['stored'].keys())}); no answer {len(load.lost)}; stored {len(out['stored'])}; "
          f"first 202 {resume_s:.2f} s after the promotion ({out['promoted'] - out['killed']:.1f} s "
          f"after the kill); {len(after)} acked after it; results recomputed "
          f"{out['leader_s']:.1f} s after the nodes were checked ready; pause then resume seen by "
          f"every node after {max(out['paused']) * 1000:.0f} ms, {max(out['resumed']) * 1000:.0f} ms")
    check_exactly_once(load, out["stored"])
    assert resume_s <= RESUME_LIMIT_S, f"ingestion resumed {resume_s:.1f} s after the promotion"
    assert len(after) > 500, "ingestion goes on after the promotion"
    only_202_and_503(load)
    assert load.statuses.get(503, 0) > 0, "requests past the ingest wait were answered 503"
    assert not load.lost, "no request was left without an answer"
    assert max(out["paused"]) <= PROPAGATION_LIMIT_S, out["paused"]
    assert max(out["resumed"]) <= PROPAGATION_LIMIT_S, out["resumed"]
