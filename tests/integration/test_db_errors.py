"""The transient family judged on errors a real PostgreSQL raises, not on constructed ones."""

from __future__ import annotations

import asyncpg
import pytest

from litmus.db.errors import TRANSIENT, is_transient


async def raised(conn: asyncpg.Connection, sql: str) -> BaseException:
    with pytest.raises(Exception) as info:
        await conn.execute(sql)
    return info.value


async def test_a_cancelled_query_is_transient(db: asyncpg.Connection) -> None:
    await db.execute("SET statement_timeout = 50")
    err = await raised(db, "SELECT pg_sleep(5)")
    assert isinstance(err, asyncpg.QueryCanceledError)
    assert isinstance(err, TRANSIENT) and is_transient(err)


async def test_a_terminated_connection_is_transient(database_url: str,
                                                   db: asyncpg.Connection) -> None:
    victim = await asyncpg.connect(database_url)
    try:
        pid = victim.get_server_pid()
        assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
        err = await raised(victim, "SELECT 1")
        assert is_transient(err), repr(err)
    finally:
        victim.terminate()


async def test_syntax_errors_and_conflicts_are_not_transient(db: asyncpg.Connection) -> None:
    err = await raised(db, "SELEKT 1")
    assert isinstance(err, asyncpg.PostgresSyntaxError)
    assert not is_transient(err)
    await db.execute("CREATE TEMP TABLE t (k int PRIMARY KEY); INSERT INTO t VALUES (1)")
    err = await raised(db, "INSERT INTO t VALUES (1)")
    assert isinstance(err, asyncpg.UniqueViolationError)
    assert not is_transient(err)
