"""The results fold, run by the recompute leader before each recompute.

Every event committed since the watermark (see sql/migrations/0002_events.sql for why the
transaction-id watermark never skips a row) is read once, as binary COPY rows, and folded into
the per-unit state in this process's memory (litmus/core/unitfold.py). The state turns them
into per-arm deltas, which are added to the per-arm tables in the same transaction that moves
the watermark: a crash or an error folds nothing twice, and the in-memory state of a fold that
did not commit is thrown away and loaded again.

The state is durable as a checkpoint (the table fold_checkpoint) written every
CHECKPOINT_EVERY_S. A process that becomes leader loads it and replays the events committed
between the checkpoint and the watermark, without deltas (the per-arm tables have them). So a
month of raw events may be dropped once a checkpoint newer than it exists
(docs/OPERATIONS.md, "Retention").

Every statement runs in litmus/db/fold.py; this module decides, and calls down only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from litmus import metrics
from litmus.core.unitfold import Deltas, ExperimentUnits
from litmus.db import fold as db
from litmus.db import results as results_db
from litmus.db.types import Connection

log = logging.getLogger("litmus.recompute")

# The format of the per-arm tables this fold writes, recorded on the watermark: a leader that
# finds an older version's mark knows which columns that version left alone.
FOLD_VERSION = 3
POSITIVE_SINCE = 3  # the first fold version that keeps each arm's count of units above 0
CHECKPOINT_EVERY_S = 300.0
CHECKPOINT_AFTER_EVENTS = 5_000_000  # or sooner, after this many events folded or replayed
CHECKPOINT_RETRY_S = 60.0  # after a failed checkpoint
# Experiments recomputed: running, paused, and stopped within this window. The others' states
# leave memory at the next checkpoint and come back from it if a (late) event arrives.
STOPPED_WINDOW = timedelta(days=1)
_NEW = "\x00new:"  # a metric whose name is looked up once its COPY has finished


@dataclass(slots=True)
class FoldStats:
    """What one fold did: the watermark range, events read, replayed, seconds per step."""

    lo: int = 0
    hi: int = 0
    events: int = 0
    replayed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class Folder:
    """Holds the per-unit states of the recomputed experiments while this process leads."""

    def __init__(self) -> None:
        self.states: dict[str, ExperimentUnits] | None = None
        self.evicted: set[str] = set()  # states in the checkpoint only (see STOPPED_WINDOW)
        self.xid = 0  # the watermark the states are at
        self.names: dict[int, str] = {}  # metric hash -> name
        self.checkpoint_every_s = CHECKPOINT_EVERY_S
        self._checkpoint_at = time.monotonic()
        self._checkpoint_retry_at = 0.0
        self._since_checkpoint = 0
        self._dirty: set[str] = set()  # states changed since the checkpoint

    def forget(self) -> None:
        """Drop the in-memory states (leadership lost, or a fold failed)."""
        self.states = None
        self.evicted = set()
        self._dirty = set()

    async def fold(self, conn: Connection) -> FoldStats:
        """Fold every event committed since the watermark; load the states first if needed."""
        stats = FoldStats()
        t0 = time.perf_counter()
        await db.summarize_new_ranges(conn)
        stats.seconds["summarize"] = time.perf_counter() - t0
        try:
            async with db.begin(conn, FOLD_VERSION) as mark:
                lo, hi = mark.lo, mark.hi
                if mark.created:
                    # An operator deleted the watermark row (a manual re-fold, OPERATIONS.md).
                    log.warning("recompute watermark missing: refolding all events from scratch")
                    await self._reset(conn)
                if hi < lo:
                    # Transaction ids went backwards: this database was restored into another
                    # cluster. The watermark and the checkpoint mean nothing here.
                    log.warning("recompute watermark %s is ahead of this cluster (%s): "
                                "refolding all events", lo, hi)
                    await self._reset(conn)
                    lo = 0
                if self.states is None or self.xid != lo:
                    # No state yet, or another leader folded since ours (we were deposed).
                    lo = await self._load(conn, mark, lo, stats)
                stats.lo, stats.hi = lo, max(hi, lo)
                if hi > lo:
                    # After the load: a replay applies the cut-offs pinned by earlier folds.
                    await db.pin_cutoffs(conn, lo)
                    deltas: dict[str, Deltas] = {}
                    stats.events = await self._fold_range(conn, lo, hi, deltas, stats)
                    t = time.perf_counter()
                    await db.write_deltas(conn, deltas, hi)
                    stats.seconds["write"] = time.perf_counter() - t
            self.xid = stats.hi
            self._since_checkpoint += stats.events + stats.replayed
        except BaseException:
            self.forget()  # may hold part of a fold that did not commit
            raise
        now = time.monotonic()
        if self._since_checkpoint and now >= self._checkpoint_retry_at and (
                now - self._checkpoint_at >= self.checkpoint_every_s
                or self._since_checkpoint >= CHECKPOINT_AFTER_EVENTS):
            t = time.perf_counter()
            try:
                await self.checkpoint(conn)
                metrics.checkpoint_finished(ok=True)
            except Exception:
                # The fold committed: results go on; the checkpoint is tried again later.
                log.exception("recompute checkpoint failed; retrying in %.0f s",
                              CHECKPOINT_RETRY_S)
                metrics.checkpoint_finished(ok=False)
                self._checkpoint_retry_at = now + CHECKPOINT_RETRY_S
            stats.seconds["checkpoint"] = time.perf_counter() - t
        stats.seconds["total"] = time.perf_counter() - t0
        return stats

    async def checkpoint(self, conn: Connection) -> int:
        """Store the states changed since the last checkpoint, if they are still the
        watermark's, then let the states of experiments no longer recomputed leave memory;
        returns the bytes written."""
        states = self.states
        if states is None:
            return 0
        async with db.hold_watermark(conn, FOLD_VERSION) as xid:
            if xid != self.xid:
                self.forget()  # another leader moved on: ours are stale
                return 0
            dirty = {e: states[e] for e in self._dirty if e in states}
            size = await db.write_checkpoint(conn, dirty, self.xid)
            active = set(await results_db.recompute_targets(conn, STOPPED_WINDOW))
        # Committed: every state in memory is now also in the checkpoint.
        self._dirty = set()
        self._checkpoint_at = time.monotonic()
        self._since_checkpoint = 0
        for exp_id in set(states) - active:  # back from the checkpoint when needed
            del states[exp_id]
            self.evicted.add(exp_id)
        log.info("recompute checkpoint at transaction %d: %d of %d experiments written, "
                 "%.1f MB", self.xid, len(dirty), len(states) + len(self.evicted), size / 1e6)
        return size

    async def _reset(self, conn: Connection) -> None:
        """Start over from no events folded, in the database and in memory."""
        await db.reset(conn)
        self.states, self.xid = {}, 0
        self.evicted, self._dirty = set(), set()

    async def _load(self, conn: Connection, mark: db.Watermark, lo: int,
                    stats: FoldStats) -> int:
        """Make the in-memory states those of watermark `lo` (or reset); returns the watermark."""
        t = time.perf_counter()
        self.evicted, self._dirty = set(), set()
        if lo == 0:
            # Nothing folded yet (or the watermark was set back by hand): start from empty
            # everywhere, so no stored checkpoint row, per-arm row or pin outlives it.
            await self._reset(conn)
        else:
            cp = mark.checkpoint
            if cp is not None and cp > lo:
                log.warning("recompute checkpoint (%s) is ahead of the watermark (%s): "
                            "refolding all events", cp, lo)
                await self._reset(conn)
                return 0
            self.states = {}
            if cp is not None:
                # Only the recomputed experiments; the others stay in the checkpoint.
                stored = await db.checkpoint_experiments(conn)
                active = set(await results_db.recompute_targets(conn, STOPPED_WINDOW))
                self.states = await db.read_checkpoint(conn, sorted(stored & active))
                self.evicted = stored - active
            await self._learn_names(conn)  # before the replay meets those metrics
            start = cp if cp is not None else 0
            if start < lo:
                stats.replayed = await self._fold_range(conn, start, lo, None, stats)
        await self._learn_names(conn)
        if lo > 0 and mark.version < POSITIVE_SINCE:
            await self._recount_positive(conn)
        if lo > 0:
            log.info("recompute: per-unit state of %d experiments loaded at transaction %d in "
                     "%.2f s (%d events replayed)", len(self.states or {}), lo,
                     time.perf_counter() - t, stats.replayed)
        stats.seconds["load"] = time.perf_counter() - t
        self.xid = lo
        return lo

    async def _recount_positive(self, conn: Connection) -> None:
        """Set every per-arm count of units with a total above 0 from the per-unit states.

        The last fold or checkpoint was by a version before POSITIVE_SINCE, which kept no such
        count (and leaves the column alone when it folds during a rolling upgrade). The states are
        the watermark's: those in memory were just loaded and replayed, and an evicted one
        still in the checkpoint had no event since (a replay brings those back)."""
        assert self.states is not None
        t = time.perf_counter()
        counts: dict[str, dict[tuple[int, str], int]] = {}

        def count(st: ExperimentUnits) -> dict[tuple[int, str], int]:
            return {k: int(v[4]) for k, v in st.arm_totals().metrics.items() if v[4]}

        for exp_id, st in self.states.items():
            counts[exp_id] = await asyncio.to_thread(count, st)
        for exp_id in sorted(self.evicted):  # one at a time: they left memory for a reason
            for e, st in (await db.read_checkpoint(conn, [exp_id])).items():
                counts[e] = await asyncio.to_thread(count, st)
        await db.set_positive(conn, counts)
        log.info("recompute: units with a total above 0 recounted for %d experiments in %.2f s "
                 "(the last fold was by a version that kept no such count)", len(counts),
                 time.perf_counter() - t)

    async def _learn_names(self, conn: Connection) -> None:
        """Know the hash of every metric the states hold (they store names only)."""
        assert self.states is not None
        known = set(self.names.values())
        # Placeholders (metrics first seen in a COPY still being named) are not names.
        todo = sorted({m for st in self.states.values() for m in st.metrics
                       if not m.startswith(_NEW)} - known)
        if todo:
            self.names.update(await db.metric_hashes(conn, todo))

    async def _fold_range(self, conn: Connection, lo: int, hi: int,
                          deltas: dict[str, Deltas] | None, stats: FoldStats) -> int:
        """Fold the events of transactions [lo, hi) into the states; returns events read."""
        states = self.states
        assert states is not None

        # Rows of experiments whose state is only in the checkpoint wait for it (it cannot be
        # read while a COPY runs on this connection).
        waiting: dict[str, tuple[list[db.Rows], list[db.Rows]]] = {}

        def delta(exp_id: str) -> Deltas | None:
            return None if deltas is None else deltas.setdefault(exp_id, Deltas())

        def state(exp_id: str, rows: db.Rows, kind: int) -> ExperimentUnits | None:
            """The state to fold `rows` into, or None when they wait (kind 0: exposures)."""
            if exp_id in self.evicted:
                waiting.setdefault(exp_id, ([], []))[kind].append(rows)
                return None
            self._dirty.add(exp_id)
            return states.setdefault(exp_id, ExperimentUnits())

        def fold_exposures(rows: db.Rows) -> None:
            for exp_id, r in db.by_experiment(rows):
                if (st := state(exp_id, r, 0)) is not None:
                    st.fold_exposures(r["unit"].astype(np.int64), r["variant"],
                                      r["ts"].astype(np.int64), r["tie"].astype(np.int64),
                                      delta(exp_id), r["prob"].astype(np.float64),
                                      db.covariates(r))

        def fold_metrics(rows: db.Rows) -> None:
            for exp_id, r in db.by_experiment(rows):
                if (st := state(exp_id, r, 1)) is None:
                    continue
                hashes = r["metric"]
                for h in np.unique(hashes).tolist():
                    sel = r[hashes == h]
                    name = self.names.get(int(h), f"{_NEW}{int(h)}")
                    st.fold_metrics(name, sel["unit"].astype(np.int64),
                                    sel["value"].astype(np.float64), delta(exp_id))

        async def fold_all(chunks: AsyncGenerator[db.Rows, None],
                           fold: Callable[[db.Rows], None]) -> int:
            n = 0
            async with aclosing(chunks):  # on an error: the COPY ends before the rollback
                async for rows in chunks:
                    n += len(rows)
                    await asyncio.to_thread(fold, rows)
                    del rows  # before the next chunk is read: one in memory at a time
            return n

        # Exposures first: they decide the arms the metric totals are added to.
        t = time.perf_counter()
        n = await fold_all(db.read_exposures(conn, lo, hi), fold_exposures)
        step = "replay" if deltas is None else "fold"
        stats.seconds[f"{step}_exposures"] = time.perf_counter() - t
        t = time.perf_counter()
        n += await fold_all(db.read_metrics(conn, lo, hi), fold_metrics)
        if waiting:
            # Late events of experiments no longer recomputed: their states come back.
            states.update(await db.read_checkpoint(conn, sorted(waiting)))
            self.evicted -= set(waiting)  # so the rows below fold instead of waiting again
            await self._learn_names(conn)
            for exps, mets in waiting.values():
                for r in exps:
                    await asyncio.to_thread(fold_exposures, r)
                for r in mets:
                    await asyncio.to_thread(fold_metrics, r)
        await self._name_new_metrics(conn, lo, hi, deltas)
        stats.seconds[f"{step}_metrics"] = time.perf_counter() - t
        return n

    async def _name_new_metrics(self, conn: Connection, lo: int, hi: int,
                                deltas: dict[str, Deltas] | None) -> None:
        """Give metrics first seen in this range their names (looked up after the COPY)."""
        states = self.states
        assert states is not None
        new = sorted({int(m[len(_NEW):]) for st in states.values() for m in st.metrics
                      if m.startswith(_NEW)})
        if not new:
            return
        self.names.update(await db.metric_names(conn, lo, hi, new))
        for exp_id, st in states.items():
            for m in [m for m in st.metrics if m.startswith(_NEW)]:
                # Every name a state held had its hash known before the fold (_learn_names).
                st.rename_metric(m, self.names[int(m[len(_NEW):])])
            if deltas is not None and exp_id in deltas:
                named: dict[tuple[int, str], list[float]] = {}
                for (arm, m), v in deltas[exp_id].metrics.items():
                    name = self.names[int(m[len(_NEW):])] if m.startswith(_NEW) else m
                    cur = named.setdefault((arm, name), [0, 0, 0.0, 0.0, 0])
                    for i, x in enumerate(v):
                        cur[i] += x
                deltas[exp_id].metrics = named
