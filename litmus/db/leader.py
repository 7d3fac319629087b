"""The recompute leader's lock: a PostgreSQL advisory lock held by a session of its own.

A session-level lock is released by PostgreSQL the moment its session ends, so a leader that
dies or loses its connection lets another process take over on its next try (sql/leader.sql)."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from litmus.db import tcp
from litmus.db.queries import query

# Any constant shared by every Litmus process; distinct from the migration lock.
LEADER_LOCK = 0x4C49_5452

# What a database that cannot be reached looks like from here: a refused or reset connection, a
# server shutting down or starting up, a connection lost mid-query, no answer in time.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
    asyncpg.InternalClientError)  # "cannot switch to state": a session the server ended


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached (rather than that a query failed)."""
    return isinstance(exc, _UNREACHABLE)


class LeaderLock:
    """The advisory lock on a connection kept open between tries."""

    def __init__(self, dsn: str, key: int = LEADER_LOCK) -> None:
        self._dsn = dsn
        self._key = key
        self._conn: asyncpg.Connection | None = None

    def session_alive(self) -> bool:
        """Whether the lock's session is open (a closed one released the lock, if it held it)."""
        return self._conn is not None and not self._conn.is_closed()

    async def try_lock(self) -> bool:
        """Try for the lock without waiting, on a new session if the last one ended."""
        conn = self._conn
        if conn is None or conn.is_closed():
            self._conn = None
            self._conn = conn = await tcp.connect(self._dsn)
        return bool(await conn.fetchval(query("leader", "leader_try_lock"), self._key))

    async def close(self, timeout_s: float = 2.0) -> None:
        """End the session, which releases the lock; never raises."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout_s)
