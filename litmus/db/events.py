"""Event batches into PostgreSQL: one COPY per table per flush, with event_id dedupe."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from litmus.db.queries import SQL_DIR, load

EXPOSURE_COLUMNS = ("experiment_id", "unit_id", "variant", "ts", "event_id")
METRIC_COLUMNS = ("experiment_id", "unit_id", "metric", "value", "variant", "ts", "event_id")
CLAIM_COLUMNS = ("experiment_id", "event_id")
# asyncpg errors that mean "the database is not there right now": retry, do not drop.
TRANSIENT = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. "cannot switch to state": a connection broken mid-COPY
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.LockNotAvailableError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


def q(name: str) -> str:
    """One named query of sql/events.sql."""
    return load(SQL_DIR / "events.sql")[name]


@dataclass(frozen=True, slots=True)
class Stored:
    """How many rows one flush stored (repeats of an earlier event_id are not stored)."""

    exposures: int
    metrics: int


def _same(value: Any) -> Any:
    return value


async def connect(dsn: str, timeout: float = 5.0) -> asyncpg.Connection:
    """A writer connection: its staging tables, and times as (microseconds since 2000,)."""
    conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=None)
    try:
        # Rows carry times as (microseconds since 2000-01-01 UTC,): encoded as is, no datetime.
        await conn.set_type_codec(
            "timestamptz", schema="pg_catalog", encoder=_same, decoder=_same, format="tuple"
        )
        await conn.execute(q("stage_create"))
    except BaseException:
        conn.terminate()
        raise
    return conn


async def write_batch(
    conn: asyncpg.Connection,
    exposures: Sequence[tuple[Any, ...]],
    metrics: Sequence[tuple[Any, ...]],
    claims: Sequence[tuple[str, str]] = (),
) -> Stored:
    """Store one flush in one transaction; events whose claimed event_id exists are dropped.

    `claims` are the (experiment_id, event_id) of the client-chosen ids among the rows, each
    once. Fast path: COPY the claims into event_ids, then the rows straight into their tables.
    A repeated id breaks the primary key; then the flush is redone through staging tables
    with ON CONFLICT DO NOTHING, keeping only the events whose id was still free."""
    try:
        async with conn.transaction():
            if claims:
                await conn.copy_records_to_table("event_ids", records=claims, columns=CLAIM_COLUMNS)
            if exposures:
                await conn.copy_records_to_table(
                    "exposures", records=exposures, columns=EXPOSURE_COLUMNS
                )
            if metrics:
                await conn.copy_records_to_table(
                    "metric_events", records=metrics, columns=METRIC_COLUMNS
                )
        return Stored(len(exposures), len(metrics))
    except asyncpg.UniqueViolationError:
        pass
    claimed = set(claims)
    async with conn.transaction():
        if exposures:
            await conn.copy_records_to_table(
                "stage_exposures",
                records=[(*r, (r[0], r[4]) in claimed) for r in exposures],
                columns=(*EXPOSURE_COLUMNS, "dedupe"),
            )
        if metrics:
            await conn.copy_records_to_table(
                "stage_metric_events",
                records=[(*r, (r[0], r[6]) in claimed) for r in metrics],
                columns=(*METRIC_COLUMNS, "dedupe"),
            )
        row = await conn.fetchrow(q("stage_flush"))
    assert row is not None
    return Stored(int(row["exposures"]), int(row["metrics"]))


async def ensure_partitions(
    conn: asyncpg.Connection | asyncpg.Pool, months_back: int = 1, months_ahead: int = 3
) -> int:
    """Create the monthly event partitions around now; returns how many were made."""
    made = await conn.fetchval(q("ensure_partitions"), months_back, months_ahead)
    return int(made or 0)


async def watermark(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """The ingest_xid below which every row is committed (see sql/events.sql)."""
    return int(await conn.fetchval(q("watermark")))


async def counts(conn: asyncpg.Connection | asyncpg.Pool, experiment_id: str) -> Stored:
    """Stored exposures and metric events of one experiment."""
    row = await conn.fetchrow(q("event_counts"), uuid.UUID(experiment_id))
    assert row is not None
    return Stored(int(row["exposures"]), int(row["metrics"]))
