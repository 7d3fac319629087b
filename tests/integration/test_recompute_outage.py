"""The recompute loop through a database outage: one warning when it starts, one line when it
ends, no traceback per tick, and recomputes resume by themselves. The leader reaches the test
database through a TCP proxy that the test cuts (the port refuses connections and every open
connection is dropped) and restores."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from litmus.db.pool import create_pool
from litmus.services.recompute import Recompute
from tests.dbproxy import DatabaseProxy


async def until(cond: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_an_outage_logs_one_warning_and_one_line_when_it_ends(
        database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A leader folding every 20 ms loses its database for a second (many failed ticks): one
    WARNING when the outage starts, one INFO line with its length when it ends, no traceback,
    and it recomputes again by itself."""
    proxy = await DatabaseProxy(database_url).start()
    pool = await create_pool(proxy.url, min_size=1, max_size=2)
    rec = Recompute(pool, proxy.url, None, 0.02)  # type: ignore[arg-type]
    caplog.set_level(logging.DEBUG, "litmus")
    try:
        await rec.start()
        await until(lambda: rec.ticks >= 2)
        caplog.clear()
        await proxy.cut()
        await asyncio.sleep(1.0)  # about 50 ticks at 0.02 s, each failing at once
        tries, ticks = rec.outage_tries, rec.ticks
        await proxy.start()
        await until(lambda: rec.ticks > ticks + 1)
    finally:
        await rec.stop()
        await pool.close()
        await proxy.cut()
    mine = [r for r in caplog.records if r.name.startswith("litmus")]
    assert not [r for r in mine if r.exc_info], "a traceback was logged"
    loud = [r for r in mine if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and "the database is unreachable" in loud[0].getMessage(), [
        r.getMessage() for r in loud]
    back = [r for r in mine if "answers again" in r.getMessage()]
    assert len(back) == 1 and back[0].levelno == logging.INFO
    assert "tries failed" in back[0].getMessage()
    assert tries >= 10 and rec.outage_since is None and rec.outage_tries == 0
