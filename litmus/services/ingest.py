"""Event ingestion: a bounded buffer, group commit, backpressure, outage retries and drain.

Handlers hand validated rows to `Ingestor.submit`; a writer task takes everything buffered
when the oldest waiting event reaches `flush_age` or the buffer holds `flush_events`, stores it
in one transaction (one COPY per table, event_id dedupe, see db.events.write_batch) on a
connection of its own, and only then resolves the waiters: a 202 means the events are
committed, and each waiter learns how many of its own events were stored and how many were
repeats of a client event_id (within its request, within the flush, or already stored).
While a flush runs the next one gathers, so batches grow with load; two writers
let one flush's row encoding (here) overlap the other's work in PostgreSQL. Past `buffer_events`/`buffer_bytes` (counting what is being written) submissions are
refused at once (503). When PostgreSQL is unreachable the writer retries with backoff; each
waiting request gives up after `wait_s` with a 503, and a flush still running at that moment
is cancelled first, so a 503 means "not stored". Events accepted with `wait=False` are kept
and retried until stored (the buffer bound keeps memory bounded). `close()` refuses new
events and drains everything accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import Any

from litmus import metrics
from litmus.db import events as db
from litmus.db.errors import REFUSED, TRANSIENT
from litmus.db.events import Claim, ExposureRow, MetricRow
from litmus.db.events import Micros as Micros
from litmus.db.events import covariate_columns as covariate_columns
from litmus.db.types import Connection
from litmus.errors import LitmusError, Unavailable
from litmus.settings import Settings

log = logging.getLogger("litmus.ingest")

# Rows are plain tuples shaped by db.events (ExposureRow, MetricRow, Claim). Times travel as
# (microseconds since 2000-01-01 UTC,) and experiment ids as text: the writer connections
# encode both without Python work (asyncpg's datetime and UUID paths cost 3x the whole row).
# Client event ids are deduped per experiment and event type (sql/migrations/0011): an exposure
# and a metric event may share an id. A conversion is a metric event, so it shares the metric
# namespace: a conversion and a metric with the same event_id are one event.
EXPOSURE = db.EXPOSURE_KIND
METRIC = db.METRIC_KIND
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_UNIX_US = 946_684_800_000_000


def to_micros(dt: datetime) -> Micros:
    """An aware datetime as the writer's time value."""
    d = dt - PG_EPOCH
    return ((d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds,)


Writer = Callable[
    [Connection, Sequence[ExposureRow], Sequence[MetricRow], Sequence[Claim],
     Sequence[tuple[int, int]]],
    Awaitable[list[db.Stored]],
]
Connector = Callable[[str], Awaitable[Connection]]
PARTITIONS_EVERY_S = 6 * 3600.0


@dataclass(slots=True)
class EventBatch:
    """Validated rows ready for COPY, the client event ids to claim, and their size in memory."""

    exposures: list[ExposureRow] = field(default_factory=list)
    metrics: list[MetricRow] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    nbytes: int = 0
    duplicates: int = 0
    """Repeats of a claimed id within this batch, dropped by `drop_repeats`."""

    def __len__(self) -> int:
        return len(self.exposures) + len(self.metrics)

    def drop_repeats(self) -> None:
        """Keep the first event of each claimed id; count the later ones as duplicates."""
        claims = self.claims
        if len(claims) < 2 or len(set(claims)) == len(claims):
            return
        before = len(self)
        self.exposures, self.metrics, self.claims = _unique(
            self.exposures, self.metrics, claims, set())
        self.duplicates += before - len(self)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What became of one request's events: stored (buffered, without waiting) and repeats."""

    exposures: int
    metrics: int
    duplicates: int


class ServerIds:
    """Event ids for events sent without one: unique per process start, cheap to make."""

    def __init__(self) -> None:
        self._prefix = "srv-" + os.urandom(8).hex() + "-"
        self._n = count(1)

    def __call__(self) -> str:
        """The next id, `srv-<16 random hex>-<n>`; such ids skip dedupe."""
        return self._prefix + str(next(self._n))


server_event_id = ServerIds()


def exposure_row(
    experiment_id: str | uuid.UUID,
    unit_id: str,
    variant: int,
    ts: datetime | None = None,
    event_id: str | None = None,
    probability: float | None = None,
    covariates: Sequence[float | None] | None = None,
    attributes: str | None = None,
) -> ExposureRow:
    """An exposure row from already-validated parts (the assignment endpoint's shortcut).

    Give `event_id` only together with its claim in the batch; without one the server makes
    an id that is never deduped. `probability` as stored (litmus/db/events.py ExposureRow)."""
    when = to_micros(ts if ts is not None else datetime.now(UTC))
    eid = event_id if event_id is not None else server_event_id()
    return (str(experiment_id), unit_id, variant, when, eid, probability,
            *covariate_columns(covariates), attributes)


class IngestFailed(LitmusError):
    """A flush failed on data PostgreSQL refused (a bug, never a client's fault)."""

    status, code = 500, "ingest_failed"


@dataclass(slots=True, eq=False)
class _Submission:
    batch: EventBatch
    future: asyncio.Future[db.Stored] | None
    deadline: float
    taken: bool = False
    settled: bool = False


@dataclass(slots=True)
class IngestStats:
    """Counters for /metrics and tests."""

    accepted: int = 0
    stored_exposures: int = 0
    stored_metrics: int = 0
    duplicates: int = 0
    refused_full: int = 0
    refused_closed: int = 0
    timed_out: int = 0
    failed: int = 0
    flushes: int = 0
    retries: int = 0


class Ingestor:
    """The bounded buffer and its single group-commit writer; see the module docstring."""

    def __init__(
        self,
        dsn: str,
        *,
        flush_events: int = 5000,
        flush_age_s: float = 0.005,
        buffer_events: int = 200_000,
        buffer_bytes: int = 256 * 1024 * 1024,
        wait_s: float = 10.0,
        writers: int = 2,
        connect: Connector = db.connect,
        write: Writer = db.write_batch,
    ) -> None:
        self._dsn = dsn
        self.flush_events = flush_events
        self.flush_age_s = flush_age_s
        self.buffer_events = buffer_events
        self.buffer_bytes = buffer_bytes
        self.wait_s = wait_s
        self._connect = connect
        self._write = write
        self.writers = writers
        self._conns: list[Connection | None] = [None] * writers
        self._pending: list[_Submission] = []
        self._pending_events = 0
        self._first_at = 0.0
        self._events = 0  # buffered + being written
        self._bytes = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._drain_deadline: float | None = None
        self._down_since: float | None = None
        self._partitions_at = 0.0
        self.stats = IngestStats()

    @classmethod
    def from_settings(cls, dsn: str, settings: Settings) -> Ingestor:
        """An Ingestor tuned by the LITMUS_INGEST_* settings."""
        return cls(
            dsn,
            flush_events=settings.ingest_flush_events,
            flush_age_s=settings.ingest_flush_age_ms / 1000.0,
            buffer_events=settings.ingest_buffer_events,
            buffer_bytes=settings.ingest_buffer_bytes,
            wait_s=settings.ingest_wait_s,
        )

    # -- state -------------------------------------------------------------------------------

    @property
    def buffered_events(self) -> int:
        """Events accepted and not yet stored (waiting or being written)."""
        return self._events

    @property
    def buffered_bytes(self) -> int:
        """Approximate memory those events hold."""
        return self._bytes

    @property
    def database_up(self) -> bool:
        """False while the writer cannot reach PostgreSQL."""
        return self._down_since is None

    @property
    def accepting(self) -> bool:
        """False once shutdown began."""
        return not self._closing

    # -- submitting --------------------------------------------------------------------------

    def _admit(self, batch: EventBatch, waiter: bool) -> _Submission:
        n = len(batch)
        if self._closing:
            self.stats.refused_closed += n
            raise Unavailable(
                "this server is shutting down and accepts no more events; "
                "retry (another instance will take them)",
                retry_after=1,
            )
        if self._events + n > self.buffer_events or self._bytes + batch.nbytes > self.buffer_bytes:
            self.stats.refused_full += n
            raise Unavailable(
                f"the ingest buffer is full ({self._events} events waiting to be written); "
                "nothing of this request was stored: retry after a moment",
                retry_after=1,
            )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[db.Stored] | None = loop.create_future() if waiter else None
        sub = _Submission(batch, fut, time.monotonic() + self.wait_s)
        if not self._pending:
            self._first_at = time.monotonic()
            self._wake.set()
        self._pending.append(sub)
        self._pending_events += n
        self._events += n
        self._bytes += batch.nbytes
        self.stats.accepted += n
        self.stats.duplicates += batch.duplicates
        if self._pending_events >= self.flush_events:
            self._wake.set()
        return sub

    async def submit(self, batch: EventBatch, *, wait: bool = True) -> Receipt:
        """Buffer a validated batch; with `wait`, return once it is committed (else 503).

        The receipt counts the events stored and the repeats of a client event_id that were
        not. Without `wait` it counts what was buffered: repeats within the batch are known at
        once, repeats of events already stored only when written (IngestStats.duplicates)."""
        batch.drop_repeats()
        if not len(batch):
            return Receipt(0, 0, batch.duplicates)
        sub = self._admit(batch, wait)
        fut = sub.future
        if fut is None:
            return Receipt(len(batch.exposures), len(batch.metrics), batch.duplicates)
        try:
            stored = await asyncio.wait_for(asyncio.shield(fut), self.wait_s)
        except TimeoutError:
            stored = None
        if stored is None and sub.taken:
            # Being written: the writer's verdict comes at this same deadline. Bounded anyway.
            try:
                stored = await asyncio.wait_for(asyncio.shield(fut), self.wait_s)
            except TimeoutError:
                fut.add_done_callback(_retrieved)
                raise self._too_slow() from None
        if stored is not None:
            repeats = len(batch) - stored.exposures - stored.metrics
            return Receipt(stored.exposures, stored.metrics, batch.duplicates + repeats)
        # Never handed to PostgreSQL: take it back, so that the 503 means "not stored".
        self._pending.remove(sub)
        self._pending_events -= len(sub.batch)
        self._release(sub)
        self.stats.timed_out += len(sub.batch)
        raise self._too_slow()

    def offer_exposures(self, rows: Sequence[ExposureRow]) -> bool:
        """Fire-and-forget exposures with server-made ids (`log_exposure`); False when refused."""
        batch = EventBatch(list(rows), [], [], 200 * len(rows))
        try:
            self._admit(batch, waiter=False)
        except Unavailable:
            return False
        return True

    def _too_slow(self) -> Unavailable:
        return Unavailable(
            f"the database did not take these events within {self.wait_s:g} s; "
            "nothing of this request was stored: retry later",
            retry_after=5 if self._down_since is not None else 1,
        )

    def _release(self, sub: _Submission) -> None:
        if sub.settled:
            return
        sub.settled = True
        self._events -= len(sub.batch)
        self._bytes -= sub.batch.nbytes

    def _abandon(self, batch: list[_Submission]) -> None:
        """A writer failed unexpectedly: answer every waiter still waiting (nothing hangs)."""
        for sub in batch:
            if not sub.settled:
                self._fail(sub)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writers (they connect by themselves, and keep trying while the DB is away)."""
        self._tasks = [
            asyncio.create_task(self._run(i), name=f"ingest-writer-{i}") for i in range(self.writers)
        ]

    def stop_accepting(self) -> None:
        """Refuse new events from now on (503); what was accepted still gets written."""
        self._closing = True
        self._wake.set()

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting, write everything accepted (bounded by `timeout`), disconnect."""
        self.stop_accepting()
        limit = self.wait_s + 1.0 if timeout is None else timeout
        self._drain_deadline = time.monotonic() + limit
        self._wake.set()
        if self._tasks:
            done = asyncio.gather(*self._tasks)
            try:
                await asyncio.wait_for(asyncio.shield(done), limit + 2.0)
            except TimeoutError:
                for task in self._tasks:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await done
            except Exception:
                log.exception("ingest writer failed while draining")
        if self._events:
            log.error("shutdown: %d accepted events could not be written", self._events)
        else:
            log.info("ingest drained: every accepted event is stored")
        for slot in range(self.writers):
            self._drop_connection(slot)

    # -- the writer --------------------------------------------------------------------------

    async def _run(self, slot: int) -> None:
        """One writer: take what is buffered, store it, repeat (two overlap encode and commit)."""
        while True:
            try:
                await self._gather()
                if not self._pending:
                    if self._closing:
                        return
                    continue
                batch, self._pending, self._pending_events = self._pending, [], 0
                for sub in batch:
                    sub.taken = True
                try:
                    await self._write_with_retry(batch, slot)
                finally:
                    self._abandon(batch)
                if slot == 0:
                    await self._maintain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ingest writer tick failed; carrying on")
                await asyncio.sleep(0.05)

    async def _gather(self) -> None:
        """Wait until there is a batch to write: flush_events reached or the oldest aged."""
        while not self._pending and not self._closing:
            self._wake.clear()
            await self._wake.wait()
        while not self._closing and self._pending_events < self.flush_events:
            remaining = self._first_at + self.flush_age_s - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    async def _maintain(self) -> None:
        """Create the coming months' partitions now and then (between flushes)."""
        conn = self._conns[0]
        if conn is None or time.monotonic() - self._partitions_at < PARTITIONS_EVERY_S:
            return
        self._partitions_at = time.monotonic()
        try:
            made = await db.ensure_partitions(conn)
            if made:
                log.info("created %d event partitions", made)
        except Exception as exc:
            log.warning("creating event partitions failed (%s); trying again later", exc)
            self._partitions_at -= PARTITIONS_EVERY_S - 60.0

    async def _connection(self, slot: int) -> Connection:
        conn = self._conns[slot]
        if conn is None or conn.is_closed():
            conn = self._conns[slot] = await self._connect(self._dsn)
        return conn

    def _drop_connection(self, slot: int) -> None:
        conn, self._conns[slot] = self._conns[slot], None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    def _expire(self, batch: list[_Submission]) -> list[_Submission]:
        """Answer 503 to waiters whose time is up (their events leave the batch)."""
        now = time.monotonic()
        draining_over = self._drain_deadline is not None and now >= self._drain_deadline
        keep: list[_Submission] = []
        for sub in batch:
            fut = sub.future
            if draining_over or (fut is not None and now >= sub.deadline):
                self._release(sub)
                self.stats.timed_out += len(sub.batch)
                if fut is not None and not fut.done():
                    fut.set_exception(self._too_slow())
                    fut.add_done_callback(_retrieved)
                elif fut is None:
                    log.error("dropped %d events accepted without waiting: the database stayed "
                              "away until shutdown", len(sub.batch))
            else:
                keep.append(sub)
        return keep

    def _deadline(self, batch: list[_Submission]) -> float | None:
        deadlines = [s.deadline for s in batch if s.future is not None]
        if self._drain_deadline is not None:
            deadlines.append(self._drain_deadline)
        return min(deadlines) if deadlines else None

    async def _write_with_retry(self, batch: list[_Submission], slot: int) -> None:
        backoff = 0.05
        while True:
            batch = self._expire(batch)
            if not batch:
                return
            deadline = self._deadline(batch)
            timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
            started = time.monotonic()
            try:
                stored = await asyncio.wait_for(self._write_once(batch, slot), timeout)
            except TimeoutError:
                # Cancelled mid-flush: the transaction never committed; reconnect to be sure.
                self._drop_connection(slot)
                self._mark_down("the flush did not finish in time")
                continue
            except TRANSIENT as exc:
                self._drop_connection(slot)
                self._mark_down(f"{type(exc).__name__}: {exc}")
                self.stats.retries += 1
                pause = backoff
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                await asyncio.sleep(pause)
                backoff = min(backoff * 2, 1.0)
                continue
            except REFUSED as exc:
                if len(batch) > 1:
                    # One submission's rows were refused: find it, store the others.
                    log.warning("flush refused (%s); writing its requests one by one", exc)
                    for sub in batch:
                        await self._write_with_retry([sub], slot)
                    return
                log.error("PostgreSQL refused a batch of %d events: %s", len(batch[0].batch), exc)
                self._fail(batch[0])
                return
            self._mark_up()
            metrics.ingest_flushed(sum(len(s.batch) for s in batch), time.monotonic() - started)
            self.stats.flushes += 1
            for sub, mine in zip(batch, stored, strict=True):
                self.stats.stored_exposures += mine.exposures
                self.stats.stored_metrics += mine.metrics
                self.stats.duplicates += len(sub.batch) - mine.exposures - mine.metrics
                self._release(sub)
                if sub.future is not None and not sub.future.done():
                    sub.future.set_result(mine)
            return

    async def _write_once(self, batch: list[_Submission], slot: int) -> list[db.Stored]:
        """Write the flush; what each submission had stored, in order."""
        conn = await self._connection(slot)
        if self._partitions_at == 0.0:
            self._partitions_at = time.monotonic()
            await db.ensure_partitions(conn)
        # Every batch is free of repeats in itself (submit: drop_repeats), so only a flush of
        # several requests can repeat a claimed id: the earliest request keeps the event.
        if len(batch) == 1:
            b = batch[0].batch
            exposures: list[Any] = b.exposures
            metrics: list[Any] = b.metrics
            claims: list[Claim] = b.claims
            sizes = [(len(exposures), len(metrics))]
        else:
            exposures, metrics, claims, sizes = [], [], [], []
            for sub in batch:
                exposures += sub.batch.exposures
                metrics += sub.batch.metrics
                claims += sub.batch.claims
                sizes.append((len(sub.batch.exposures), len(sub.batch.metrics)))
            if claims and len(set(claims)) != len(claims):
                exposures, metrics, claims, sizes = [], [], [], []
                seen: set[Claim] = set()
                for sub in batch:
                    e, m, c = _unique(sub.batch.exposures, sub.batch.metrics, sub.batch.claims,
                                      seen)
                    exposures += e
                    metrics += m
                    claims += c
                    sizes.append((len(e), len(m)))
        return await self._write(conn, exposures, metrics, claims, sizes)

    def _fail(self, sub: _Submission) -> None:
        self._release(sub)
        self.stats.failed += len(sub.batch)
        if sub.future is not None and not sub.future.done():
            sub.future.set_exception(IngestFailed("the database refused these events"))
            sub.future.add_done_callback(_retrieved)

    def _mark_down(self, why: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("ingest: database unreachable (%s); retrying, requests wait up to %g s",
                        why, self.wait_s)

    def _mark_up(self) -> None:
        if self._down_since is not None:
            log.info("ingest: database back after %.1f s; writing again",
                     time.monotonic() - self._down_since)
            self._down_since = None


def _unique(
    exposures: list[Any], metrics: list[Any], claims: list[Claim], seen: set[Claim]
) -> tuple[list[Any], list[Any], list[Claim]]:
    """The events whose claimed id is not in `seen` yet, first one of each (rare: retries);
    adds their ids to `seen`. Rows with server-made ids are never claimed and always kept."""
    claimed = set(claims)
    out: list[list[Any]] = [[], []]
    kept: list[Claim] = []
    for kind, eid, rows, out_rows in ((EXPOSURE, db.EXPOSURE_EVENT_ID, exposures, out[0]),
                                      (METRIC, db.METRIC_EVENT_ID, metrics, out[1])):
        for r in rows:
            key = (r[db.EXPERIMENT_ID], kind, r[eid])
            if key in claimed:
                if key in seen:
                    continue
                seen.add(key)
                kept.append(key)
            out_rows.append(r)
    return out[0], out[1], kept


def _retrieved(fut: asyncio.Future[db.Stored]) -> None:
    # A handler may have gone away; mark the exception as seen so asyncio does not warn.
    if not fut.cancelled():
        fut.exception()
