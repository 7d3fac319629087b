"""Applies sql/migrations/*.sql in order, once each, under an advisory lock."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

from litmus.db.queries import SQL_DIR

log = logging.getLogger("litmus.migrate")
MIGRATIONS_DIR = SQL_DIR / "migrations"
# Any constant works; it only has to be the same for every Litmus process.
MIGRATION_LOCK = 0x4C49544D


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The migration files in the order they apply."""
    return sorted(p for p in directory.glob("*.sql") if p.is_file())


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration; returns the names applied by this call."""
    applied_now: list[str] = []
    # A session-level lock: a second migrator waits here, then finds nothing to do.
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in migration_files(directory):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text(encoding="utf-8"))
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            log.info("applied migration %s", path.name)
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now
