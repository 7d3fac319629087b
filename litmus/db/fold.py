"""The database side of the results fold: new events as numpy arrays (binary COPY), per-arm
deltas written back, and the checkpoint of the in-memory per-unit state (sql/fold.sql)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from litmus.core.unitfold import Deltas, ExperimentUnits
from litmus.db.queries import SQL_DIR, load

log = logging.getLogger("litmus.recompute")

FOLD_TIMEOUT_S = 3600.0
CHUNK_BYTES = 64 << 20  # events are folded in chunks of about this much COPY data
CHECKPOINT_PART_BYTES = 32 << 20
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = len(_COPY_SIGNATURE) + 8  # signature, flags, header extension length (0)
_summarize = True  # off once the database refuses it (the role does not own the tables)


def q(name: str) -> str:
    """One named query of sql/fold.sql."""
    return load(SQL_DIR / "fold.sql")[name]


def _row_dtype(fields: Iterable[tuple[str, str]]) -> np.dtype[Any]:
    """A binary COPY row of non-null fixed-width fields: a field count, then per field its
    length and big-endian value."""
    spec: list[tuple[str, str]] = [("nfields", ">i2")]
    for name, fmt in fields:
        spec += [(f"{name}_len", ">i4"), (name, fmt)]
    return np.dtype(spec)


# uuid: 16 raw bytes; timestamptz: µs since 2000-01-01 UTC.
EXPOSURE_ROW = _row_dtype([("exp", "V16"), ("unit", ">i8"), ("variant", ">i2"), ("ts", ">i8"),
                           ("tie", ">i8")])
METRIC_ROW = _row_dtype([("exp", "V16"), ("unit", ">i8"), ("metric", ">i8"), ("value", ">f8")])
V1_METRIC_ROW = _row_dtype([("exp", "V16"), ("unit", ">i8"), ("metric", ">i8"),
                            ("value", ">f8"), ("events", ">i8")])

Rows = npt.NDArray[Any]


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


async def copy_rows(conn: asyncpg.Connection, query: str, args: tuple[Any, ...],
                    dtype: np.dtype[Any], on_rows: Callable[[Rows], Awaitable[None]]) -> int:
    """Run `query` as a binary COPY and hand its rows to `on_rows` in chunks; returns rows."""
    reader = _RowReader(dtype, on_rows)
    await conn.copy_from_query(query, *args, output=reader.feed, format="binary",
                               timeout=FOLD_TIMEOUT_S)
    await reader.finish()
    return reader.rows


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


async def metric_names(conn: asyncpg.Connection, lo: int, hi: int,
                       hashes: list[int]) -> dict[int, str]:
    """Names behind metric hashes, from the events of the range [lo, hi)."""
    rows = await conn.fetch(q("fold_metric_names"), lo, hi, hashes, timeout=FOLD_TIMEOUT_S)
    return {int(r["hash"]): r["metric"] for r in rows}


async def write_deltas(conn: asyncpg.Connection, deltas: dict[str, Deltas]) -> None:
    """Add one fold's per-arm deltas to the per-arm tables."""
    ex: list[list[Any]] = [[], [], [], []]
    me: list[list[Any]] = [[], [], [], [], [], [], []]
    tl: list[list[Any]] = [[], [], [], []]
    for exp_id, d in deltas.items():
        uid = uuid.UUID(exp_id)
        for arm, (units, events) in d.exposures.items():
            if units or events:
                for col, v in zip(ex, (uid, arm, units, events), strict=True):
                    col.append(v)
        for (arm, metric), (m_units, m_events, s, sq) in d.metrics.items():
            for col, v in zip(me, (uid, arm, metric, int(m_units), int(m_events), s, sq),
                              strict=True):
                col.append(v)
        for (slot, arm), units in d.timeline.items():
            if units:
                for col, v in zip(tl, (uid, slot, arm, units), strict=True):
                    col.append(v)
    if ex[0]:
        await conn.execute(q("fold_add_exposures"), *ex)
    if me[0]:
        await conn.execute(q("fold_add_metrics"), *me)
    if tl[0]:
        await conn.execute(q("fold_add_timeline"), *tl)


async def write_checkpoint(conn: asyncpg.Connection, states: dict[str, ExperimentUnits],
                           xid: int) -> int:
    """Store `states` (replacing their stored rows) and mark the checkpoint as taken at
    watermark `xid`; the stored states of other experiments stay (they did not change).
    Returns the bytes written. Runs in the caller's transaction, which holds the watermark."""
    await conn.execute(q("checkpoint_delete"), [uuid.UUID(e) for e in states])
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
    await conn.execute(q("checkpoint_mark"), xid)
    return size


async def checkpoint_experiments(conn: asyncpg.Connection) -> set[str]:
    """The experiments with a stored per-unit state."""
    return {str(r["experiment_id"]) for r in await conn.fetch(q("checkpoint_experiments"))}


async def read_checkpoint(conn: asyncpg.Connection,
                          experiments: list[str]) -> dict[str, ExperimentUnits]:
    """The stored per-unit states of these experiments, by experiment id."""
    parts: dict[str, dict[str, list[npt.NDArray[Any]]]] = {}
    ids = [uuid.UUID(e) for e in experiments]
    async with conn.transaction():
        async for r in conn.cursor(q("checkpoint_read"), ids, prefetch=8):
            arr = np.frombuffer(r["data"], np.dtype(r["dtype"]))
            parts.setdefault(str(r["experiment_id"]), {}).setdefault(r["name"], []).append(arr)
    return {exp_id: ExperimentUnits.from_arrays(
                {name: np.concatenate(chunks) for name, chunks in arrays.items()})
            for exp_id, arrays in parts.items()}


async def read_v1_tables(conn: asyncpg.Connection) -> dict[str, ExperimentUnits]:
    """The per-unit state held by the tables of an earlier Litmus (0010), by experiment."""
    units: list[Rows] = []
    mets: list[Rows] = []

    async def add_units(rows: Rows) -> None:
        units.append(rows)

    async def add_metrics(rows: Rows) -> None:
        mets.append(rows)

    await copy_rows(conn, q("v1_read_units"), (), EXPOSURE_ROW, add_units)
    await copy_rows(conn, q("v1_read_metrics"), (), V1_METRIC_ROW, add_metrics)
    names = {int(r["hash"]): r["metric"] for r in await conn.fetch(q("v1_metric_names"))}
    out: dict[str, ExperimentUnits] = {}
    u_all = np.concatenate(units) if units else np.empty(0, EXPOSURE_ROW)
    m_all = np.concatenate(mets) if mets else np.empty(0, V1_METRIC_ROW)
    m_by = dict(by_experiment(m_all))
    ids = {e for e, _ in by_experiment(u_all)} | set(m_by)
    u_by = dict(by_experiment(u_all))
    for exp_id in ids:
        u = u_by.get(exp_id, np.empty(0, EXPOSURE_ROW))
        m = m_by.get(exp_id, np.empty(0, V1_METRIC_ROW))
        per: dict[str, tuple[Any, Any, Any]] = {}
        for h in np.unique(m["metric"]).tolist():
            sel = m[m["metric"] == h]
            per[names[int(h)]] = (sel["unit"].astype(np.int64), sel["value"].astype(np.float64),
                                  sel["events"].astype(np.int64))
        # The old tables kept no tie-break: the stored first exposure wins ties, as it did.
        tie = np.full(len(u), np.iinfo(np.int64).min, np.int64)
        out[exp_id] = ExperimentUnits.from_units(u["unit"].astype(np.int64),
                                                 u["ts"].astype(np.int64), tie,
                                                 u["variant"].astype(np.int16), per)
    return out


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
