"""Fault injection that the ingestion tests leave out: PostgreSQL stalls under sustained load
against a real `litmus serve`. Requests past the bounded wait get 503 with Retry-After, the
buffer and the process's memory stay bounded, the server recovers by itself when the database
does, and every acknowledged event is stored exactly once. (SIGKILL, SIGTERM drain and a
PostgreSQL restart are in tests/integration/test_ingest_processes.py.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import ADMIN, CLIENT, experiment_payload
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow

BUFFER_EVENTS = 4000
BATCH = 200
# More senders than the buffer holds in flight (32 x 200 > 4000): both bounds engage, the
# wait (a request past LITMUS_INGEST_WAIT_S gets 503) and the size (past it, 503 at once).
SENDERS = 32


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def gauge(session: aiohttp.ClientSession, base: str,
                name: str = "litmus_ingest_buffer_events ") -> float:
    """One sample of /metrics (0 when absent)."""
    async with session.get(base + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name):
                return float(line.split()[-1])
    return 0.0


async def test_stalled_database_under_load_503s_stays_bounded_and_recovers(
    database_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(database_url, tmp_path / "srv", env={
        "LITMUS_INGEST_BUFFER_EVENTS": str(BUFFER_EVENTS), "LITMUS_INGEST_WAIT_S": "1",
        "LITMUS_LOG_LEVEL": "WARNING"}).start()
    assert server.proc is not None
    pid = server.proc.pid
    acked: list[str] = []
    statuses: dict[int, int] = {}
    missing_retry_after = 0
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.post(server.base_url + "/api/v1/experiments",
                             json=experiment_payload(key="stall"), headers=ADMIN)
            exp = await r.json()
            await s.post(server.base_url + f"/api/v1/experiments/{exp['id']}/launch",
                         json={"ramp": 1}, headers=ADMIN)

            async def sender() -> None:
                nonlocal missing_retry_after
                while not stop.is_set():
                    ids = [uuid.uuid4().hex for _ in range(BATCH)]
                    body = {"events": [{"experiment": "stall", "unit_id": f"u-{i}",
                                        "variant": "model_a", "event_id": i} for i in ids]}
                    async with s.post(server.base_url + "/api/v1/events/exposure", json=body,
                                      headers=CLIENT) as resp:
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                        if resp.status == 202:
                            acked.extend(ids)
                        elif resp.status == 503:
                            if "Retry-After" not in resp.headers:
                                missing_retry_after += 1
                            await asyncio.sleep(0.05)

            senders = [asyncio.create_task(sender()) for _ in range(SENDERS)]
            await asyncio.sleep(2.0)
            assert statuses.get(202, 0) > 0, statuses
            rss_before = rss_mb(pid)
            # Stall every write to the events: the writers block on the lock like on a slow disk.
            locker = await asyncpg.connect(database_url)
            tx = locker.transaction()
            await tx.start()
            await locker.execute("LOCK TABLE exposures IN ACCESS EXCLUSIVE MODE")
            acked_before_stall = len(acked)
            peak_buffer, peak_rss = 0.0, rss_before
            t0 = time.monotonic()
            while time.monotonic() - t0 < 8.0:
                peak_buffer = max(peak_buffer, await gauge(s, server.base_url))
                peak_rss = max(peak_rss, rss_mb(pid))
                await asyncio.sleep(0.25)
            during = dict(statuses)
            acked_during_stall = len(acked) - acked_before_stall
            await tx.rollback()
            await locker.close()
            # The database is back: the server resumes by itself.
            t1 = time.monotonic()
            ok_before = statuses.get(202, 0)
            while statuses.get(202, 0) <= ok_before + 20:
                assert time.monotonic() - t1 < 20, f"never recovered: {statuses}"
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*senders)
            assert await gauge(s, server.base_url) == 0
            refused_full = await gauge(
                s, server.base_url, 'litmus_ingest_events_total{outcome="refused_full"}')
    finally:
        stop.set()
        server.stop()
    assert set(statuses) <= {202, 503}, statuses
    assert during.get(503, 0) > 0, f"a stalled database must give 503s: {during}"
    assert missing_retry_after == 0
    # Nothing was acknowledged while no write could commit: 202 means durable.
    assert acked_during_stall <= BATCH * SENDERS, acked_during_stall
    assert peak_buffer <= BUFFER_EVENTS, peak_buffer
    assert refused_full > 0, "the size bound answered some requests at once"
    print(f"stall: {during}, peak buffer {peak_buffer:.0f} events, RSS {rss_before:.0f} -> "
          f"{peak_rss:.0f} MiB, acked during the stall {acked_during_stall}, "
          f"refused at once {refused_full:.0f} events")
    # Bounded memory: the refused bodies are not kept (the senders sent tens of MiB in all).
    assert peak_rss - rss_before < 100, (rss_before, peak_rss)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT event_id, count(*) AS n FROM exposures WHERE event_id = ANY($1::text[]) "
            "GROUP BY event_id", acked)
    finally:
        await conn.close()
    assert len(rows) == len(acked), "every acknowledged event is stored"
    assert all(r["n"] == 1 for r in rows), "and stored once"
