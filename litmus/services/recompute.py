"""The leader-elected recompute loop: fold new events, aggregate, run the statistics and the
bandits, store snapshots. Exactly one process holds the advisory lock at a time; when it dies
its session ends, the lock is released, and another process takes over on its next tick."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np

from litmus import metrics
from litmus.core import bandit as core_bandit
from litmus.core import lifecycle
from litmus.core.models import ArmStats, Experiment
from litmus.core.snapshot import MetricAgg, build_results, unit_arm
from litmus.db import experiments as db_experiments
from litmus.db import results as db
from litmus.services.fold import STOPPED_WINDOW, Folder, FoldStats
from litmus.services.registry import Registry

log = logging.getLogger("litmus.recompute")
# Any constant shared by every Litmus process; distinct from the migration lock.
LEADER_LOCK = 0x4C49_5452
TIMELINE_POINTS = 60
BANDIT_ACTOR = "litmus-bandit"
SLOW_FOLD_S = 1.0  # a fold taking longer is logged with its steps


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


SLOT_S = 10  # exposure_timeline's slot width
HOUR_S = 3600  # exposure_timeline_hourly's
SLOT_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


def timeline_bucket(start: datetime, now: datetime) -> timedelta:
    """A whole number of 10-second slots giving at most TIMELINE_POINTS points since `start`.

    Buckets are multiples of the stored slots on the same grid, so each holds whole slots: no
    empty buckets and no sawtooth. From an hour up they are whole hours, read from the hourly
    slots, so an old experiment's timeline costs a few thousand rows, not every 10 s of its
    life."""
    span = max((now - start).total_seconds(), 1.0)

    def whole(slot: int) -> int:
        return slot * max(1, math.ceil(span / (slot * TIMELINE_POINTS)))

    fine = whole(SLOT_S)
    return timedelta(seconds=fine if fine < HOUR_S else whole(HOUR_S))


def _filled(points: dict[datetime, dict[str, Any]], bucket: timedelta,
            keys: list[str]) -> list[dict[str, Any]]:
    """Timeline points in order, with zero points for buckets in which no unit arrived."""
    if not points:
        return []
    out = []
    t, last = min(points), max(points)
    while t <= last:
        out.append(points.get(t) or {"t": _iso(t), **dict.fromkeys(keys, 0)})
        t += bucket
    return out


class Recompute:
    """See the module docstring; `tick()` is one full pass and can be called directly."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, registry: Registry, interval_s: float) -> None:
        self._pool = pool
        self._dsn = dsn
        self._registry = registry
        self.interval_s = interval_s
        self._lock_conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.is_leader = False
        self._tick_lock = asyncio.Lock()
        self.last_tick_s = 0.0
        self.last_tick_at: datetime | None = None
        self.ticks = 0
        self.last_fold: FoldStats | None = None
        self.folder = Folder()

    async def _ensure_leader(self) -> bool:
        """Hold the leader lock, or try for it on a connection kept open between tries."""
        if self._lock_conn is not None and not self._lock_conn.is_closed():
            if self.is_leader:
                return True
        else:
            # A dropped session released the lock, if it held it: start over.
            self.is_leader = False
            self.folder.forget()
            self._lock_conn = await asyncpg.connect(self._dsn)
        got = bool(await self._lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK))
        if got:
            self.is_leader = True
            log.info("this process is now the recompute leader")
        return got

    async def _loop(self) -> None:
        while True:
            try:
                if await self._ensure_leader():
                    await self.tick()
            except Exception:
                log.exception("recompute tick failed; retrying next interval")
                metrics.recompute_finished(0.0, ok=False)
                if self._lock_conn is not None and self._lock_conn.is_closed():
                    self._lock_conn = None
            await asyncio.sleep(self.interval_s)

    async def tick(self, now: datetime | None = None) -> list[str]:
        """Fold new events, then recompute every target experiment; returns their ids."""
        t0 = time.perf_counter()
        # One pass at a time in this process (the loop and a direct call never overlap; other
        # processes are kept out by the leader lock).
        async with self._tick_lock, self._pool.acquire() as conn:
            self.last_fold = fold = await self.folder.fold(conn)
            if fold.seconds.get("total", 0.0) >= SLOW_FOLD_S:
                log.info("fold of transactions %d..%d took %.2f s (%d events, %d replayed): %s",
                         fold.lo, fold.hi, fold.seconds["total"], fold.events, fold.replayed,
                         " ".join(f"{k}={v:.3f}" for k, v in fold.seconds.items()))
            now = now or datetime.now(UTC)
            targets = await db.recompute_targets(conn, STOPPED_WINDOW)
            done = []
            for exp_id in targets:
                try:
                    await self.recompute_one(conn, exp_id, now)
                    done.append(exp_id)
                except Exception:
                    log.exception("recompute of experiment %s failed", exp_id)
        self.last_tick_s = time.perf_counter() - t0
        metrics.recompute_finished(self.last_tick_s)
        self.last_tick_at = now
        self.ticks += 1
        return done

    async def recompute_one(self, conn: asyncpg.Connection, exp_id: str, now: datetime) -> None:
        """Aggregate one experiment, update its bandit when due, store its snapshot."""
        exp = await db_experiments.get(conn, exp_id)
        if exp is None:
            return
        start = exp.launched_at or exp.created_at or now
        bucket = timeline_bucket(start, now)
        agg = await db.aggregates(conn, exp.id, bucket, SLOT_ORIGIN)
        keys = [v.key for v in exp.variants]

        def key(i: int) -> str | None:
            return keys[i] if 0 <= i < len(keys) else None

        exposures = {k: agg.exposures.get(i, (0, 0)) for i, k in enumerate(keys)}
        metrics: dict[str, dict[str, MetricAgg]] = {}
        for metric, per in agg.metrics.items():
            metrics[metric] = {k: a for i, a in per.items() if (k := key(i)) is not None}
        timeline: dict[datetime, dict[str, Any]] = {}
        for t, i, units in agg.timeline:
            k = key(i)
            if k is not None:
                point = timeline.setdefault(t, {"t": _iso(t), **dict.fromkeys(keys, 0)})
                point[k] = units
        stored = await db.load_snapshot(conn, exp.id)
        prev = {}
        if stored is not None:
            prev = {tuple(k.split("/", 1)): v for k, v in stored[2].items()}
        bandit_block = None
        weights = {v.key: v.weight for v in exp.variants}
        if exp.allocation == "bandit" and exp.bandit is not None:
            bandit_block = await self._bandit(conn, exp, metrics, exposures, now)
            if bandit_block is not None:
                weights = dict(bandit_block["weights"])
        minimize = set(exp.metrics.get("minimize", []) or [])
        res = build_results(
            exp,
            computed_at=_iso(now),
            exposures=exposures,
            metrics=metrics,
            weights=weights,
            timeline=_filled(timeline, bucket, keys),
            unattributed=agg.unattributed,
            prev_anytime_p=prev,  # type: ignore[arg-type]
            minimize_metrics=minimize,
            bandit=bandit_block,
        )
        anytime = {f"{m}/{t}": p for (m, t), p in res.anytime_p.items()}
        await db.save_snapshot(conn, exp.id, now, res.snapshot, anytime)

    async def _bandit(self, conn: asyncpg.Connection, exp: Experiment,
                      metrics: dict[str, dict[str, MetricAgg]],
                      exposures: dict[str, tuple[int, int]], now: datetime) -> dict[str, Any] | None:
        settings = exp.bandit
        assert settings is not None
        stored = await db.load_bandit(conn, exp.id)
        previous = stored[0] if stored else None
        due = exp.status == "running" and (
            stored is None or (now - stored[1]).total_seconds() >= settings.update_interval_s - 1e-3
        )
        state = previous
        updated_at = stored[1] if stored else None
        if due:
            reward = metrics.get(settings.reward_metric, {})
            if settings.reward_type == "binary":
                # A success is a unit that converted at all: repeat conversions of one unit
                # must not count as several successes of the Beta-Bernoulli posterior.
                arms = {k: ArmStats(units, float(min(agg.units, units)) if (agg := reward.get(k)) else 0.0,
                                    float(min(agg.units, units)) if agg else 0.0)
                        for k, (units, _) in exposures.items()}
            else:
                arms = {k: unit_arm(reward.get(k), units) for k, (units, _) in exposures.items()}
            # Seeded per experiment and per update: a rerun of the same update draws the same.
            seed = [uuid.UUID(exp.id).int % (1 << 63), int(now.timestamp() * 1000)]
            state = core_bandit.update(arms, settings, np.random.default_rng(seed), previous, _iso(now))
            await db.save_bandit(conn, exp.id, state, now)
            updated_at = now
            if state.converged and not (previous and previous.converged):
                log.info("bandit %s converged on %s (P(best)=%.3f)", exp.key,
                         state.converged_variant, max(state.p_best.values()))
            if state.converged and settings.auto_stop:
                await self._auto_stop(exp, state.converged_variant or state.top_variant, now)
        if state is None:
            return None
        return {
            "weights": state.weights,
            "p_best": state.p_best,
            "top_variant": state.top_variant,
            "converged": state.converged,
            "converged_at": state.converged_at,
            "converged_variant": state.converged_variant,
            "burn_in": state.burn_in,
            "updated_at": _iso(updated_at) if updated_at else None,
            "reward_metric": settings.reward_metric,
            "history": await db.bandit_history(conn, exp.id),
        }

    async def _auto_stop(self, exp: Experiment, winner: str, now: datetime) -> None:
        def mutate(current: Experiment) -> Experiment:
            return lifecycle.stop(current, winner, now)

        try:
            await db_experiments.update(self._pool, exp.id, mutate, actor=BANDIT_ACTOR, action="stop")
            log.info("bandit %s auto-stopped with winner %s", exp.key, winner)
        except Exception as exc:
            log.warning("auto-stop of %s failed: %s", exp.key, exc)

    async def start(self) -> None:
        """Start the loop (every process runs it; only the leader works)."""
        self._task = asyncio.create_task(self._loop(), name="recompute")

    async def stop(self) -> None:
        """Cancel the loop and give up leadership."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        conn, self._lock_conn = self._lock_conn, None
        self.is_leader = False
        self.folder.forget()
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
