"""Fast lane benchmark: four servers side by side, interleaved, on one pinned core.

Servers on core 0, wrk (and the paced client) on core 1. Each round runs every variant once,
in a rotated order, so a noisy moment hits all of them:

- raw:  a uvloop asyncio.Protocol answering every read with a fixed response (no parsing)
- bare: a bare aiohttp handler that parses the body and answers a same-sized JSON document
- main: Litmus's POST /api/v1/assign on the main port, where the front answers it with the
        fast lane's code (litmus/api/fastlane.py, "the main port's front")
- aiohttp: the same route on the main port through aiohttp's own path (a query string makes
        the front hand the connection to aiohttp: what CORS-open deployments and every other
        route get)
- fast: the same route on the fast lane (litmus/api/fastlane.py)

For each: requests/s at saturation (wrk -c64) and the server's CPU time per request (utime +
stime of the server process from /proc, before and after); the median and the spread (min-max)
over the rounds. Then the p99 latency at a fixed 1,000 requests/s (a paced open-loop client on
one connection, paced on time.perf_counter: latency counts from when a request was due, so a
stall is not hidden), and a batch of 1,000
units through the fast lane and the main port against the in-process core loop (assignments/s).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from litmus.core.assignment import assign, compile_experiment
from litmus.core.models import Experiment, Variant
from loadtests._harness import (
    TOKEN,
    Proc,
    free_port,
    launch_bench_experiment,
    litmus_server,
    process_cpu_s,
    wait_post,
    wrk,
)

BODY = orjson.dumps({"experiment": "bench", "unit_id": "user-12345"})
BATCH = orjson.dumps({"experiment": "bench", "unit_ids": [f"user-{i}" for i in range(1000)]})
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# -- the paced client --------------------------------------------------------------------------


def paced_p99(port: int, path: str, body: bytes, headers: dict[str, str], rate: float,
              seconds: float) -> float:
    """p99 (ms) of `rate` requests/s for `seconds` on one keep-alive connection, from core 1.
    Open loop: each request's latency counts from when it was due, so a slow answer that holds
    up the ones after it is not hidden. The client is a blocking socket paced by spinning on
    time.perf_counter (core 1 is otherwise idle then): an event loop's timers and clock have a
    resolution of 1 ms, and a sleep's wake-up can be late by more, which would swamp answers
    that take tens of us."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    req = (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n{head}"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    os.sched_setaffinity(0, {1})
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lat: list[float] = []
    try:
        buf = b""
        start = time.perf_counter() + 0.05
        for i in range(int(rate * seconds)):
            due = start + i / rate
            while time.perf_counter() < due:
                pass  # spin: a sleep's wake-up on this VM can be late by milliseconds
            sock.sendall(req)
            while (end := buf.find(b"\r\n\r\n")) < 0:
                buf += _recv(sock)
            m = re.search(rb"(?i)content-length:\s*(\d+)", buf[:end])
            total = end + 4 + (int(m.group(1)) if m else 0)
            while len(buf) < total:
                buf += _recv(sock)
            buf = buf[total:]
            lat.append((time.perf_counter() - due) * 1e3)
    finally:
        sock.close()
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    lat.sort()
    return lat[int(0.99 * (len(lat) - 1))]


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(1 << 16)
    if not chunk:
        raise RuntimeError("the server closed the connection during the paced run")
    return chunk


def core_loop_rate(seconds: float = 0.5) -> float:
    """Assignments/s of the in-process core loop over the batch's 1,000 units on core 0,
    averaged over `seconds` (as wrk's rates are averages; a best-of-N would flatter it)."""
    exp = Experiment(id="bench", key="bench", name="b", description="d", owner_team="t",
                     status="running", ramp=1.0,
                     variants=(Variant("model_a", 0.5, config={"model": "m"}), Variant("model_b", 0.5)))
    c = compile_experiment(exp)
    units = [f"user-{i}" for i in range(1000)]

    def loop() -> None:
        for u in units:
            assign(c, u, None)

    os.sched_setaffinity(0, {0})
    try:
        loop()  # warm
        loops, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            loop()
            loops += 1
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return loops * 1000 / elapsed


def spread(xs: list[float], fmt: str = "{:.0f}") -> str:
    """median [min-max]"""
    return f"{fmt.format(statistics.median(xs))} [{fmt.format(min(xs))}-{fmt.format(max(xs))}]"


def main() -> None:
    """Run the rounds and print the table and the ratios."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--paced-seconds", type=float, default=1.5)
    args = ap.parse_args()
    started = time.monotonic()
    bare_port, raw_port = free_port(), free_port()
    script = str(Path(__file__).with_name("bare_server.py"))
    bare = Proc([sys.executable, script, str(bare_port)], core=0)
    raw = Proc([sys.executable, script, str(raw_port), "raw"], core=0)
    tmp = tempfile.TemporaryDirectory(prefix="litmus-bench-")
    fast_port = free_port()
    lit: Proc | None = None
    try:
        wait_post(bare_port, "/assign")
        wait_post(raw_port, "/assign")
        lit, base = litmus_server(Path(tmp.name) / "data", {
            "LITMUS_ASSIGN_PORT": str(fast_port), "LITMUS_RECOMPUTE_INTERVAL_S": "3600"})
        launch_bench_experiment(base, {"model": "m"})
        main_port = int(base.rsplit(":", 1)[1])
        variants: list[tuple[str, str, int, dict[str, str]]] = [
            ("raw", f"http://127.0.0.1:{raw_port}/assign", raw.p.pid, {}),
            ("bare", f"http://127.0.0.1:{bare_port}/assign", bare.p.pid, {}),
            ("main", f"{base}/api/v1/assign", lit.p.pid, AUTH),
            ("aiohttp", f"{base}/api/v1/assign?via=aiohttp", lit.p.pid, AUTH),
            ("fast", f"http://127.0.0.1:{fast_port}/api/v1/assign", lit.p.pid, AUTH),
        ]
        for _, url, _, hdrs in variants:  # warm up each once
            wrk(url, BODY, 1, headers=hdrs)
        rps: dict[str, list[float]] = {v[0]: [] for v in variants}
        cpu: dict[str, list[float]] = {v[0]: [] for v in variants}
        # The raw server's p99 is the floor this machine puts under every answer.
        p99: dict[str, list[float]] = {"raw": [], "bare": [], "main": [], "fast": []}
        batch: dict[str, list[float]] = {"main": [], "fast": []}
        core: list[float] = []  # the in-process core loop, per round
        ports = {"raw": (raw_port, "/assign", {}), "bare": (bare_port, "/assign", {}),
                 "main": (main_port, "/api/v1/assign", AUTH),
                 "fast": (fast_port, "/api/v1/assign", AUTH)}
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for name, url, pid, hdrs in order:
                c0 = process_cpu_s(pid)
                res = wrk(url, BODY, args.seconds, headers=hdrs)
                c1 = process_cpu_s(pid)
                if res["non_2xx"]:
                    raise RuntimeError(f"{name}: {res['non_2xx']:.0f} non-2xx answers")
                rps[name].append(res["n"] / res["elapsed_s"])
                cpu[name].append((c1 - c0) / res["n"] * 1e6)
            # The batch's baseline in the same round, just before it: the machine's speed drifts.
            core.append(core_loop_rate())
            for name in ("fast", "main") if r % 2 else ("main", "fast"):
                port = fast_port if name == "fast" else main_port
                res = wrk(f"http://127.0.0.1:{port}/api/v1/assign/batch", BATCH, args.seconds,
                          connections=4, headers=AUTH)
                batch[name].append(res["n"] / res["elapsed_s"] * 1000)
            for name in p99:
                port, path, hdrs = ports[name]
                p99[name].append(paced_p99(port, path, BODY, hdrs, args.rate, args.paced_seconds))
            print(f"  round {r + 1}/{args.rounds}: " + "  ".join(
                f"{n} {rps[n][-1]:.0f}/s {cpu[n][-1]:.1f}us" for n in rps), flush=True)
    finally:
        if lit is not None:
            lit.stop()
        bare.stop()
        raw.stop()
        tmp.cleanup()
    print(f"== fast lane benchmark: {args.rounds} interleaved rounds of {args.seconds:g} s, "
          "server on core 0, wrk on core 1; median [min-max]")
    labels = {"raw": "raw uvloop fixed response", "bare": "bare aiohttp handler",
              "main": "POST /api/v1/assign (main)",
              "aiohttp": "POST /api/v1/assign (main, aiohttp)",
              "fast": "POST /api/v1/assign (fast lane)"}
    for n in rps:
        print(f"http  {labels[n]:<32} {spread(rps[n]):>22} req/s   "
              f"{spread(cpu[n], '{:.1f}'):>20} us CPU/request")
    med = {n: statistics.median(rps[n]) for n in rps}
    cmed = {n: statistics.median(cpu[n]) for n in cpu}
    per_round = {f"{a}/{b}": [x / y for x, y in zip(rps[a], rps[b], strict=True)]
                 for a, b in (("main", "bare"), ("aiohttp", "bare"), ("fast", "raw"),
                              ("fast", "main"))}
    cpu_round = [x / y for x, y in zip(cpu["fast"], cpu["raw"], strict=True)]
    print(f"ratio main/bare req/s   {spread(per_round['main/bare'], '{:.2f}')}   (goal >= 0.9)")
    print(f"ratio aiohttp/bare      {spread(per_round['aiohttp/bare'], '{:.2f}')}   (the main "
          "port's aiohttp path)")
    print(f"ratio fast/raw req/s    {spread(per_round['fast/raw'], '{:.2f}')}   (goal >= 0.55)")
    print(f"ratio fast/raw CPU      {spread(cpu_round, '{:.2f}')}   (goal <= 1.8)")
    print(f"ratio fast/main req/s   {spread(per_round['fast/main'], '{:.2f}')}")
    print(f"medians: main/bare {med['main'] / med['bare']:.2f}  fast/raw {med['fast'] / med['raw']:.2f}"
          f"  fast/raw CPU {cmed['fast'] / cmed['raw']:.2f}")
    for n in p99:
        print(f"p99 at {args.rate:.0f} req/s  {labels[n]:<32} {spread(p99[n], '{:.2f}')} ms")
    print(f"ratio fast/bare p99     {spread([f / b for f, b in zip(p99['fast'], p99['bare'], strict=True)], '{:.2f}')}"
          "   (goal <= 1)")
    print(f"batch in-process core loop (1000 units) {spread(core)} assignments/s  (baseline, "
          "measured in each round)")
    for n in ("main", "fast"):
        ratios = [b / c for b, c in zip(batch[n], core, strict=True)]
        print(f"batch of 1000 via {n:<5} {spread(batch[n])} assignments/s   ratio "
              f"{spread(ratios, '{:.2f}')}" + ("   (goal >= 0.45)" if n == "fast" else ""))
    print(f"(took {time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
