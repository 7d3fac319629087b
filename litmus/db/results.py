"""Results storage: per-experiment aggregates from the per-arm tables, snapshots, bandit state.

The fold that keeps the per-arm tables up to date is in litmus/db/fold.py."""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import asyncpg

from litmus.core.bandit import BanditState
from litmus.core.snapshot import MetricAgg
from litmus.core.times import iso
from litmus.core.unitfold import HOURLY_SLOT_S
from litmus.db.queries import query
from litmus.db.types import Connection, Pool
from litmus.errors import Unavailable

q = partial(query, "queries")

log = logging.getLogger("litmus.recompute")

HOUR = timedelta(seconds=HOURLY_SLOT_S)


@dataclass(frozen=True, slots=True)
class Aggregates:
    """Everything a snapshot needs from the database, keyed by variant position."""

    exposures: dict[int, tuple[int, int]]
    metrics: dict[str, dict[int, MetricAgg]]
    unattributed: dict[str, tuple[int, float]]
    timeline: list[tuple[datetime, int, int]]


async def recompute_targets(conn: Connection, stopped_within: timedelta) -> list[str]:
    """Running and paused experiments, and those stopped within `stopped_within`."""
    return [str(r["id"]) for r in await conn.fetch(q("recompute_targets"), stopped_within)]


async def aggregates(conn: Connection, exp_id: str, bucket: timedelta,
                     origin: datetime) -> Aggregates:
    """Unit-level sufficient statistics per variant and metric for one experiment."""
    uid = uuid.UUID(exp_id)
    exposures = {
        r["variant"]: (int(r["units"]), int(r["events"]))
        for r in await conn.fetch(q("agg_exposures"), uid)
    }
    metrics: dict[str, dict[int, MetricAgg]] = {}
    unattributed: dict[str, tuple[int, float]] = {}
    for r in await conn.fetch(q("agg_metrics"), uid):
        if r["variant"] < 0:
            if r["count"]:
                unattributed[r["metric"]] = (int(r["count"]), float(r["sum"]))
            continue
        if r["units"] <= 0:
            continue
        metrics.setdefault(r["metric"], {})[r["variant"]] = MetricAgg(
            count=int(r["count"]), units=int(r["units"]), sum=float(r["sum"]),
            sum_sq=max(float(r["sum_sq"]), 0.0),
        )
    timeline = [
        (r["t"], r["variant"], int(r["units"]))
        for r in await conn.fetch(q("agg_timeline"), uid, bucket, origin,
                                  bucket % HOUR == timedelta(0))
    ]
    return Aggregates(exposures, metrics, unattributed, timeline)


async def positive_units(conn: Connection, exp_id: str, metric: str) -> dict[int, int]:
    """Per variant position, the units whose total of `metric` is above 0."""
    return {int(r["variant"]): int(r["positive"])
            for r in await conn.fetch(q("arm_positive"), uuid.UUID(exp_id), metric)}


async def bandit_updates(conn: Connection, exp_id: str) -> int:
    """How many bandit updates of this experiment are stored."""
    return int(await conn.fetchval(q("bandit_updates"), uuid.UUID(exp_id)))


async def save_snapshot(conn: Connection, exp_id: str, computed_at: datetime,
                        snapshot: dict[str, Any], anytime_p: dict[str, float]) -> None:
    """Store the latest snapshot (one row per experiment)."""
    await conn.execute(q("snapshot_upsert"), uuid.UUID(exp_id), computed_at, snapshot, anytime_p)


async def load_snapshot(conn: Pool | Connection,
                        exp_id: str) -> tuple[datetime, dict[str, Any], dict[str, float]] | None:
    """The latest stored snapshot, or None before the first recompute."""
    row = await conn.fetchrow(q("snapshot_get"), uuid.UUID(exp_id))
    if row is None:
        return None
    return row["computed_at"], row["snapshot"], row["anytime_p"]


async def load_bandit(conn: Connection, exp_id: str) -> tuple[BanditState, datetime] | None:
    """The stored bandit state and when it was computed, or None."""
    row = await conn.fetchrow(q("bandit_get"), uuid.UUID(exp_id))
    if row is None:
        return None
    state = BanditState(
        weights=row["weights"], p_best=row["p_best"], top_variant=row["top_variant"],
        converged=row["converged"], converged_at=iso(row["converged_at"]),
        converged_variant=row["converged_variant"], burn_in=row["burn_in"],
        p_feasible=row["p_feasible"],
    )
    return state, row["updated_at"]


async def save_bandit(conn: Connection, exp_id: str, state: BanditState,
                      at: datetime) -> None:
    """Store new weights (NOTIFYs every registry) and append them to the history."""
    uid = uuid.UUID(exp_id)
    converged_at = datetime.fromisoformat(state.converged_at.replace("Z", "+00:00")) \
        if state.converged_at else None
    async with conn.transaction():
        await conn.execute(q("bandit_upsert"), uid, state.weights, state.p_best, state.top_variant,
                           state.converged, converged_at, state.converged_variant, state.burn_in, at,
                           state.p_feasible)
        await conn.execute(q("bandit_history_add"), uid, at, state.weights, state.p_best)


async def bandit_history(conn: Connection, exp_id: str, limit: int = 500) -> list[dict[str, Any]]:
    """The last `limit` weight updates, oldest first."""
    rows = await conn.fetch(q("bandit_history_get"), uuid.UUID(exp_id), limit)
    return [{"t": iso(r["t"]), "weights": r["weights"], "p_best": r["p_best"]} for r in rows]


async def save_lift_point(conn: Connection, exp_id: str, bucket: datetime, computed_at: datetime,
                          rows: list[dict[str, Any]]) -> None:
    """Store this recompute's lift rows as the history point of its timeline bucket (a later
    recompute in the same bucket replaces it; an older one never does)."""
    await conn.execute(q("lift_history_put"), uuid.UUID(exp_id), bucket, computed_at, rows)


async def lift_history(conn: Pool | Connection, exp_id: str,
                       limit: int = 500) -> list[dict[str, Any]]:
    """The latest `limit` history points, oldest first: {"t", "rows"}."""
    found = await conn.fetch(q("lift_history_get"), uuid.UUID(exp_id), limit)
    return [{"t": iso(r["computed_at"]), "rows": r["rows"]} for r in found]


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """One segment's variant: exposures (metric None) or one metric's aggregates."""

    value: str | None  # None: the attribute was not set (or, with `other`, past the tracked)
    rank: int | None  # of a tracked value: 1 for the value whose first unit arrived first
    other: bool
    variant: int
    metric: str | None
    agg: MetricAgg


# Under the pool's 60 s command timeout (litmus/db/pool.py), so that PostgreSQL stops the read
# and the caller gets the message below rather than a client-side timeout.
SEGMENT_TIMEOUT_S = 50


async def _bounded(pool: Pool, name: str, *args: Any) -> list[asyncpg.Record]:
    """A breakdown query under a statement timeout: the events tables are indexed for the
    append path, so these reads scan them; past the bound the caller gets a clear 503."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(q("segment_timeout"), f"{SEGMENT_TIMEOUT_S}s")
        try:
            return list(await conn.fetch(q(name), *args))
        except asyncpg.QueryCanceledError:
            raise Unavailable(
                f"the segment breakdown read the raw events for more than {SEGMENT_TIMEOUT_S} "
                "s and was stopped: try again when the database is less busy",
                retry_after=SEGMENT_TIMEOUT_S) from None


async def segment_keys(pool: Pool, exp_id: str) -> list[str]:
    """The attribute names this experiment's exposures carry."""
    return [r["key"] for r in await _bounded(pool, "segment_keys", uuid.UUID(exp_id))]


async def segment_aggregates(pool: Pool, exp_id: str, key: str, tracked: int,
                             caps: dict[str, float]) -> list[SegmentRow]:
    """Per segment of attribute `key` (its first `tracked` values; the rest `other`) and
    variant, the exposures and each metric's aggregates, from the raw events."""
    rows = await _bounded(pool, "segment_aggregates", uuid.UUID(exp_id), key, tracked,
                          list(caps), list(caps.values()))
    return [SegmentRow(r["value"], r["rank"], r["other"], r["variant"], r["metric"],
                       MetricAgg(count=int(r["events"]), units=int(r["units"]),
                                 sum=float(r["sum"]), sum_sq=max(float(r["sum_sq"]), 0.0)))
            for r in rows]


EXPORT_CHUNK_ROWS = 5000


async def unit_rows(pool: Pool, exp_id: str, metric: str,
                    variants: list[str]) -> AsyncIterator[bytes]:
    """The units export as CSV text, a chunk of rows at a time (a server-side cursor: memory
    stays flat whatever the number of units)."""
    async with pool.acquire() as conn, conn.transaction():
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        n = 0
        async for r in conn.cursor(q("units_export"), uuid.UUID(exp_id), metric,
                                   prefetch=EXPORT_CHUNK_ROWS):
            v = r["variant"]
            p = r["probability"]
            w.writerow((r["unit_id"], variants[v] if 0 <= v < len(variants) else v,
                        "" if p is None else repr(float(p)), iso(r["ts"]), repr(float(r["value"]))))
            n += 1
            if n == EXPORT_CHUNK_ROWS:
                yield buf.getvalue().encode("utf-8")
                buf.seek(0)
                buf.truncate()
                n = 0
        if n:
            yield buf.getvalue().encode("utf-8")
