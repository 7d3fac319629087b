"""Read-only queries of the operations endpoints."""

from __future__ import annotations

import asyncio
from functools import partial

import asyncpg

from litmus.db.queries import query

q = partial(query, "ops")


async def snapshot_age(pool: asyncpg.Pool, timeout_s: float = 1.0) -> float | None:
    """Seconds since the stalest running experiment's results were computed (None: none runs)."""
    # wait_for also bounds the wait for a free connection, which the query timeout does not.
    value = await asyncio.wait_for(pool.fetchval(q("snapshot_age")), timeout_s)
    return None if value is None else float(value)


async def ping(pool: asyncpg.Pool, timeout: float = 2.0) -> None:
    """Raise unless the database answers a trivial query within `timeout` seconds."""
    await pool.fetchval(q("ping"), timeout=timeout)
