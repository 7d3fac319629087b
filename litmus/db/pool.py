"""The asyncpg pool, and the embedded PostgreSQL used when DATABASE_URL is unset."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from litmus.db import tcp
from litmus.db.migrate import migrate
from litmus.settings import Settings

log = logging.getLogger("litmus.db")


def _dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """Teach a connection to speak json/jsonb with orjson."""
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


EMBEDDED_CONF = "litmus.conf"


def memory_bytes() -> int:
    """The memory this process may use: the machine's, or its container's limit if lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 1 << 30
    for limit_file in ("/sys/fs/cgroup/memory.max",  # cgroup v2
                       "/sys/fs/cgroup/memory/memory.limit_in_bytes"):  # cgroup v1
        try:
            raw = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if raw.isdigit():  # "max" (v2) or a huge number (v1) mean no limit
            total = min(total, int(raw))
    return total


def embedded_settings(memory: int | None = None) -> dict[str, str]:
    """Server settings for the embedded PostgreSQL, from the memory available.

    An eighth of the memory as shared buffers, between 128 MB and 1 GB: room for the recent
    event pages that ingestion writes and each fold reads back. Checkpoints further apart (by time and by WAL
    volume) mean fewer full-page images during COPY bursts and the results checkpoint: the
    first change of a page after a checkpoint writes the whole page to the WAL."""
    memory = memory_bytes() if memory is None else memory
    mb = max(128, min(1024, memory // 8 // (1 << 20)))
    return {"shared_buffers": f"{mb}MB", "max_wal_size": "2GB", "checkpoint_timeout": "15min"}


def _write_embedded_conf(pgdata: Path) -> None:
    """Write litmus.conf into the data folder and include it from postgresql.conf.

    Written before every start of the server, so it applies from the first start on; a process
    that finds the server already running rewrites it too, and that takes effect at the
    server's next start."""
    text = "# Written by Litmus at every start of the embedded server (litmus/db/pool.py).\n"
    text += "".join(f"{k} = '{v}'\n" for k, v in embedded_settings().items())
    conf = pgdata / EMBEDDED_CONF
    conf.write_text(text)
    main = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{EMBEDDED_CONF}'"
    if include not in main.read_text():
        with main.open("a") as f:
            f.write(f"\n{include}\n")
    owner = main.stat()
    if conf.stat().st_uid != owner.st_uid:  # running as root: the server runs as another user
        os.chown(conf, owner.st_uid, owner.st_gid)


def start_embedded(data_dir: Path, cleanup_mode: str | None = "stop", *,
                   supervise: bool = False) -> str:
    """Start (or reuse) the embedded PostgreSQL in data_dir/pg; returns its URI. Blocking.

    cleanup_mode: "stop" stops the server when the last Litmus process using it exits cleanly,
    "delete" also removes data_dir/pg, None leaves it running. With `supervise`, this process
    starts the server again whenever its postmaster dies (litmus/db/embedded.py)."""
    from litmus.db.embedded import embedded_server

    server = embedded_server(data_dir)
    server.cleanup_mode = cleanup_mode
    server.configure = _write_embedded_conf
    uri = server.start()
    if supervise:
        server.supervise()
    return uri


async def resolve_dsn(settings: Settings, *, supervise: bool = False) -> str:
    """The database to use: DATABASE_URL, else the embedded server (started on demand)."""
    if settings.database_url:
        return settings.database_url
    loop = asyncio.get_running_loop()
    uri = await loop.run_in_executor(
        None, functools.partial(start_embedded, settings.data_dir, supervise=supervise))
    log.info("embedded PostgreSQL ready in %s", settings.data_dir / "pg")
    return uri


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections decode json with orjson."""
    # tcp.connect: each host of a multi-host URL gets its own timeout; connections are watched.
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection, command_timeout=60,
        connect=tcp.connect,
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
