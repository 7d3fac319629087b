"""The embedded PostgreSQL and the worker processes under real kills: what Litmus started, it
keeps running, stops on a clean exit, and never widens folder permissions to do it."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from litmus.db.embedded import PidFile
from litmus.supervise import run_workers
from tests.integration.test_ingest_processes import (
    Load,
    check_exactly_once,
    launch,
    run_load,
    stored_ids,
)
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow

START_S = 180.0  # initdb, a first start and the migrations, on a busy 2-core machine


def embedded(data_dir: Path) -> ServerProcess:
    """`litmus serve` on its own embedded PostgreSQL in data_dir (an empty DATABASE_URL)."""
    return ServerProcess("", data_dir)


def dsn(data_dir: Path) -> str:
    return f"postgresql://postgres:@/postgres?host={data_dir.resolve() / 'pg'}"


def postgres_of(pgdata: Path) -> list[psutil.Process]:
    """Every postgres process (postmaster and children) working in this data folder."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "postgres" and Path(proc.cwd()) == pgdata.resolve():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def postmaster(pgdata: Path) -> int:
    info = PidFile.read(pgdata)
    assert info is not None and psutil.pid_exists(info.pid)
    return info.pid


def wait_until(what: str, check: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s:g} s: {what}")


@pytest.fixture
def closed_parents(tmp_path: Path) -> Iterator[Path]:
    """A data folder inside two folders only their owner may enter."""
    outer = tmp_path / "private"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    outer.chmod(0o700)
    inner.chmod(0o700)
    yield inner / "data"
    for p in (outer, inner):
        p.chmod(0o755)  # so pytest can clean tmp_path up whatever the test did


def test_parent_folders_keep_their_modes_and_clean_exit_stops_postgres(
    closed_parents: Path, tmp_path: Path
) -> None:
    modes_before = {p: stat.S_IMODE(p.stat().st_mode)
                    for p in (closed_parents.parent, closed_parents.parent.parent, tmp_path)}
    srv = embedded(closed_parents).start(START_S)
    try:
        pgdata = closed_parents / "pg"
        assert postgres_of(pgdata), "the embedded server runs in the data folder"
        modes_after = {p: stat.S_IMODE(p.stat().st_mode) for p in modes_before}
        assert modes_after == modes_before, "no folder outside the data directory changed mode"
        assert modes_before[closed_parents.parent] == 0o700
        srv.signal(signal.SIGTERM)
        assert srv.wait(60) == 0, srv.log()
    finally:
        srv.stop()
    assert not postgres_of(closed_parents / "pg"), "a clean exit stops the server it started"


async def test_killed_postmaster_is_restarted_and_ingestion_resumes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = embedded(data).start(START_S)
    try:
        await launch(srv.base_url)
        load = Load()
        stop = asyncio.Event()
        t0 = time.monotonic()
        task = asyncio.create_task(run_load(srv.base_url, stop, load))
        await asyncio.sleep(2.0)
        old = postmaster(data / "pg")
        acked_before = len(load.acked)
        killed_at = time.monotonic() - t0
        os.kill(old, signal.SIGKILL)
        # Resumed: an event sent after the kill is acknowledged again.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(t > killed_at + 0.5 for t in load.acked_after.values()):
                break
            await asyncio.sleep(0.1)
        resumed_after = min((t for t in load.acked_after.values() if t > killed_at + 0.5),
                            default=float("inf")) - killed_at
        await asyncio.sleep(1.0)
        stop.set()
        await task
        new = postmaster(data / "pg")
        stored = await stored_ids(dsn(data))
        assert srv.proc is not None and srv.proc.poll() is None, "Litmus lived through it"
    finally:
        srv.stop()
    assert acked_before > 0 and new != old
    assert resumed_after < 15.0, f"ingestion resumed {resumed_after:.1f} s after the kill"
    check_exactly_once(load, stored)  # no acknowledged event lost
    log = srv.log()
    assert log.count("embedded PostgreSQL (pid") == 1 and "is gone" in log, log
    assert "embedded PostgreSQL is back" in log, log
    print(f"resumed {resumed_after:.1f} s after the kill; statuses {load.statuses}")


def test_clean_exit_after_an_earlier_sigkill_stops_postgres(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = embedded(data).start(START_S)
    try:
        pid = postmaster(data / "pg")
        first.signal(signal.SIGKILL)
        first.wait(30)
    finally:
        first.stop()
    assert psutil.pid_exists(pid), "the server outlives a SIGKILLed Litmus (as PostgreSQL should)"
    second = embedded(data).start(START_S)
    try:
        assert postmaster(data / "pg") == pid, "the next Litmus reuses the running server"
        second.signal(signal.SIGTERM)
        assert second.wait(60) == 0, second.log()
    finally:
        second.stop()
    assert not postgres_of(data / "pg"), "the clean exit stopped it despite the stale entry"


def _workers(parent: int) -> list[int]:
    """The live worker processes of a `serve --workers` parent."""
    pids = []
    for kid in psutil.Process(parent).children():
        try:
            cmd = " ".join(kid.cmdline())
        except psutil.Error:  # gone, or a zombie not reaped yet
            continue
        if "spawn_main" in cmd and "resource_tracker" not in cmd:
            pids.append(kid.pid)
    return sorted(pids)


def _listens(pid: int, port: int) -> bool:
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


def _listeners(port: int) -> set[int | None]:
    """The owners of every socket listening on the port, machine-wide (None: an owner that is
    exiting, or whose files are being closed)."""
    return {c.pid for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_a_killed_worker_is_replaced(database_url: str, tmp_path: Path) -> None:
    srv = ServerProcess(database_url, tmp_path / "w", workers=2).start(START_S)
    try:
        assert srv.proc is not None
        wait_until("two workers", lambda: len(_workers(srv.proc.pid)) == 2, 30)  # type: ignore[union-attr]
        before = _workers(srv.proc.pid)
        # /readyz answered from the first worker that listens; the other may still be starting,
        # and killing the only one listening would leave the port refusing until it is up.
        wait_until("both workers listen", lambda: all(_listens(p, srv.port) for p in before), 60)
        os.kill(before[0], signal.SIGKILL)
        # A connection the kernel queued on the killed worker's socket in the instant before it
        # closed is reset (SO_REUSEPORT spreads connections over the listening sockets): once
        # its socket is gone, the other worker takes every connection.
        # Not "the process is a zombie": a multi-threaded process's main thread is one before
        # the last thread has closed the files, and a request sent in that gap is reset.
        wait_until("the killed worker's socket closes",
                   lambda: before[0] not in (owners := _listeners(srv.port)) and None not in owners,
                   30)
        assert all(_answers(srv.base_url) for _ in range(5)), "the other worker answers meanwhile"
        wait_until("a new worker", lambda: (len(now := _workers(srv.proc.pid)) == 2  # type: ignore[union-attr]
                                             and before[0] not in now), 60)
        after = _workers(srv.proc.pid)
        assert before[1] in after and before[0] not in after
        new = next(p for p in after if p not in before)
        wait_until("the new worker listens", lambda: _listens(new, srv.port), 60)
        # The port kept answering, and answers now whichever worker takes the connection.
        assert all(_answers(srv.base_url) for _ in range(20))
        assert "exited with code -9" in srv.log() and "started (pid" in srv.log()
        srv.signal(signal.SIGTERM)
        assert srv.wait(60) == 0, srv.log()
    finally:
        srv.stop()


def test_a_worker_that_keeps_dying_at_start_stops_the_parent() -> None:
    # os._exit(3) as the "worker": every start dies at once. The parent backs off, then gives up.
    t0 = time.monotonic()
    code = run_workers(os._exit, (3,), 1, quick_death_s=30.0, give_up=3, max_pause_s=0.2)
    assert code == 1
    assert time.monotonic() - t0 < 60
