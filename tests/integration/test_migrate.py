"""Migrations: applied in order, once each, even with two migrators at the same moment."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from litmus.db.migrate import migrate, migration_files
from tests.conftest import drop_database, with_database


@pytest.fixture
async def empty_db(pg_server_url: str) -> AsyncIterator[str]:
    name = "litmus_empty_" + str(id(object()))
    conn = await asyncpg.connect(pg_server_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(pg_server_url, name)
    await drop_database(pg_server_url, name)


async def test_two_concurrent_migrators_apply_each_once(empty_db: str) -> None:
    c1, c2 = await asyncpg.connect(empty_db), await asyncpg.connect(empty_db)
    try:
        r1, r2 = await asyncio.gather(migrate(c1), migrate(c2))
        expected = [p.name for p in migration_files()]
        assert sorted(r1 + r2) == expected
        assert not (set(r1) & set(r2))
        rows = await c1.fetch("SELECT name FROM schema_migrations ORDER BY name")
        assert [r["name"] for r in rows] == expected
        assert await migrate(c1) == []
        assert await c1.fetchval("SELECT to_regclass('experiments') IS NOT NULL")
    finally:
        await c1.close()
        await c2.close()


def test_embedded_settings_follow_the_memory() -> None:
    from litmus.db.pool import embedded_settings

    gib = 1 << 30
    assert embedded_settings(512 << 20)["shared_buffers"] == "128MB"  # never below the default
    assert embedded_settings(4 * gib)["shared_buffers"] == "512MB"  # an eighth of the memory
    assert embedded_settings(24 * gib)["shared_buffers"] == "1024MB"  # at most 1 GB


def test_container_memory_limit_counts(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from litmus.db import pool

    real = pool.Path
    limit = tmp_path / "memory.max"
    limit.write_text(f"{2 << 30}\n")  # a 2 GiB container on a bigger machine
    monkeypatch.setattr(pool, "Path", lambda p: limit if p == "/sys/fs/cgroup/memory.max"
                        else real("/nonexistent"))
    assert pool.memory_bytes() == 2 << 30
    assert pool.embedded_settings()["shared_buffers"] == "256MB"
    limit.write_text("max\n")  # no limit: the machine's memory
    assert pool.memory_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


async def test_the_embedded_server_runs_with_them(pg_server_url: str) -> None:
    from litmus.db.pool import embedded_settings

    if os.environ.get("LITMUS_TEST_DATABASE_URL"):
        pytest.skip("the suite runs against LITMUS_TEST_DATABASE_URL, not the embedded server")
    conn = await asyncpg.connect(pg_server_url)
    try:
        for name, value in embedded_settings().items():
            # Both sides through PostgreSQL's own parser: "1024MB" is "1GB", "15min" is 900 s.
            got = await conn.fetchval("SELECT current_setting($1)", name)
            unit = await conn.fetchval("SELECT unit FROM pg_settings WHERE name = $1", name)
            if unit in ("s", "min", "ms"):
                same = await conn.fetchval("SELECT $1::text::interval = $2::text::interval", got, value)
            else:
                same = await conn.fetchval("SELECT pg_size_bytes($1) = pg_size_bytes($2)", got, value)
            assert same, (name, got, value)
    finally:
        await conn.close()
