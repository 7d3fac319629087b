"""Results storage: incremental per-unit folding, per-experiment aggregates, snapshots, bandit state."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from litmus.core.bandit import BanditState
from litmus.core.snapshot import MetricAgg
from litmus.db.queries import q

log = logging.getLogger("litmus.recompute")

FOLD_TIMEOUT_S = 3600.0
ANALYZE_AFTER_UNITS = 100_000
HOUR = timedelta(hours=1)  # exposure_timeline_hourly's slot width
FOLD_VERSION = 1  # what this code's fold keeps up; see sql/migrations/0009_unit_metrics_arm.sql
_summarize = True  # off once the database refuses it (the role does not own the tables)


@dataclass(frozen=True, slots=True)
class Aggregates:
    """Everything a snapshot needs from the database, keyed by variant position."""

    exposures: dict[int, tuple[int, int]]
    metrics: dict[str, dict[int, MetricAgg]]
    unattributed: dict[str, tuple[int, float]]
    timeline: list[tuple[datetime, int, int]]


@dataclass(slots=True)
class FoldStats:
    """What one fold did: the watermark range, units whose arm was set, seconds per step."""

    lo: int = 0
    hi: int = 0
    moved: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


async def fold_new_events(conn: asyncpg.Connection) -> FoldStats:
    """Fold every event committed since the watermark into the per-unit tables.

    Runs in one transaction, so a crash folds nothing twice."""
    stats = FoldStats()
    t0 = time.perf_counter()

    async def step(name: str, *args: Any) -> str:
        t = time.perf_counter()
        # A catch-up over millions of events may take minutes: no command timeout here.
        status: str = await conn.execute(q(name), *args, timeout=FOLD_TIMEOUT_S)
        stats.seconds[name] = time.perf_counter() - t
        return status

    await summarize_new_ranges(conn)
    stats.seconds["summarize"] = time.perf_counter() - t0
    # One snapshot for every statement: a stop committed mid-fold cannot cut some of them.
    async with conn.transaction(isolation="repeatable_read"):
        await conn.execute(q("fold_version_set"), str(FOLD_VERSION))  # see 0009
        row = await conn.fetchrow(q("watermark_lock"))
        if row is None:
            # Someone deleted the watermark row (an operator's manual re-fold): whatever the
            # folded tables hold can no longer be matched to events, so start from empty.
            log.warning("recompute watermark missing: refolding all events from scratch")
            await conn.execute(q("fold_reset"))
            await conn.execute(q("watermark_init"))
            row = await conn.fetchrow(q("watermark_lock"))
            assert row is not None
        lo = row["xid_lo"]
        hi = await conn.fetchval(q("snapshot_xmin"))
        if hi < lo:
            # Transaction ids went backwards: this database was restored into another cluster.
            # The watermark means nothing here; fold everything again from scratch.
            log.warning("recompute watermark %s is ahead of this cluster (%s): refolding all events",
                        lo, hi)
            await conn.execute(q("fold_reset"))
            lo = 0
        stats.lo, stats.hi = int(lo), int(max(hi, lo))
        # Hash aggregates and joins over a catch-up's (or a repair's) millions of units stay
        # in memory.
        await conn.execute("SET LOCAL work_mem = '256MB'")
        if lo > 0 and row["fold_version"] < FOLD_VERSION:
            # The last fold was made by an older Litmus (a leader of the previous version
            # during a rolling upgrade, or the data of one from before 0009): redo what it did
            # not keep up. lo = 0 means empty (or just emptied) tables: nothing to repair.
            log.warning("the last recompute fold was made by an older Litmus (fold version %s): "
                        "repairing the arms of unit_metrics and the hourly timeline",
                        row["fold_version"])
            await step("repair_metric_arms")
            await step("repair_hourly_timeline_clear")
            await step("repair_hourly_timeline")
            await conn.execute(q("watermark_set"), lo)  # records this version
        if hi > lo:
            await conn.execute(q("fold_moves_table"))
            # Order matters: first exposures decide arms, then earlier totals move with their
            # units, and only then are the new metric totals added to the units' arms.
            status = await step("fold_exposures", lo, hi)
            stats.moved = int(status.rsplit(" ", 1)[-1])
            # Row counts for the planner: few moves -> index lookups, many -> hash joins.
            await step("fold_moves_analyze")
            await step("fold_exposure_events", lo, hi)
            await step("fold_exposure_units")
            await step("fold_timeline")
            if stats.moved < ANALYZE_AFTER_UNITS:
                # A small fold: one key lookup per moved unit (see the query); a catch-up,
                # where nearly every unit moves, keeps the planner's hash joins.
                await conn.execute("SET LOCAL enable_hashjoin = off")
                await conn.execute("SET LOCAL enable_mergejoin = off")
            await step("fold_move_metrics")
            await conn.execute("SET LOCAL enable_hashjoin TO DEFAULT")
            await conn.execute("SET LOCAL enable_mergejoin TO DEFAULT")
            await step("fold_metrics", lo, hi)
            await conn.execute(q("watermark_set"), hi)
            if stats.moved >= ANALYZE_AFTER_UNITS:
                # A big fold (a catch-up) changes the per-unit tables faster than autovacuum
                # re-samples them; fresh statistics keep the next folds on key lookups.
                await step("fold_analyze_units")
    stats.seconds["total"] = time.perf_counter() - t0
    return stats


async def summarize_new_ranges(conn: asyncpg.Connection) -> int:
    """Summarize the BRIN ranges of events stored since the last call (see the query).

    Only an optimisation, so it never fails a fold and waits for no one: each partition in
    its own short transaction; one being vacuumed (which holds the lock this needs) or any
    other error skips that partition until the next fold, which then reads more pages."""
    global _summarize
    if not _summarize:
        return 0
    done = 0
    try:
        indexes = [r["index"] for r in await conn.fetch(q("xid_brin_partitions"))]
    except (asyncpg.PostgresError, TimeoutError) as exc:
        log.warning("BRIN summarization skipped: %s", exc)
        return 0
    for index in indexes:
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '200ms'")
                done += int(await conn.fetchval(q("summarize_new_ranges"), index,
                                                timeout=FOLD_TIMEOUT_S) or 0)
        except asyncpg.LockNotAvailableError:
            log.debug("BRIN summarization of %s skipped: the partition is being vacuumed", index)
        except asyncpg.InsufficientPrivilegeError as exc:
            _summarize = False  # will not change while this process runs: say it once
            log.warning("BRIN summarization turned off: %s (the database role must own the "
                        "event tables; autovacuum still summarizes them, later)", exc)
            return done
        except (asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("BRIN summarization of %s skipped: %s", index, exc)
    return done


async def recompute_targets(conn: asyncpg.Connection, stopped_within: timedelta) -> list[str]:
    """Running and paused experiments, and those stopped within `stopped_within`."""
    return [str(r["id"]) for r in await conn.fetch(q("recompute_targets"), stopped_within)]


async def aggregates(conn: asyncpg.Connection, exp_id: str, bucket: timedelta,
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


async def save_snapshot(conn: asyncpg.Connection, exp_id: str, computed_at: datetime,
                        snapshot: dict[str, Any], anytime_p: dict[str, float]) -> None:
    """Store the latest snapshot (one row per experiment)."""
    await conn.execute(q("snapshot_upsert"), uuid.UUID(exp_id), computed_at, snapshot, anytime_p)


async def load_snapshot(conn: asyncpg.Pool | asyncpg.Connection,
                        exp_id: str) -> tuple[datetime, dict[str, Any], dict[str, float]] | None:
    """The latest stored snapshot, or None before the first recompute."""
    row = await conn.fetchrow(q("snapshot_get"), uuid.UUID(exp_id))
    if row is None:
        return None
    return row["computed_at"], row["snapshot"], row["anytime_p"]


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat().replace("+00:00", "Z")


async def load_bandit(conn: asyncpg.Connection, exp_id: str) -> tuple[BanditState, datetime] | None:
    """The stored bandit state and when it was computed, or None."""
    row = await conn.fetchrow(q("bandit_get"), uuid.UUID(exp_id))
    if row is None:
        return None
    state = BanditState(
        weights=row["weights"], p_best=row["p_best"], top_variant=row["top_variant"],
        converged=row["converged"], converged_at=_iso(row["converged_at"]),
        converged_variant=row["converged_variant"], burn_in=row["burn_in"],
    )
    return state, row["updated_at"]


async def save_bandit(conn: asyncpg.Connection, exp_id: str, state: BanditState,
                      at: datetime) -> None:
    """Store new weights (NOTIFYs every registry) and append them to the history."""
    uid = uuid.UUID(exp_id)
    converged_at = datetime.fromisoformat(state.converged_at.replace("Z", "+00:00")) \
        if state.converged_at else None
    async with conn.transaction():
        await conn.execute(q("bandit_upsert"), uid, state.weights, state.p_best, state.top_variant,
                           state.converged, converged_at, state.converged_variant, state.burn_in, at)
        await conn.execute(q("bandit_history_add"), uid, at, state.weights, state.p_best)


async def bandit_history(conn: asyncpg.Connection, exp_id: str, limit: int = 500) -> list[dict[str, Any]]:
    """The last `limit` weight updates, oldest first."""
    rows = await conn.fetch(q("bandit_history_get"), uuid.UUID(exp_id), limit)
    return [{"t": _iso(r["t"]), "weights": r["weights"], "p_best": r["p_best"]} for r in rows]
