"""Read-only queries of the operations endpoints."""

from __future__ import annotations

import asyncio

import asyncpg

from litmus.db.queries import SQL_DIR, load


def q(name: str) -> str:
    """One named query of sql/ops.sql."""
    return load(SQL_DIR / "ops.sql")[name]


async def snapshot_age(pool: asyncpg.Pool, timeout_s: float = 1.0) -> float | None:
    """Seconds since the stalest running experiment's results were computed (None: none runs)."""
    # wait_for also bounds the wait for a free connection, which the query timeout does not.
    value = await asyncio.wait_for(pool.fetchval(q("snapshot_age")), timeout_s)
    return None if value is None else float(value)
