"""Every connection Litmus opens over TCP notices a server that vanished (litmus/db/tcp.py).

A host that dies without a FIN or RST leaves an idle connection (the LISTEN one, the leader's
lock session) waiting forever and a busy one for the kernel's retransmission timeout; keepalive
and TCP_USER_TIMEOUT bound both. Seen in the cluster's `failover --isolate`
(docs/DEPLOYMENT.md): without them the LISTEN connections never noticed the old primary was gone.
Reached over TCP through tests/dbproxy.py whatever the test database's own address is."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from litmus.db import events, listen, tcp
from litmus.db.leader import LeaderLock
from litmus.db.pool import create_pool
from tests.dbproxy import DatabaseProxy


@pytest.fixture
async def tcp_url(database_url: str) -> AsyncIterator[str]:
    proxy = await DatabaseProxy(database_url).start()
    yield proxy.url
    await proxy.cut()


def options(conn: Any) -> dict[str, int]:
    sock = tcp.connection_socket(conn)
    assert sock is not None and sock.family == socket.AF_INET
    return {
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    }


WANT = {"keepalive": 1, "idle": tcp.KEEPALIVE_IDLE_S, "interval": tcp.KEEPALIVE_INTERVAL_S,
        "count": tcp.KEEPALIVE_COUNT, "user_timeout_ms": tcp.USER_TIMEOUT_MS}


async def test_every_kind_of_connection_watches_its_server(tcp_url: str) -> None:
    writer = await events.connect(tcp_url)
    listener = await listen.listen(tcp_url, listen.EXPERIMENTS_CHANNEL, lambda _p: None)
    lock = LeaderLock(tcp_url)
    pool = await create_pool(tcp_url, min_size=1, max_size=1)
    try:
        assert await lock.try_lock()
        async with pool.acquire() as pooled:
            seen = {
                "ingest writer": options(writer),
                "LISTEN": options(listener),
                "leader lock": options(lock._conn),
                "pool": options(pooled),
            }
    finally:
        await pool.close()
        await lock.close()
        await listen.close_quietly(listener)
        await writer.close()
    assert seen == dict.fromkeys(seen, WANT)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener never accepts: connections complete, and no byte ever comes back
    (a server whose host went away mid-conversation looks the same)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def test_a_multi_host_url_is_split_host_by_host() -> None:
    url = "postgresql://u:p@10.0.0.1:5432,10.0.0.2:5433/db?target_session_attrs=read-write"
    assert tcp.one_host_urls(url) == [
        "postgresql://u:p@10.0.0.1:5432/db?target_session_attrs=read-write",
        "postgresql://u:p@10.0.0.2:5433/db?target_session_attrs=read-write",
    ]
    assert tcp.one_host_urls("postgresql://u@h/db") == ["postgresql://u@h/db"]
    assert tcp.one_host_urls("postgresql://h1,h2/db") == ["postgresql://h1/db", "postgresql://h2/db"]


async def test_a_silent_first_host_does_not_keep_the_second_from_being_reached(
    tcp_url: str, silent_port: int
) -> None:
    # asyncpg alone spends its one timeout on the silent host and never tries the next one.
    at = tcp_url.index("@") + 1
    url = f"{tcp_url[:at]}127.0.0.1:{silent_port},{tcp_url[at:]}"
    with pytest.raises(TimeoutError):
        await asyncpg.connect(url, timeout=1.0)
    t0 = time.monotonic()
    conn = await tcp.connect(url, timeout=1.0)
    took = time.monotonic() - t0
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    # 1 s on the silent host, then the live one (generous: the machine may be busy).
    assert took < 9.0, f"the second host was reached after {took:.1f} s"
