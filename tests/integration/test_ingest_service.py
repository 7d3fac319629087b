"""The ingest service's failure handling, with a fake writer: nobody waits forever, ever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from litmus.db.events import Stored
from litmus.errors import Unavailable
from litmus.services.ingest import (
    EXPOSURE,
    EventBatch,
    IngestFailed,
    Ingestor,
    Receipt,
    exposure_row,
)


class FakeConn:
    """Stands in for a writer connection."""

    def __init__(self) -> None:
        self.closed = False

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True


async def fake_connect(_dsn: str) -> Any:
    return FakeConn()


def batch(n: int = 3, ids: bool = False) -> EventBatch:
    rows = [exposure_row("6f1c3c3e-0000-4000-8000-000000000000", f"u{i}", 0,
                         event_id=f"e{i}" if ids else None) for i in range(n)]
    claims = [(r[0], EXPOSURE, r[4]) for r in rows] if ids else []
    return EventBatch(rows, [], claims, 100 * n)


def ingestor(write: Any, **kw: Any) -> Ingestor:
    ing = Ingestor("fake", connect=fake_connect, write=write, flush_age_s=0.001, **kw)
    ing._partitions_at = time.monotonic()  # no partition upkeep against the fake
    return ing


async def test_a_bug_in_the_writer_answers_500_instead_of_hanging() -> None:
    async def broken(*_: Any) -> Stored:
        raise RuntimeError("boom")

    ing = ingestor(broken, wait_s=5.0)
    await ing.start()
    with pytest.raises(IngestFailed):
        await ing.submit(batch())
    # The failure itself is the answer (IngestFailed, 500), not a 503 after the 5 s wait.
    assert ing.stats.failed == 3 and ing.stats.timed_out == 0
    assert ing.buffered_events == 0
    await ing.close(timeout=1.0)


async def test_an_unclassified_client_error_is_retried_on_a_new_connection() -> None:
    calls: list[int] = []

    async def flaky(_conn: Any, exposures: Sequence[Any], _metrics: Sequence[Any],
                    _claims: Sequence[Any], sizes: Sequence[tuple[int, int]]) -> list[Stored]:
        calls.append(len(exposures))
        if len(calls) < 3:
            raise asyncpg.InternalClientError("cannot switch to state 15")
        return [Stored(e, m) for e, m in sizes]

    ing = ingestor(flaky, wait_s=5.0)
    await ing.start()
    await ing.submit(batch())
    assert len(calls) == 3
    assert ing.stats.retries == 2 and ing.stats.stored_exposures == 3
    assert ing.database_up
    await ing.close(timeout=1.0)


async def test_database_away_longer_than_the_wait_is_503_and_the_buffer_empties() -> None:
    async def down(*_: Any) -> Stored:
        raise ConnectionRefusedError("no server")

    ing = ingestor(down, wait_s=0.3)
    await ing.start()
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await ing.submit(batch())
    # It waited for the database (0.3 s), and gave up then rather than holding on.
    assert time.monotonic() - t0 > 0.25
    assert ing.stats.timed_out == 3
    assert info.value.headers["Retry-After"] == "5"
    assert not ing.database_up
    assert ing.buffered_events == 0
    await ing.close(timeout=0.5)


async def test_repeats_within_one_flush_are_written_once() -> None:
    seen: list[tuple[int, int, list[tuple[int, int]]]] = []

    async def record(_conn: Any, exposures: Sequence[Any], _m: Sequence[Any],
                     claims: Sequence[Any], sizes: Sequence[tuple[int, int]]) -> list[Stored]:
        seen.append((len(exposures), len(claims), list(sizes)))
        return [Stored(e, m) for e, m in sizes]

    ing = ingestor(record, wait_s=5.0)
    ing.flush_age_s = 0.05
    await ing.start()
    first, second = await asyncio.gather(ing.submit(batch(ids=True)), ing.submit(batch(ids=True)))
    # One flush; the earlier request keeps the events, the later one is told they repeat.
    assert seen == [(3, 3, [(3, 0), (0, 0)])]
    assert (first, second) == (Receipt(3, 0, 0), Receipt(0, 0, 3))
    assert ing.stats.duplicates == 3
    await ing.close(timeout=1.0)


async def test_repeats_within_one_request_are_dropped_before_the_buffer() -> None:
    async def ok(_conn: Any, e: Sequence[Any], _m: Sequence[Any], claims: Sequence[Any],
                 sizes: Sequence[tuple[int, int]]) -> list[Stored]:
        assert len(e) == len(claims) == 3
        return [Stored(a, b) for a, b in sizes]

    ing = ingestor(ok, wait_s=5.0)
    await ing.start()
    twice = batch(ids=True)
    twice.exposures += twice.exposures
    twice.claims += twice.claims
    assert await ing.submit(twice, wait=False) == Receipt(3, 0, 3)
    assert ing.stats.duplicates == 3
    await ing.close(timeout=1.0)
    assert ing.stats.stored_exposures == 3 and ing.stats.duplicates == 3


async def test_closed_ingestor_refuses_with_503() -> None:
    async def ok(_conn: Any, _e: Sequence[Any], _m: Sequence[Any], _c: Sequence[Any],
                 sizes: Sequence[tuple[int, int]]) -> list[Stored]:
        return [Stored(e, m) for e, m in sizes]

    ing = ingestor(ok)
    await ing.start()
    await ing.close(timeout=1.0)
    with pytest.raises(Unavailable):
        await ing.submit(batch())
    assert ing.offer_exposures(batch().exposures) is False
