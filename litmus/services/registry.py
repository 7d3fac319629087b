"""Every experiment in memory, compiled for assignment; kept fresh by LISTEN/NOTIFY.

Each committed change NOTIFYs `litmus_experiments` with the experiment id in the same
transaction; the registry reloads just that experiment. A periodic full reload is the safety
net, and a dropped LISTEN connection is re-opened followed by a full reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from litmus.core.assignment import CompiledExperiment, compile_experiment
from litmus.core.models import Experiment
from litmus.db import experiments as db
from litmus.db import listen as listening
from litmus.db.types import Connection, Pool

log = logging.getLogger("litmus.registry")


@dataclass(frozen=True, slots=True)
class Entry:
    """One experiment as assignment and ingestion see it."""

    experiment: Experiment
    compiled: CompiledExperiment
    variant_index: dict[str, int]
    weights: dict[str, float]


def make_entry(exp: Experiment, bandit_weights: dict[str, float] | None) -> Entry:
    """Compile an experiment with its live weights (bandit weights when it has them)."""
    weights = _merged(exp, bandit_weights)
    return Entry(
        experiment=exp,
        compiled=compile_experiment(exp, weights),
        variant_index={v.key: i for i, v in enumerate(exp.variants)},
        weights=weights,
    )


def _served(entry: Entry) -> bool:
    """Whether a local-evaluation client needs this experiment."""
    status = entry.experiment.status
    return status in ("running", "paused") or (status == "stopped" and entry.experiment.winner is not None)


class Registry:
    """In-memory experiments by id and by key; see the module docstring."""

    def __init__(self, pool: Pool, dsn: str, reload_interval_s: float) -> None:
        self._pool = pool
        self._dsn = dsn
        self._reload_interval_s = reload_interval_s
        self._by_ref: dict[str, Entry] = {}
        self._by_id: dict[str, Entry] = {}
        self._pending: set[str] = set()
        # Each database read gets a number when it starts; an experiment keeps the state of
        # the newest-started read that installed it (reads can finish out of order).
        self._reads = 0
        self._installed: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._listener: Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribers: set[asyncio.Queue[tuple[str, bytes]]] = set()
        self._on_change: list[Callable[[Entry | None, str], None]] = []
        self.config_body: bytes = b""
        self.etag: str = ""
        self.last_change_monotonic = 0.0
        self.reloads = 0

    # -- lookups (hot path: plain dict reads) -------------------------------------------------

    def get(self, ref: str) -> Entry | None:
        """An experiment by key or id."""
        return self._by_ref.get(ref)

    def entries(self) -> list[Entry]:
        """Every experiment known, drafts included."""
        return list(self._by_id.values())

    def running(self) -> list[Entry]:
        """Running experiments, for per-unit assignment."""
        return [e for e in self._by_id.values() if e.experiment.status == "running"]

    def on_change(self, callback: Callable[[Entry | None, str], None]) -> None:
        """Call `callback(entry or None, id)` after each experiment reloads."""
        self._on_change.append(callback)

    # -- config for local-evaluation clients ----------------------------------------------------

    def _rebuild_config(self) -> None:
        served = sorted((e for e in self._by_id.values() if _served(e)), key=lambda e: e.experiment.key)
        experiments = [e.compiled.to_config() for e in served]
        digest = hashlib.sha256(orjson.dumps(experiments, option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]
        if digest == self.etag:
            return
        self.etag = digest
        self.config_body = orjson.dumps({"version": digest, "experiments": experiments})
        for q in list(self._subscribers):
            if q.full():
                # A slow reader only ever needs the newest version: drop its oldest.
                q.get_nowait()
            q.put_nowait((digest, self.config_body))

    def subscribe(self) -> asyncio.Queue[tuple[str, bytes]]:
        """A queue receiving each new (version, config body) (for the SSE stream)."""
        q: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=16)
        self._subscribers.add(q)
        return q

    def close_subscribers(self) -> None:
        """Tell every stream to end (shutdown): an empty version is the end-of-stream mark."""
        for q in list(self._subscribers):
            if q.full():
                q.get_nowait()
            q.put_nowait(("", b""))

    def unsubscribe(self, q: asyncio.Queue[tuple[str, bytes]]) -> None:
        """Stop delivering config bodies to `q`."""
        self._subscribers.discard(q)

    # -- loading ------------------------------------------------------------------------------

    def _put(self, entry: Entry) -> None:
        old = self._by_id.get(entry.experiment.id)
        if (old is not None and old.experiment.key != entry.experiment.key
                and self._by_ref.get(old.experiment.key) is old):
            self._by_ref.pop(old.experiment.key)
        self._by_id[entry.experiment.id] = entry
        self._by_ref[entry.experiment.id] = entry
        self._by_ref[entry.experiment.key] = entry

    def _drop(self, exp_id: str) -> None:
        old = self._by_id.pop(exp_id, None)
        if old is not None:
            # The key may already belong to a newer experiment (delete, then re-create).
            if self._by_ref.get(old.experiment.key) is old:
                self._by_ref.pop(old.experiment.key)
            self._by_ref.pop(exp_id, None)

    def _next_read(self) -> int:
        self._reads += 1
        return self._reads

    def _newer_installed(self, exp_id: str, read: int) -> bool:
        """Whether a read that started after `read` has already installed this experiment."""
        return self._installed.get(exp_id, -1) > read

    async def reload_all(self) -> None:
        """Replace everything with what the database holds now.

        Reads race: a single reload that started after this full read may finish first. Each
        experiment therefore keeps whatever the newest-started read installed."""
        read = self._next_read()
        rows = await db.registry_rows(self._pool)
        by_id: dict[str, Entry] = {}
        seen: set[str] = set()
        for exp, weights in rows:
            seen.add(exp.id)
            entry = self._by_id.get(exp.id)
            if self._newer_installed(exp.id, read):
                if entry is None:
                    continue  # deleted by a newer read
            elif entry is None or entry.experiment != exp or entry.weights != _merged(exp, weights):
                try:
                    entry = make_entry(exp, weights)
                except ValueError as exc:
                    # One broken experiment must not keep the others from loading.
                    log.error("experiment %s cannot be compiled: %s", exp.key, exc)
                    continue
                self._installed[exp.id] = read
            by_id[exp.id] = entry
        for exp_id, entry in self._by_id.items():
            if exp_id not in seen and self._newer_installed(exp_id, read):
                by_id[exp_id] = entry  # created after this full read began
        by_ref: dict[str, Entry] = {}
        for exp_id, entry in by_id.items():
            by_ref[exp_id] = entry
            by_ref[entry.experiment.key] = entry
        self._by_id, self._by_ref = by_id, by_ref
        self.reloads += 1
        self._rebuild_config()

    async def reload_one(self, exp_id: str) -> None:
        """Reload one experiment (or forget it when it is gone), unless a newer read won."""
        read = self._next_read()
        rows = await db.registry_rows(self._pool, exp_id)
        if self._newer_installed(exp_id, read):
            return  # a read that started later has installed a fresher state already
        self._installed[exp_id] = read
        entry: Entry | None = None
        if rows:
            try:
                entry = make_entry(*rows[0])
            except ValueError as exc:
                log.error("experiment %s cannot be compiled: %s", rows[0][0].key, exc)
                return
            self._put(entry)
        else:
            self._drop(exp_id)
        self.last_change_monotonic = time.monotonic()
        self._rebuild_config()
        for cb in self._on_change:
            try:
                cb(entry, exp_id)
            except Exception:
                log.exception("registry change callback failed")

    # -- background work ----------------------------------------------------------------------

    def _notified(self, payload: str) -> None:
        self._pending.add(payload)
        self._wake.set()

    async def _listen(self) -> None:
        self._listener = await listening.listen(self._dsn, listening.EXPERIMENTS_CHANNEL,
                                                self._notified)

    async def _apply_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                exp_id = self._pending.pop()
                try:
                    await self.reload_one(exp_id)
                except Exception:
                    log.exception("reloading experiment %s failed; retrying on the next notice", exp_id)
                    self._pending.add(exp_id)
                    await asyncio.sleep(0.5)

    async def _watch_loop(self) -> None:
        """Full reload every interval; reconnect LISTEN (then reload) when it dropped."""
        next_full = time.monotonic() + self._reload_interval_s
        while True:
            await asyncio.sleep(min(1.0, self._reload_interval_s))
            try:
                if not listening.is_open(self._listener):
                    log.warning("LISTEN connection lost; reconnecting")
                    await self._close_listener()
                    await self._listen()
                    await self.reload_all()
                    log.info("LISTEN connection restored; registry reloaded")
                    next_full = time.monotonic() + self._reload_interval_s
                elif time.monotonic() >= next_full:
                    await self.reload_all()
                    next_full = time.monotonic() + self._reload_interval_s
            except Exception as exc:
                log.warning("registry refresh failed (%s); retrying", exc)

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        await listening.close_quietly(conn)

    async def start(self) -> None:
        """Listen first (so no change slips between load and listen), then load everything."""
        await self._listen()
        await self.reload_all()
        self._tasks = [
            asyncio.create_task(self._apply_loop(), name="registry-apply"),
            asyncio.create_task(self._watch_loop(), name="registry-watch"),
        ]

    async def stop(self) -> None:
        """Cancel the loops and close the LISTEN connection."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self._close_listener()


def _merged(exp: Experiment, bandit_weights: dict[str, float] | None) -> dict[str, float]:
    weights = {v.key: v.weight for v in exp.variants}
    if exp.allocation == "bandit" and bandit_weights:
        weights.update({k: float(w) for k, w in bandit_weights.items() if k in weights})
    return weights
