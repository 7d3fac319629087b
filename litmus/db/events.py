"""Event batches into PostgreSQL: one COPY per table per flush, with event_id dedupe."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import asyncpg

from litmus.db import tcp
from litmus.db.queries import query

# The rows of each COPY, as plain tuples in their columns' order: the ingest path builds one per
# event, and a NamedTuple costs more to build. The aliases type them; code that reads a row by
# position uses the positions named below, never a bare index.
Micros = tuple[int]
"""A time as (microseconds since 2000-01-01 UTC,): what `connect`'s timestamptz codec sends."""
EXPOSURE_COLUMNS = ("experiment_id", "unit_id", "variant", "ts", "event_id", "probability",
                    "covariate_1", "covariate_2", "covariate_3", "covariate_4", "covariate_5",
                    "attributes")
Cov = float | None
ExposureRow = tuple[str, str, int, Micros, str, float | None, Cov, Cov, Cov, Cov, Cov, str | None]
"""(experiment_id, unit_id, variant index, ts, event_id, probability: > 0 given, < 0 its
negative filled in by the server, None unknown (sql/migrations/0016); the 5 covariates by their
declared position, None for one not sent (0017; `covariate_columns`); segment attributes as
JSON object text, or None for none (0019: a text column, cast to jsonb where read))"""
EXPOSURE_COVARIATES = EXPOSURE_COLUMNS.index("covariate_1")
NO_COVARIATES: tuple[None, None, None, None, None] = (None, None, None, None, None)


def covariate_columns(cov: Sequence[float | None] | None) -> tuple[Cov, Cov, Cov, Cov, Cov]:
    """Covariates by declared position (a prefix of the 5) -> the row's 5 covariate columns."""
    if not cov:
        return NO_COVARIATES
    c = (*cov, *NO_COVARIATES[len(cov):])
    return c[0], c[1], c[2], c[3], c[4]
METRIC_COLUMNS = ("experiment_id", "unit_id", "metric", "value", "variant", "ts", "event_id")
MetricRow = tuple[str, str, str, float, int | None, Micros, str]
"""(experiment_id, unit_id, metric, value, variant index | None, ts, event_id)"""
CLAIM_COLUMNS = ("experiment_id", "kind", "event_id")
Claim = tuple[str, int, str]
"""(experiment_id, EXPOSURE_KIND or METRIC_KIND, event_id) of an event whose id the client chose."""
EXPERIMENT_ID = 0  # the experiment id's position in every row above
EXPOSURE_EVENT_ID = EXPOSURE_COLUMNS.index("event_id")
METRIC_EVENT_ID = METRIC_COLUMNS.index("event_id")
assert all(cols[EXPERIMENT_ID] == "experiment_id"
           for cols in (EXPOSURE_COLUMNS, METRIC_COLUMNS, CLAIM_COLUMNS))
# event_ids.kind of each events table (sql/migrations/0011); litmus.services.ingest uses the same.
EXPOSURE_KIND, METRIC_KIND = 0, 1


q = partial(query, "events")


@dataclass(frozen=True, slots=True)
class Stored:
    """How many rows one flush stored (repeats of an earlier event_id are not stored)."""

    exposures: int
    metrics: int


def _same(value: Any) -> Any:
    return value


async def connect(dsn: str, timeout: float = 5.0) -> asyncpg.Connection:
    """A writer connection: its staging tables, and times as (microseconds since 2000,)."""
    conn: asyncpg.Connection = await tcp.connect(dsn, timeout=timeout, command_timeout=None)
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
    exposures: Sequence[ExposureRow],
    metrics: Sequence[MetricRow],
    claims: Sequence[Claim] = (),
    requests: Sequence[tuple[int, int]] | None = None,
) -> list[Stored]:
    """Store one flush in one transaction; events whose claimed event_id exists are dropped.

    `claims` are the (experiment_id, kind, event_id) of the client-chosen ids among the rows,
    each once (kind: EXPOSURE_KIND or METRIC_KIND). `requests` splits the rows into the
    requests of a group commit, as (exposures, metrics) counts in row order (default: one
    request); the answer says what each of them had stored. Fast path: COPY the claims into
    event_ids, then the rows straight into their tables, and every row is stored. A repeated
    id breaks the primary key; then the flush is redone through staging tables with ON
    CONFLICT DO NOTHING, keeping only the events whose id was still free, counted by request."""
    if requests is None:
        requests = [(len(exposures), len(metrics))]
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
        return [Stored(e, m) for e, m in requests]
    except asyncpg.UniqueViolationError:
        pass
    claimed = set(claims)
    staged_e: list[tuple[Any, ...]] = []
    staged_m: list[tuple[Any, ...]] = []
    at_e = at_m = 0
    for req, (n_e, n_m) in enumerate(requests):
        staged_e += [(*r, (r[EXPERIMENT_ID], EXPOSURE_KIND, r[EXPOSURE_EVENT_ID]) in claimed, req)
                     for r in exposures[at_e:at_e + n_e]]
        staged_m += [(*r, (r[EXPERIMENT_ID], METRIC_KIND, r[METRIC_EVENT_ID]) in claimed, req)
                     for r in metrics[at_m:at_m + n_m]]
        at_e += n_e
        at_m += n_m
    assert at_e == len(exposures) and at_m == len(metrics), "requests must cover every row"
    async with conn.transaction():
        if staged_e:
            await conn.copy_records_to_table(
                "stage_exposures", records=staged_e, columns=(*EXPOSURE_COLUMNS, "dedupe", "req")
            )
        if staged_m:
            await conn.copy_records_to_table(
                "stage_metric_events", records=staged_m, columns=(*METRIC_COLUMNS, "dedupe", "req")
            )
        rows = await conn.fetch(q("stage_flush"))
    out = [Stored(0, 0)] * len(requests)
    for row in rows:
        out[row["req"]] = Stored(int(row["exposures"]), int(row["metrics"]))
    return out


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
