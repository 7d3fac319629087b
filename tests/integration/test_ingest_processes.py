"""Ingestion across real process events: SIGKILL, SIGTERM drain, a PostgreSQL restart mid-load."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from litmus.db.embedded import EmbeddedServer, embedded_server
from litmus.db.pool import start_embedded
from tests.conftest import ADMIN, CLIENT, experiment_payload
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow
TYPED = "/api/v1/events"


@dataclass
class Load:
    """What a load run sent and what the server answered."""

    acked: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)  # no answer (connection dropped)
    statuses: dict[int, int] = field(default_factory=dict)
    retry_after: set[str] = field(default_factory=set)
    acked_after: dict[str, float] = field(default_factory=dict)


async def launch(base_url: str, key: str = "ranker") -> dict[str, Any]:
    """Create and launch an experiment through the API."""
    async with aiohttp.ClientSession() as s:
        async with s.post(base_url + "/api/v1/experiments", json=experiment_payload(key=key),
                          headers=ADMIN) as r:
            assert r.status == 201, await r.text()
            exp: dict[str, Any] = await r.json()
        async with s.post(base_url + f"/api/v1/experiments/{exp['id']}/launch", json={"ramp": 1},
                          headers=ADMIN) as r:
            assert r.status == 200, await r.text()
    await asyncio.sleep(0.3)  # the registry hears about it through NOTIFY
    return exp


def batch(tag: str, n: int, size: int) -> tuple[list[str], dict[str, Any]]:
    """One batch of exposures and conversions with unique event ids."""
    ids, events = [], []
    for j in range(size):
        eid = f"{tag}-{n}-{j}"
        ids.append(eid)
        if j % 3 == 2:
            events.append({"type": "conversion", "experiment": "ranker", "unit_id": f"u{n}-{j}",
                           "event_id": eid})
        else:
            events.append({"type": "exposure", "experiment": "ranker", "unit_id": f"u{n}-{j}",
                           "variant": "model_a", "event_id": eid})
    return ids, {"events": events}


async def run_load(base_url: str, stop: asyncio.Event, load: Load, *, tag: str = "e",
                   concurrency: int = 8, size: int = 50, query: str = "") -> None:
    """Send batches until `stop`, recording every event id by outcome."""
    counter = iter(range(10**9))
    t0 = time.monotonic()

    async def worker(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            ids, body = batch(tag, next(counter), size)
            try:
                async with session.post(base_url + TYPED + query, json=body, headers=CLIENT) as r:
                    load.statuses[r.status] = load.statuses.get(r.status, 0) + 1
                    if r.status == 202:
                        load.acked.update(ids)
                        for i in ids:
                            load.acked_after[i] = time.monotonic() - t0
                    else:
                        load.refused.update(ids)
                        if "Retry-After" in r.headers:
                            load.retry_after.update(ids)
                        await asyncio.sleep(0.05)
            except (TimeoutError, aiohttp.ClientError):
                load.lost.update(ids)
                await asyncio.sleep(0.05)

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


async def stored_ids(dsn: str) -> dict[str, int]:
    """event_id -> how many rows hold it, over both event tables."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT event_id, count(*) AS n FROM (SELECT event_id FROM exposures UNION ALL "
            "SELECT event_id FROM metric_events) e GROUP BY event_id")
    finally:
        await conn.close()
    return {r["event_id"]: int(r["n"]) for r in rows}


def check_exactly_once(load: Load, stored: dict[str, int]) -> None:
    missing = load.acked - stored.keys()
    assert not missing, f"{len(missing)} acknowledged events are missing, e.g. {sorted(missing)[:5]}"
    doubled = {k: n for k, n in stored.items() if n > 1}
    assert not doubled, f"events stored twice: {list(doubled.items())[:5]}"
    unknown = stored.keys() - load.acked - load.refused - load.lost
    assert not unknown, f"stored events nobody sent: {sorted(unknown)[:5]}"


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(database_url, tmp_path / "srv")
    yield srv
    srv.stop()


async def test_every_acknowledged_event_survives_sigkill(
    server: ServerProcess, database_url: str, tmp_path: Path
) -> None:
    server.start()
    await launch(server.base_url)
    load = Load()
    stop = asyncio.Event()
    task = asyncio.create_task(run_load(server.base_url, stop, load))
    await asyncio.sleep(2.0)
    server.signal(signal.SIGKILL)
    server.wait(10)
    stop.set()
    await task
    assert len(load.acked) > 1000, load.statuses
    # The kill may land between COMMIT and the answer: such events may be stored, unacknowledged.
    check_exactly_once(load, await stored_ids(database_url))
    # A restarted server takes events again, and the killed one lost nothing acknowledged.
    restarted = ServerProcess(database_url, tmp_path / "srv2")
    restarted.start()
    try:
        load2 = Load()
        stop2 = asyncio.Event()
        task = asyncio.create_task(run_load(restarted.base_url, stop2, load2, tag="after"))
        await asyncio.sleep(0.5)
        stop2.set()
        await task
        assert load2.acked and not load2.lost
        stored = await stored_ids(database_url)
        assert load.acked <= stored.keys() and load2.acked <= stored.keys()
    finally:
        restarted.stop()
    print(f"acked before SIGKILL: {len(load.acked)}, in flight at the kill: {len(load.lost)}")


async def test_sigterm_drains_everything_accepted_and_exits_0(
    database_url: str, tmp_path: Path
) -> None:
    # Flushes only by age (3 s): at SIGTERM everything accepted is still in memory.
    srv = ServerProcess(database_url, tmp_path / "srv", env={
        "LITMUS_INGEST_FLUSH_AGE_MS": "3000", "LITMUS_INGEST_FLUSH_EVENTS": "1000000"})
    srv.start()
    try:
        await launch(srv.base_url)
        fire_and_forget = Load()
        async with aiohttp.ClientSession() as s:
            for n in range(20):
                ids, body = batch("ff", n, 500)
                async with s.post(srv.base_url + TYPED + "?wait=false", json=body,
                                  headers=CLIENT) as r:
                    assert r.status == 202
                    fire_and_forget.acked.update(ids)

            waiting = Load()

            async def durable(n: int) -> None:
                ids, body = batch("w", n, 100)
                async with s.post(srv.base_url + TYPED, json=body, headers=CLIENT) as r:
                    waiting.statuses[r.status] = waiting.statuses.get(r.status, 0) + 1
                    if r.status == 202:
                        waiting.acked.update(ids)

            t0 = time.monotonic()
            pending = [asyncio.create_task(durable(n)) for n in range(5)]
            await asyncio.sleep(0.3)
            conn = await asyncpg.connect(database_url)
            try:
                assert await conn.fetchval("SELECT count(*) FROM exposures") == 0, "flushed too early"
            finally:
                await conn.close()
            srv.signal(signal.SIGTERM)
            await asyncio.gather(*pending)
            code = await asyncio.get_running_loop().run_in_executor(None, srv.wait, 30)
            took = time.monotonic() - t0
    finally:
        srv.stop()
    assert code == 0, srv.log()
    assert waiting.statuses == {202: 5}, "requests waiting at SIGTERM are answered after the flush"
    stored = await stored_ids(database_url)
    assert fire_and_forget.acked <= stored.keys()
    assert waiting.acked <= stored.keys()
    assert len(stored) == 20 * 500 + 5 * 100
    assert took < 3.0, "the drain flushes at once rather than waiting for the flush age"
    assert "ingest drained" in srv.log()


@pytest.fixture
def private_pg() -> Iterator[tuple[str, EmbeddedServer]]:
    """A throwaway embedded PostgreSQL this test may stop and start."""
    folder = Path(tempfile.mkdtemp(prefix="litmus-pgrestart-"))
    uri = start_embedded(folder, cleanup_mode="delete")
    server = embedded_server(folder)
    yield uri, server
    server.close()  # stops it and deletes its data folder
    shutil.rmtree(folder, ignore_errors=True)


async def test_postgres_restart_mid_load_loses_nothing_acknowledged(
    private_pg: tuple[str, EmbeddedServer], tmp_path: Path
) -> None:
    uri, pg = private_pg
    srv = ServerProcess(uri, tmp_path / "srv", env={"LITMUS_INGEST_WAIT_S": "1.5"})
    srv.start()
    try:
        await launch(srv.base_url)
        load = Load()
        stop = asyncio.Event()
        task = asyncio.create_task(run_load(srv.base_url, stop, load))
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1.5)
        before = len(load.acked)
        down_at = time.monotonic()
        await loop.run_in_executor(None, pg.stop_server, "fast")
        await asyncio.sleep(3.0)
        await loop.run_in_executor(None, pg.restart_server)
        up_at = time.monotonic()
        await asyncio.sleep(3.0)
        stop.set()
        await task
        assert srv.proc is not None and srv.proc.poll() is None, "the server survived the outage"
    finally:
        srv.stop()
    t0 = up_at - down_at
    assert before > 500
    assert load.statuses.get(503, 0) > 0, f"requests in the outage get 503: {load.statuses}"
    assert load.retry_after == load.refused
    resumed = [i for i, t in load.acked_after.items() if t > 1.5 + t0 + 0.5]
    assert resumed, f"ingestion resumed by itself after the restart: {load.statuses}"
    stored = await stored_ids(uri)
    check_exactly_once(load, stored)
    refused_but_stored = len(load.refused & stored.keys())
    print(f"statuses {load.statuses}; acked {len(load.acked)}; refused {len(load.refused)}; "
          f"refused yet stored {refused_but_stored}; outage {t0:.1f} s")
