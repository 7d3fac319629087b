"""TCP liveness for every connection Litmus opens to PostgreSQL, and connecting host by host.

A server whose host vanishes (power loss, a network cut, a failover that fences the old
primary off) sends no FIN or RST: without these options a connection with a statement in
flight waits for the kernel's retransmission timeout (about 15 minutes), and an idle one (the
LISTEN connection, the leader's lock session) waits forever, so it never reconnects to the new
primary. With them, an unanswered write fails after USER_TIMEOUT_MS and a silent idle peer is
found after KEEPALIVE_IDLE_S + KEEPALIVE_COUNT x KEEPALIVE_INTERVAL_S; the connection then
closes as if the server had reset it, and each owner reconnects as it does after a reset
(docs/DEPLOYMENT.md). A slow statement is not affected: the server's kernel acknowledges
what it receives however long the statement runs. Unix-socket connections need none of it.

`connect` gives each host of a multi-host URL a timeout of its own, as libpq's
`connect_timeout` does: asyncpg tries the hosts in order under one timeout for all of them, so a
first host that answers nothing (a vanished primary) would use it all up and the new primary
behind it would never be tried. It changes nothing else: each host is still connected to by
asyncpg, with the URL's own parameters (`target_session_attrs` included).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_COUNT = 3
USER_TIMEOUT_MS = 10_000
HOST_TIMEOUT_S = 10.0

OPTIONS: tuple[tuple[int, int, int], ...] = tuple(
    (level, getattr(socket, name), value)
    for level, name, value in (
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        (socket.IPPROTO_TCP, "TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        (socket.IPPROTO_TCP, "TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        (socket.IPPROTO_TCP, "TCP_KEEPCNT", KEEPALIVE_COUNT),
        (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
    )
    if hasattr(socket, name)  # Linux has all of them; elsewhere, what the platform offers
)


def connection_socket(conn: Any) -> Any:
    """The socket under an asyncpg connection (asyncpg exposes no public accessor for it)."""
    transport = getattr(conn, "_transport", None)
    return None if transport is None else transport.get_extra_info("socket")


def watch(conn: Any) -> None:
    """Set keepalive and the user timeout on a TCP connection; never raises."""
    sock = connection_socket(conn)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    for level, option, value in OPTIONS:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


def one_host_urls(dsn: str) -> list[str]:
    """The URL once per host of a multi-host URL (`postgresql://u@h1:p1,h2:p2/db?...`), in order;
    any other URL as it is."""
    parts = urlsplit(dsn)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    hosts = hostlist.split(",")
    if len(hosts) < 2 or not all(hosts):
        return [dsn]
    return [urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}")) for host in hosts]


async def connect(dsn: str, *, timeout: float = HOST_TIMEOUT_S, **kwargs: Any) -> Any:
    """asyncpg.connect, each host of the URL in turn with `timeout` of its own; watched (above).

    Raises what the last host failed with. Takes asyncpg.connect's keyword arguments (the pool
    calls it in its place)."""
    urls = one_host_urls(dsn)
    last: BaseException | None = None
    for url in urls:
        try:
            conn = await asyncpg.connect(url, timeout=timeout, **kwargs)
        except (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                asyncpg.PostgresError) as exc:
            # OSError includes TimeoutError; InternalClientError "not a read-write server"
            # (TargetServerAttributeNotMatched); PostgresError "the database system is starting
            # up": the next host may be the one, as libpq would go on to it.
            last = exc
            continue
        watch(conn)
        return conn
    assert last is not None
    raise last
