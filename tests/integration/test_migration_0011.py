"""0011 on a database with data: client event ids become per experiment and event type."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from litmus.db import events as db_events
from litmus.db.migrate import migrate, migration_files
from litmus.services.ingest import EXPOSURE, METRIC, exposure_row, to_micros
from tests.conftest import drop_database, with_database

MIGRATION = "0011_event_ids_per_type.sql"


@pytest.fixture
async def empty_db(pg_server_url: str) -> AsyncIterator[str]:
    name = "litmus_0011_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(pg_server_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(pg_server_url, name)
    await drop_database(pg_server_url, name)


def migrations_up_to(folder: Path, last: str) -> Path:
    """A folder with the migrations numbered up to `last` ("0010"), that one included."""
    folder.mkdir()
    for path in migration_files():
        if path.name[:4] <= last:
            shutil.copy(path, folder / path.name)
    return folder


async def test_existing_claims_keep_their_type_and_new_ids_are_per_type(
    empty_db: str, tmp_path: Path
) -> None:
    exp, other = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate(conn, migrations_up_to(tmp_path / "before", "0010"))
        assert await conn.fetchval("SELECT to_regclass('event_ids') IS NOT NULL")
        # What the previous version stored: one id namespace per experiment.
        await conn.executemany(
            "INSERT INTO exposures (experiment_id, unit_id, variant, ts, event_id) "
            "VALUES ($1, 'u', 0, $2, $3)",
            [(exp, now, "x1"), (exp, now, "srv-0-1"), (other, now, "m1")])
        await conn.execute(
            "INSERT INTO metric_events (experiment_id, unit_id, metric, value, ts, event_id) "
            "VALUES ($1, 'u', 'revenue', 2.0, $2, 'm1')", exp, now)
        await conn.executemany(
            "INSERT INTO event_ids (experiment_id, event_id) VALUES ($1, $2)",
            # x1: an exposure; m1: a metric event; gone: its events' partition was dropped.
            [(exp, "x1"), (exp, "m1"), (exp, "gone"), (other, "m1")])
        applied = await migrate(conn, migrations_up_to(tmp_path / "after", "0011"))
        assert applied == [MIGRATION]
        rows = await conn.fetch("SELECT experiment_id, kind, event_id FROM event_ids "
                                "ORDER BY experiment_id = $1 DESC, event_id, kind", exp)
        assert [(r["experiment_id"] == exp, r["kind"], r["event_id"]) for r in rows] == [
            (True, 0, "gone"), (True, 1, "gone"), (True, 1, "m1"), (True, 0, "x1"),
            (False, 0, "m1")]
        assert await conn.fetchval(
            "SELECT pg_get_indexdef('event_ids_pkey'::regclass)") == (
            "CREATE UNIQUE INDEX event_ids_pkey ON public.event_ids "
            "USING btree (experiment_id, event_id, kind)")
        # Then every later migration: the writer writes today's columns.
        await migrate(conn, migrations_up_to(tmp_path / "latest", "9999"))
    finally:
        await conn.close()

    # The writer on the upgraded database: a metric may take an exposure's id and the other
    # way round; a repeat of the same type is still dropped, and counted per request.
    writer = await db_events.connect(empty_db)
    try:
        ts = to_micros(now)
        e = str(exp)
        stored = await db_events.write_batch(
            writer,
            [exposure_row(e, "u", 0, now, "m1"), exposure_row(e, "u", 0, now, "x1")],
            [(e, "u", "revenue", 1.0, None, ts, "x1"), (e, "u", "revenue", 1.0, None, ts, "m1")],
            [(e, EXPOSURE, "m1"), (e, EXPOSURE, "x1"), (e, METRIC, "x1"), (e, METRIC, "m1")],
            [(1, 1), (1, 1)],
        )
        assert stored == [db_events.Stored(1, 1), db_events.Stored(0, 0)]
        assert await writer.fetchval(
            "SELECT count(*) FROM exposures WHERE experiment_id = $1", exp) == 3
        assert await writer.fetchval(
            "SELECT count(*) FROM metric_events WHERE experiment_id = $1", exp) == 2
    finally:
        await writer.close()
