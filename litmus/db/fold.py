"""The database side of the results fold (sql/fold.sql): the fold's transaction and its
watermark, new events as numpy arrays (binary COPY, handed out chunk by chunk), per-arm deltas
written back, and the checkpoint of the in-memory per-unit state.

litmus/services/fold.py calls down into these functions and is never called back: each
function runs its statements and returns, except the two readers of events, which are async
iterators the service pulls chunks from."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from litmus.core.unitfold import HOURLY_SLOT_S, MAX_COVARIATES, Deltas, ExperimentUnits
from litmus.db.queries import query
from litmus.db.types import Connection

log = logging.getLogger("litmus.recompute")

FOLD_TIMEOUT_S = 3600.0
CHUNK_BYTES = 64 << 20  # events are folded in chunks of about this much COPY data
CHECKPOINT_PART_BYTES = 32 << 20
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = len(_COPY_SIGNATURE) + 8  # signature, flags, header extension length (0)
_summarize = True  # off once the database refuses it (the role does not own the tables)


_q = partial(query, "fold")


def _row_dtype(fields: Iterable[tuple[str, str]]) -> np.dtype[Any]:
    """A binary COPY row of non-null fixed-width fields: a field count, then per field its
    length and big-endian value."""
    spec: list[tuple[str, str]] = [("nfields", ">i2")]
    for name, fmt in fields:
        spec += [(f"{name}_len", ">i4"), (name, fmt)]
    return np.dtype(spec)


# uuid: 16 raw bytes; timestamptz: µs since 2000-01-01 UTC.
EXPOSURE_ROW = _row_dtype([("exp", "V16"), ("unit", ">i8"), ("variant", ">i2"), ("ts", ">i8"),
                           ("tie", ">i8"), ("prob", ">f8"),
                           *((f"cov{i}", ">f8") for i in range(MAX_COVARIATES))])
METRIC_ROW = _row_dtype([("exp", "V16"), ("unit", ">i8"), ("metric", ">i8"), ("value", ">f8")])

Rows = npt.NDArray[Any]


def covariates(rows: Rows) -> npt.NDArray[np.float64]:
    """The exposure rows' covariates, one column per declared position (NaN: not sent)."""
    return np.stack([rows[f"cov{i}"].astype(np.float64) for i in range(MAX_COVARIATES)], axis=1)


@dataclass(frozen=True, slots=True)
class Watermark:
    """The watermark row as a fold finds it (locked), and how far this fold may read."""

    lo: int  # the events of transactions before this one are folded
    hi: int  # every transaction before this one has ended: the fold reads [lo, hi)
    version: int  # the fold version that last wrote the row
    checkpoint: int | None  # the watermark the stored checkpoint was taken at; None: none
    created: bool  # the row was missing (an operator's manual re-fold) and now reads 0


@asynccontextmanager
async def begin(conn: Connection, version: int) -> AsyncIterator[Watermark]:
    """The fold's transaction, with the watermark row locked; commits when the block ends.

    One repeatable-read snapshot serves every statement, so a stop committed mid-fold cannot
    cut some of its events and not others. `version` is recorded on the row by the trigger of
    sql/migrations/0009 when this transaction writes it."""
    async with conn.transaction(isolation="repeatable_read"):
        await conn.execute(_q("fold_version_set"), str(version))
        row = await conn.fetchrow(_q("watermark_lock"))
        created = row is None
        if row is None:
            await conn.execute(_q("watermark_init"))
            row = await conn.fetchrow(_q("watermark_lock"))
            assert row is not None
        hi = int(await conn.fetchval(_q("snapshot_xmin")))
        cp = row["checkpoint_xid"]
        yield Watermark(lo=int(row["xid_lo"]), hi=hi, version=int(row["fold_version"]),
                        checkpoint=None if cp is None else int(cp), created=created)


@asynccontextmanager
async def hold_watermark(conn: Connection, version: int) -> AsyncIterator[int | None]:
    """A transaction with the watermark row locked, for a checkpoint; yields the watermark
    (None when the row is missing) and commits when the block ends."""
    async with conn.transaction():
        await conn.execute(_q("fold_version_set"), str(version))
        row = await conn.fetchrow(_q("watermark_lock"))
        yield None if row is None else int(row["xid_lo"])


async def reset(conn: Connection) -> None:
    """Forget every fold: watermark at 0, no checkpoint, empty per-arm tables, no stop cut-off
    (folding everything again, every stop cuts every event dated after it)."""
    await conn.execute(_q("fold_reset"))
    await conn.execute(_q("fold_reset_arms"))
    await conn.execute(_q("fold_cutoffs_clear"))


async def pin_cutoffs(conn: Connection, lo: int) -> None:
    """Pin at `lo` the stop cut-off of every experiment this fold is the first to see stopped."""
    await conn.execute(_q("fold_cutoffs_pin"), lo)


class _RowReader:
    """Parses a binary COPY stream into arrays of whole rows, handed on in chunks."""

    def __init__(self, dtype: np.dtype[Any], on_rows: Callable[[Rows], Awaitable[None]]) -> None:
        self.dtype = dtype
        self.on_rows = on_rows
        self.parts: list[bytes] = []
        self.size = 0
        self.header = False
        self.rows = 0

    async def feed(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= CHUNK_BYTES:
            await self._drain()

    async def _drain(self) -> None:
        buf = b"".join(self.parts)
        start = 0
        if not self.header:
            if len(buf) < _HEADER:
                return
            if buf[:_HEADER] != _COPY_SIGNATURE + bytes(8):  # no flags, no header extension
                raise ValueError("not a binary COPY stream of the expected kind")
            start, self.header = _HEADER, True
        n = (len(buf) - start) // self.dtype.itemsize
        end = start + n * self.dtype.itemsize
        rest = buf[end:]
        self.parts, self.size = [rest], len(rest)
        if n == 0:
            return
        rows = np.frombuffer(buf, self.dtype, count=n, offset=start)
        # Every field is fixed-width and non-null; anything else is a layout mismatch.
        names = [f for f in self.dtype.names or () if f.endswith("_len")]
        if np.any(rows["nfields"] != len(names)) or any(
                np.any(rows[f] != self.dtype[f.removesuffix("_len")].itemsize) for f in names):
            raise ValueError("unexpected binary COPY row layout")
        self.rows += n
        await self.on_rows(rows)

    async def finish(self) -> None:
        await self._drain()
        rest = b"".join(self.parts)
        if rest != b"\xff\xff" or not self.header:
            raise ValueError(f"unexpected binary COPY trailer ({len(rest)} bytes)")


async def _chunks(conn: Connection, query: str, args: tuple[Any, ...],
                  dtype: np.dtype[Any]) -> AsyncGenerator[Rows, None]:
    """The rows of `query`, run as a binary COPY, in chunks of about CHUNK_BYTES.

    asyncpg pushes COPY data into a callback, so the COPY runs in a task of its own and hands
    each chunk over; it reads on only once the caller asks for the next chunk, so one chunk at
    a time is in memory, as when the rows were folded inside the callback. A caller that stops
    early must close the iterator (contextlib.aclosing): the rest of the COPY is then read and
    dropped, which leaves the connection ready for the caller's rollback. (Cancelling the COPY
    instead can leave asyncpg waiting for a server that had already finished: the rollback
    then hangs until the command timeout.)"""
    chunks: asyncio.Queue[Rows] = asyncio.Queue(maxsize=1)
    resume = asyncio.Event()
    wanted = True

    async def hand_over(rows: Rows) -> None:
        if wanted:
            resume.clear()
            chunks.put_nowait(rows)
            await resume.wait()

    async def copy() -> None:
        reader = _RowReader(dtype, hand_over)
        await conn.copy_from_query(query, *args, output=reader.feed, format="binary",
                                   timeout=FOLD_TIMEOUT_S)
        await reader.finish()

    task = asyncio.create_task(copy(), name="fold-copy")
    # Its error is the caller's when the caller awaits it, and only then.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    get: asyncio.Future[Rows] | None = None
    try:
        while True:
            get = asyncio.ensure_future(chunks.get())
            await asyncio.wait((get, task), return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                await task  # finished, or failed
                return
            rows = get.result()
            get = None
            yield rows
            del rows  # the caller is done with them: not kept while the COPY reads on
            resume.set()
    finally:
        wanted = False
        resume.set()
        if get is not None:
            get.cancel()
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            task.cancel()
            raise


def read_exposures(conn: Connection, lo: int, hi: int) -> AsyncGenerator[Rows, None]:
    """The exposures of transactions [lo, hi) as EXPOSURE_ROW chunks, stop cut-offs applied."""
    return _chunks(conn, _q("fold_read_exposures"), (lo, hi), EXPOSURE_ROW)


def read_metrics(conn: Connection, lo: int, hi: int) -> AsyncGenerator[Rows, None]:
    """The metric events of transactions [lo, hi) as METRIC_ROW chunks, likewise."""
    return _chunks(conn, _q("fold_read_metrics"), (lo, hi), METRIC_ROW)


def by_experiment(rows: Rows) -> list[tuple[str, Rows]]:
    """Rows split by experiment id, each part in the rows' order.

    Few experiments get events at once, so each is picked out with one comparison pass."""
    out: list[tuple[str, Rows]] = []
    ids = np.ascontiguousarray(rows["exp"]).view(np.uint64).reshape(-1, 2)
    while len(rows):
        first = ids[0]
        same = (ids[:, 0] == first[0]) & (ids[:, 1] == first[1])
        exp_id = str(uuid.UUID(bytes=rows["exp"][0].tobytes()))
        if same.all():
            out.append((exp_id, rows))
            break
        out.append((exp_id, rows[same]))
        rows, ids = rows[~same], ids[~same]
    return out


async def metric_names(conn: Connection, lo: int, hi: int,
                       hashes: list[int]) -> dict[int, str]:
    """Names behind metric hashes, from the events of the range [lo, hi)."""
    rows = await conn.fetch(_q("fold_metric_names"), lo, hi, hashes, timeout=FOLD_TIMEOUT_S)
    return {int(r["hash"]): r["metric"] for r in rows}


async def metric_hashes(conn: Connection, names: list[str]) -> dict[int, str]:
    """The hash the events' rows carry for each of these metric names, hash -> name."""
    return {int(r["hash"]): r["metric"] for r in await conn.fetch(_q("metric_hashes"), names)}


async def write_deltas(conn: Connection, deltas: dict[str, Deltas], xid: int) -> None:
    """Add one fold's per-arm deltas to the per-arm tables and move the watermark to `xid`."""
    ex: list[list[Any]] = [[], [], [], []]
    me: list[list[Any]] = [[], [], [], [], [], [], [], []]
    tl: list[list[Any]] = [[], [], [], []]
    for exp_id, d in deltas.items():
        uid = uuid.UUID(exp_id)
        for arm, (units, events) in d.exposures.items():
            if units or events:
                for col, v in zip(ex, (uid, arm, units, events), strict=True):
                    col.append(v)
        for (arm, metric), (m_units, m_events, s, sq, pos) in d.metrics.items():
            for col, v in zip(me, (uid, arm, metric, int(m_units), int(m_events), s, sq,
                                   int(pos)), strict=True):
                col.append(v)
        for (slot, arm), units in d.timeline.items():
            if units:
                for col, v in zip(tl, (uid, slot, arm, units), strict=True):
                    col.append(v)
    if ex[0]:
        await conn.execute(_q("fold_add_exposures"), *ex)
    if me[0]:
        await conn.execute(_q("fold_add_metrics"), *me)
    if tl[0]:
        await conn.execute(_q("fold_add_timeline"), *tl, timedelta(seconds=HOURLY_SLOT_S))
    await conn.execute(_q("watermark_set"), xid)


async def set_positive(conn: Connection,
                       counts: dict[str, dict[tuple[int, str], int]]) -> None:
    """Replace every per-arm count of units with a total above 0 by `counts` (experiment ->
    (arm, metric) -> units); rows not listed get 0."""
    cols: list[list[Any]] = [[], [], [], []]
    for exp_id, per in counts.items():
        uid = uuid.UUID(exp_id)
        for (arm, metric), n in per.items():
            for col, v in zip(cols, (uid, arm, metric, n), strict=True):
                col.append(v)
    await conn.execute(_q("positive_clear"), timeout=FOLD_TIMEOUT_S)
    if cols[0]:
        await conn.execute(_q("positive_set"), *cols, timeout=FOLD_TIMEOUT_S)


async def write_checkpoint(conn: Connection, states: dict[str, ExperimentUnits],
                           xid: int) -> int:
    """Store `states` (replacing their stored rows) and mark the checkpoint as taken at
    watermark `xid`; the stored states of other experiments stay (they did not change).
    Returns the bytes written. Runs in the caller's transaction, which holds the watermark."""
    await conn.execute(_q("checkpoint_delete"), [uuid.UUID(e) for e in states])
    size = 0

    def records() -> Iterable[tuple[uuid.UUID, str, int, str, bytes]]:
        nonlocal size
        for exp_id, st in states.items():
            uid = uuid.UUID(exp_id)
            for name, arr in st.arrays().items():
                data = np.ascontiguousarray(arr).tobytes()
                size += len(data)
                step = CHECKPOINT_PART_BYTES - CHECKPOINT_PART_BYTES % max(arr.itemsize, 1)
                for part, off in enumerate(range(0, max(len(data), 1), step)):
                    yield uid, name, part, arr.dtype.str, data[off:off + step]

    await conn.copy_records_to_table("fold_checkpoint", records=list(records()),
                                     columns=("experiment_id", "name", "part", "dtype", "data"),
                                     timeout=FOLD_TIMEOUT_S)
    await conn.execute(_q("checkpoint_mark"), xid)
    return size


async def checkpoint_experiments(conn: Connection) -> set[str]:
    """The experiments with a stored per-unit state."""
    return {str(r["experiment_id"]) for r in await conn.fetch(_q("checkpoint_experiments"))}


async def read_checkpoint(conn: Connection,
                          experiments: list[str]) -> dict[str, ExperimentUnits]:
    """The stored per-unit states of these experiments, by experiment id."""
    parts: dict[str, dict[str, list[npt.NDArray[Any]]]] = {}
    ids = [uuid.UUID(e) for e in experiments]
    async with conn.transaction():
        async for r in conn.cursor(_q("checkpoint_read"), ids, prefetch=8):
            arr = np.frombuffer(r["data"], np.dtype(r["dtype"]))
            parts.setdefault(str(r["experiment_id"]), {}).setdefault(r["name"], []).append(arr)
    return {exp_id: ExperimentUnits.from_arrays(
                {name: np.concatenate(chunks) for name, chunks in arrays.items()})
            for exp_id, arrays in parts.items()}


# The errors that end a session: the connection broke, or the server terminated the backend.
_SESSION_ENDED = (asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError,
                  asyncpg.CrashShutdownError, asyncpg.CannotConnectNowError)


def _connection_lost(conn: Connection, exc: BaseException) -> bool:
    return isinstance(exc, _SESSION_ENDED) or conn.is_closed()


async def summarize_new_ranges(conn: Connection) -> int:
    """Summarize the BRIN ranges of events stored since the last call (see the query).

    Only an optimisation, so it never fails a fold and waits for no one: each partition in
    its own short transaction; one being vacuumed (which holds the lock this needs) or any
    other error skips that partition until the next fold, which then reads more pages."""
    global _summarize
    if not _summarize:
        return 0
    done = 0
    try:
        indexes = [r["index"] for r in await conn.fetch(_q("xid_brin_partitions"))]
    except (asyncpg.PostgresError, TimeoutError) as exc:
        if _connection_lost(conn, exc):
            raise  # the fold cannot go on with this connection either
        log.warning("BRIN summarization skipped: %s", exc)
        return 0
    for index in indexes:
        try:
            async with conn.transaction():
                await conn.execute(_q("summarize_lock_timeout"))
                done += int(await conn.fetchval(_q("summarize_new_ranges"), index,
                                                timeout=FOLD_TIMEOUT_S) or 0)
        except asyncpg.LockNotAvailableError:
            log.debug("BRIN summarization of %s skipped: the partition is being vacuumed", index)
        except asyncpg.InsufficientPrivilegeError as exc:
            _summarize = False  # will not change while this process runs: say it once
            log.warning("BRIN summarization turned off: %s (the database role must own the "
                        "event tables; autovacuum still summarizes them, later)", exc)
            return done
        except (asyncpg.PostgresError, TimeoutError) as exc:
            if _connection_lost(conn, exc):
                raise
            log.warning("BRIN summarization of %s skipped: %s", index, exc)
    return done
