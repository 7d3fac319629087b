"""LISTEN connections: one dedicated connection per listener, outside the pool (a pooled
connection would hand the subscription to whoever acquires it next)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from litmus.db import tcp
from litmus.db.types import Connection

# Experiment changes: the `experiments` table's trigger NOTIFYs the changed id (0001_init.sql).
EXPERIMENTS_CHANNEL = "litmus_experiments"


async def listen(dsn: str, channel: str, on_payload: Callable[[str], None]) -> Connection:
    """A new connection LISTENing on `channel`; `on_payload` gets each notification's payload."""
    # Watched (db/tcp.py): an idle LISTEN connection would wait on a vanished server forever.
    conn: Connection = await tcp.connect(dsn)

    def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        on_payload(payload)

    await conn.add_listener(channel, notified)
    return conn


def is_open(conn: Connection | None) -> bool:
    """Whether a listening connection is still there."""
    return conn is not None and not conn.is_closed()


async def close_quietly(conn: Connection | None, timeout_s: float = 2.0) -> None:
    """Close a listening connection, whatever state it is in."""
    if is_open(conn):
        assert conn is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), timeout_s)
