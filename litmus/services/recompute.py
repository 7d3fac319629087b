"""The leader-elected recompute loop: fold new events, aggregate, run the statistics and the
bandits, store snapshots. Exactly one process holds the leader lock (litmus/db/leader.py) at a
time; when it dies its session ends, the lock is released, and another process takes over on
its next tick."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from litmus import metrics
from litmus.core import bandit as core_bandit
from litmus.core.counterfactual import PropensitySums
from litmus.core.cuped import CupedSums
from litmus.core.models import (
    DEFAULT_DEFINITION,
    ArmStats,
    Experiment,
    metric_definitions,
    objective_to_dict,
)
from litmus.core.quantiles import Sketch
from litmus.core.snapshot import MetricAgg, build_results, lift_point, metric_estimate
from litmus.core.times import iso
from litmus.core.unitfold import HOURLY_SLOT_S, SLOT_S
from litmus.db import experiments as db_experiments
from litmus.db import results as db
from litmus.db.leader import LeaderLock, unreachable
from litmus.db.types import Connection, Pool
from litmus.services import experiments
from litmus.services.fold import STOPPED_WINDOW, Folder, FoldStats
from litmus.services.guardrails import Guardrails
from litmus.services.registry import Registry

log = logging.getLogger("litmus.recompute")
TIMELINE_POINTS = 60
BANDIT_ACTOR = "litmus-bandit"
SLOW_FOLD_S = 1.0  # a fold taking longer is logged with its steps


SLOT_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


def timeline_bucket(start: datetime, now: datetime) -> timedelta:
    """A whole number of SLOT_S slots giving at most TIMELINE_POINTS points since `start`.

    Buckets are multiples of the stored slots on the same grid, so each holds whole slots: no
    empty buckets and no sawtooth. From an hour up they are whole hours, read from the hourly
    slots, so an old experiment's timeline costs a few thousand rows, not every slot of its
    life."""
    span = max((now - start).total_seconds(), 1.0)

    def whole(slot: int) -> int:
        return slot * max(1, math.ceil(span / (slot * TIMELINE_POINTS)))

    fine = whole(SLOT_S)
    return timedelta(seconds=fine if fine < HOURLY_SLOT_S else whole(HOURLY_SLOT_S))


def history_bucket(now: datetime, bucket: timedelta) -> datetime:
    """The start of the timeline bucket holding `now` (on the SLOT_ORIGIN grid)."""
    size = bucket.total_seconds()
    return SLOT_ORIGIN + timedelta(
        seconds=size * math.floor((now - SLOT_ORIGIN).total_seconds() / size))


def _filled(points: dict[datetime, dict[str, Any]], bucket: timedelta,
            keys: list[str]) -> list[dict[str, Any]]:
    """Timeline points in order, with zero points for buckets in which no unit arrived."""
    if not points:
        return []
    out = []
    t, last = min(points), max(points)
    while t <= last:
        out.append(points.get(t) or {"t": iso(t), **dict.fromkeys(keys, 0)})
        t += bucket
    return out


class Recompute:
    """See the module docstring; `tick()` is one full pass and can be called directly."""

    def __init__(self, pool: Pool, dsn: str, registry: Registry, interval_s: float,
                 alert_webhook_url: str | None = None) -> None:
        self._pool = pool
        self._registry = registry
        self.interval_s = interval_s
        self._leader = LeaderLock(dsn)
        self._task: asyncio.Task[None] | None = None
        self.is_leader = False
        self._tick_lock = asyncio.Lock()
        self.last_tick_s = 0.0
        self.last_tick_at: datetime | None = None
        self.ticks = 0
        self.last_fold: FoldStats | None = None
        self.folder = Folder()
        self.outage_since: float | None = None  # monotonic time of the first failed try
        self.outage_tries = 0
        self.guardrails = Guardrails(pool, registry, alert_webhook_url)

    async def _ensure_leader(self) -> bool:
        """Hold the leader lock, or try for it on a connection kept open between tries."""
        if not self._leader.session_alive():
            # A dropped session released the lock, if it held it: start over.
            self.is_leader = False
            self.folder.forget()
        elif self.is_leader:
            return True
        got = await self._leader.try_lock()
        if got:
            self.is_leader = True
            log.info("this process is now the recompute leader")
        return got

    async def _loop(self) -> None:
        while True:
            try:
                if await self._ensure_leader():
                    await self.tick()
                self._reachable()
            except Exception as exc:
                if unreachable(exc):
                    self._unreachable(exc)
                else:
                    log.exception("recompute tick failed; retrying next interval")
                metrics.recompute_finished(0.0, ok=False)
            await asyncio.sleep(self.interval_s)

    def _unreachable(self, exc: BaseException) -> None:
        """One warning when an outage starts: a traceback every tick would bury the log, and
        says nothing the first line does not."""
        self.outage_tries += 1
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            log.warning("recompute: the database is unreachable (%s: %s); retrying every %g s "
                        "and saying so again only when it answers", type(exc).__name__, exc,
                        self.interval_s)
        else:
            log.debug("recompute: the database is still unreachable (%s)", exc)

    def _reachable(self) -> None:
        """One line when an outage ends."""
        if self.outage_since is not None:
            log.info("recompute: the database answers again after %.1f s (%d tries failed)",
                     time.monotonic() - self.outage_since, self.outage_tries)
            self.outage_since, self.outage_tries = None, 0

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
                except Exception as exc:
                    if unreachable(exc):
                        raise  # not this experiment's fault: the loop reports the outage once
                    log.exception("recompute of experiment %s failed", exp_id)
        self.last_tick_s = time.perf_counter() - t0
        metrics.recompute_finished(self.last_tick_s)
        self.last_tick_at = now
        self.ticks += 1
        return done

    async def recompute_one(self, conn: Connection, exp_id: str, now: datetime) -> None:
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
        sketches = self._by_definition(exp, metrics)
        propensity, propensity_counts = self._propensity(exp, metrics)
        cuped = self._cuped(exp)
        timeline: dict[datetime, dict[str, Any]] = {}
        for t, i, units in agg.timeline:
            k = key(i)
            if k is not None:
                point = timeline.setdefault(t, {"t": iso(t), **dict.fromkeys(keys, 0)})
                point[k] = units
        stored = await db.load_snapshot(conn, exp.id)
        prev = {}
        if stored is not None:
            prev = {tuple(k.split("/", 1)): v for k, v in stored[2].items()}
        bandit_block = None
        weights = {v.key: v.weight for v in exp.variants}
        if exp.allocation == "bandit" and exp.bandit is not None:
            bandit_block = await self._bandit(conn, exp, metrics, exposures, now, sketches)
            if bandit_block is not None:
                weights = dict(bandit_block["weights"])
        minimize = set(exp.metrics.get("minimize", []) or [])
        res = build_results(
            exp,
            computed_at=iso(now),
            exposures=exposures,
            metrics=metrics,
            weights=weights,
            timeline=_filled(timeline, bucket, keys),
            unattributed=agg.unattributed,
            prev_anytime_p=prev,  # type: ignore[arg-type]
            # The previous snapshot carries each row's running anytime interval and whether
            # it was significant: a result once significant stays so (docs/STATISTICS.md).
            prev_snapshot=stored[1] if stored is not None else None,
            minimize_metrics=minimize,
            bandit=bandit_block,
            sketches=sketches,
            propensity=propensity,
            propensity_counts=propensity_counts,
            cuped=cuped,
        )
        # Guardrails decide on this snapshot's numbers, act on a new trip, and add their block.
        await self.guardrails.apply(conn, exp, res.snapshot, metrics, exposures, sketches, now)
        anytime = {f"{m}/{t}": p for (m, t), p in res.anytime_p.items()}
        await db.save_snapshot(conn, exp.id, now, res.snapshot, anytime)
        lift_rows = lift_point(res.snapshot) if exp.status == "running" else []
        if lift_rows:
            # Lift over time: one point per timeline bucket, the bucket's latest estimate.
            await db.save_lift_point(conn, exp.id, history_bucket(now, bucket), now, lift_rows)

    def _by_definition(self, exp: Experiment,
                       metrics: dict[str, dict[str, MetricAgg]]) -> dict[str, dict[str, Sketch]]:
        """Apply the metric definitions that need the per-unit state this leader holds in
        memory: capped metrics' aggregates are replaced by capped ones (in `metrics`), and the
        quantile sketches of metrics read by a quantile are returned (metric -> variant)."""
        definitions = metric_definitions(exp.metrics)
        if exp.bandit is not None and exp.bandit.objective is not None:
            wanted = {c.metric for c in exp.bandit.objective.constraints}
        else:
            wanted = set()
        state = (self.folder.states or {}).get(exp.id)
        sketches: dict[str, dict[str, Sketch]] = {}
        if state is None:
            return sketches
        keys = [v.key for v in exp.variants]
        for metric, d in definitions.items():
            if d.cap is not None and d.quantile is None:
                metrics[metric] = {
                    keys[i]: MetricAgg(count=events, units=units, sum=total, sum_sq=total_sq)
                    for i, (units, events, total, total_sq) in state.capped(metric, d.cap).items()
                    if 0 <= i < len(keys)}
            if d.quantile is not None or metric in wanted:
                sketches[metric] = {keys[i]: sk for (i, m), sk in state.sketches.items()
                                    if m == metric and 0 <= i < len(keys)}
        return sketches

    def _propensity(self, exp: Experiment, metrics: dict[str, dict[str, MetricAgg]],
                    ) -> tuple[dict[str, dict[str, PropensitySums]], dict[str, int]]:
        """Per metric (the primary and every metric with events) and variant, the sums the
        counterfactual estimates need, from the per-unit state (units with a known probability
        below 1), and the counts of units by what is known of their probability."""
        state = (self.folder.states or {}).get(exp.id)
        if state is None:
            return {}, {}
        counts = state.propensity_counts()
        if counts["units"] == 0:
            return {}, counts
        definitions = metric_definitions(exp.metrics)
        keys = [v.key for v in exp.variants]
        wanted = {str(exp.metrics.get("primary") or "conversion"), *metrics}
        out: dict[str, dict[str, PropensitySums]] = {}
        for m in sorted(wanted):
            cap = definitions.get(m, DEFAULT_DEFINITION).cap
            out[m] = {keys[i]: s for i, s in state.propensity(m, cap).items()
                      if 0 <= i < len(keys)}
        return out, counts

    def _cuped(self, exp: Experiment) -> dict[str, dict[str, CupedSums]]:
        """Per metric whose definition names a covariate, and variant, the sums its
        regression-adjusted comparison needs (x: the covariate by its declared position, 0
        when a unit's first exposure sent none; y: the unit's total, capped like the metric)."""
        state = (self.folder.states or {}).get(exp.id)
        if state is None:
            return {}
        declared = [str(c) for c in exp.metrics.get("covariates") or ()]
        keys = [v.key for v in exp.variants]
        out: dict[str, dict[str, CupedSums]] = {}
        for m, d in metric_definitions(exp.metrics).items():
            if d.cuped is None or d.cuped not in declared:
                continue
            sums = state.cuped(m, declared.index(d.cuped), d.cap)
            out[m] = {keys[i]: CupedSums(int(c[0] + 0.5), *c[1:]) for i, c in sums.items()
                      if 0 <= i < len(keys)}
        return out

    async def _bandit(self, conn: Connection, exp: Experiment,
                      metrics: dict[str, dict[str, MetricAgg]],
                      exposures: dict[str, tuple[int, int]], now: datetime,
                      sketches: dict[str, dict[str, Sketch]]) -> dict[str, Any] | None:
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
            successes: dict[str, int] = {}
            if settings.reward_type == "binary":
                pos = await db.positive_units(conn, exp.id, settings.reward_metric)
                successes = {v.key: pos.get(i, 0) for i, v in enumerate(exp.variants)}
            arms: dict[str, ArmStats] = core_bandit.reward_arms(
                settings, {k: units for k, (units, _) in exposures.items()},
                metrics.get(settings.reward_metric, {}), successes)
            # Seeded by the experiment's salt and the update number, never the clock: the same
            # events give the same weights whenever they are recomputed, and experiments given
            # one salt (reruns of a seeded simulation) draw alike.
            seed = core_bandit.update_seed(exp.effective_salt,
                                           await db.bandit_updates(conn, exp.id))
            state = core_bandit.update(arms, settings, np.random.default_rng(seed), previous,
                                       iso(now), self._constraints(exp, metrics, exposures, sketches))
            await db.save_bandit(conn, exp.id, state, now)
            updated_at = now
            if state.converged and not (previous and previous.converged):
                log.info("bandit %s converged on %s (P(best)=%.3f)", exp.key,
                         state.converged_variant, max(state.p_best.values()))
            if state.converged and settings.auto_stop:
                await self._auto_stop(exp, state.converged_variant or state.top_variant)
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
            "updated_at": iso(updated_at) if updated_at else None,
            "reward_metric": settings.reward_metric,
            "objective": (objective_to_dict(settings.objective)
                          if settings.objective is not None else None),
            "p_feasible": state.p_feasible,
            "history": await db.bandit_history(conn, exp.id),
        }

    @staticmethod
    def _constraints(exp: Experiment, metrics: dict[str, dict[str, MetricAgg]],
                     exposures: dict[str, tuple[int, int]],
                     sketches: dict[str, dict[str, Sketch]]) -> list[core_bandit.ConstraintStat]:
        """Each constraint of the bandit's objective with every variant's (value, se) of the
        constrained metric's statistic (its definition's: a quantile, or the unit mean)."""
        assert exp.bandit is not None
        if exp.bandit.objective is None:
            return []
        definitions = metric_definitions(exp.metrics)
        out: list[core_bandit.ConstraintStat] = []
        for c in exp.bandit.objective.constraints:
            d = definitions.get(c.metric, DEFAULT_DEFINITION)
            per, sk = metrics.get(c.metric, {}), sketches.get(c.metric, {})
            est = {k: metric_estimate(d, per.get(k), units, sk.get(k))
                   for k, (units, _) in exposures.items()}
            out.append((c, {k: (e.value, e.se) for k, e in est.items()}))
        return out

    async def _auto_stop(self, exp: Experiment, winner: str) -> None:
        # The same path as a person's Stop: audit log, NOTIFY, and this process's registry.
        try:
            await experiments.stop(self._pool, self._registry, exp.id, winner, actor=BANDIT_ACTOR)
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
        self.is_leader = False
        self.folder.forget()
        await self.guardrails.close()
        await self._leader.close()
