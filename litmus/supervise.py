"""`serve --workers N`: the parent keeps N worker processes running until it is told to stop."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("litmus")

# A worker that dies sooner than this after its start counts as failing to start: those are
# restarted after a growing pause, and after GIVE_UP such deaths in a row the parent stops.
QUICK_DEATH_S = 5.0
GIVE_UP = 5
MAX_PAUSE_S = 30.0


@dataclass
class _Slot:
    """One of the N worker places: its current process, or when to start the next one."""

    index: int
    proc: BaseProcess | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0


def run_workers(target: Callable[..., None], args: tuple[Any, ...], count: int, *,
                quick_death_s: float = QUICK_DEATH_S, give_up: int = GIVE_UP,
                max_pause_s: float = MAX_PAUSE_S) -> int:
    """Run `count` spawned processes of `target(*args)`; replace any that dies unasked.

    SIGTERM and SIGINT are forwarded to the workers as SIGTERM; the parent then waits for
    all of them and returns 0 if every one exited 0 (else 1)."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(target, args, count, quick_death_s, give_up, max_pause_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(target: Callable[..., None], args: tuple[Any, ...], count: int, quick_death_s: float,
         give_up: int, max_pause_s: float) -> int:
    ctx = multiprocessing.get_context("spawn")
    slots = [_Slot(i) for i in range(count)]
    stopping = False
    failed = False

    def start(slot: _Slot) -> None:
        proc = ctx.Process(target=target, args=args, daemon=False, name=f"litmus-worker-{slot.index}")
        proc.start()
        slot.proc, slot.started_at = proc, time.monotonic()

    def forward() -> None:
        for slot in slots:
            p = slot.proc
            if p is not None and p.pid is not None and p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        forward()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in slots:
        start(slot)

    while not stopping:
        now = time.monotonic()
        waiting = [s.restart_at for s in slots if s.proc is None]
        timeout = max(0.0, min([*waiting, now + 1.0]) - now)
        sentinels = [s.proc.sentinel for s in slots if s.proc is not None]
        multiprocessing.connection.wait(sentinels, timeout=timeout)
        if stopping:
            break
        now = time.monotonic()
        for slot in slots:
            p = slot.proc
            if p is not None and p.exitcode is not None:
                p.join()
                lived = now - slot.started_at
                slot.quick_deaths = slot.quick_deaths + 1 if lived < quick_death_s else 0
                if slot.quick_deaths >= give_up:
                    log.error("worker %d died %d times within %g s of starting (last exit code "
                              "%s); stopping", slot.index, slot.quick_deaths, quick_death_s,
                              p.exitcode)
                    slot.proc = None
                    failed = stopping = True
                    forward()
                    break
                pause = min(max_pause_s, 2.0 ** (slot.quick_deaths - 1)) if slot.quick_deaths else 0.0
                log.warning("worker %d (pid %s) exited with code %s after %.1f s; starting a new "
                            "one in %g s", slot.index, p.pid, p.exitcode, lived, pause)
                slot.proc, slot.restart_at = None, now + pause
            if slot.proc is None and not stopping and slot.restart_at <= now:
                start(slot)
                assert slot.proc is not None
                log.info("worker %d started (pid %s)", slot.index, slot.proc.pid)

    forward()  # again: a worker started while the signal was being handled missed it
    code = 1 if failed else 0
    for slot in slots:
        if slot.proc is not None:
            slot.proc.join()
            # Killed by our SIGTERM: it was still starting (a worker handles SIGTERM itself
            # before it listens), so it had accepted nothing.
            if slot.proc.exitcode not in (0, -signal.SIGTERM):
                code = 1
    return code
