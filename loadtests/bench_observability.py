"""What the observability middleware (request id, latency histogram, log decision) costs the
assign path; every figure is a ratio against a baseline measured in the same run.

1. In-process: a handler returning a small JSON answer, awaited directly (baseline) and through
   observe_middleware; minimum of several rounds, so other load on the machine matters less.
2. HTTP: POST /api/v1/assign on a real `litmus serve` (core 0, wrk on core 1) with the
   middleware removed (baseline) and in place, alternating; requests/s, and the server's CPU
   time per request, which is steadier than requests/s on a shared machine. Both servers run
   with CORS open, where the middleware stands apart from the rest and the main port is
   aiohttp's alone.

Usage: python loadtests/bench_observability.py [--rounds 3] [--seconds 8] [--no-http]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loadtests._harness import TOKEN, Proc, api, free_port, launch_bench_experiment, wait_ready, wrk

# Started as `python bench_observability.py --serve-variant without|with`: the server itself.
SERVE_FLAG = "--serve-variant"


def serve_variant(variant: str) -> None:
    """`litmus serve`, with the observability middleware taken out when variant is 'without'."""
    import litmus.app as appmod
    from litmus.__main__ import main
    from litmus.api.observability import observe_middleware

    real = appmod.create_app

    def create_app(settings: Any) -> Any:
        app = real(settings)
        if variant == "without":
            app.middlewares.remove(observe_middleware)
        return app

    appmod.create_app = create_app
    raise SystemExit(main(["serve"]))


def in_process(rounds: int) -> None:
    """Per-request cost of the middleware around a trivial handler."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from litmus.api.observability import observe_middleware
    from litmus.app import create_app
    from litmus.settings import Settings

    async def run() -> tuple[float, float]:
        app = create_app(Settings())
        req = make_mocked_request("POST", "/api/v1/assign", app=app)
        req._match_info = await app.router.resolve(req)

        async def handler(_: web.Request) -> web.StreamResponse:
            return web.Response(body=b'{"variant":"model_a"}', content_type="application/json")

        n = 100_000
        bare, wrapped = [], []
        for _ in range(rounds * 2):
            t0 = time.perf_counter()
            for _ in range(n):
                await handler(req)
            bare.append((time.perf_counter() - t0) / n)
            t0 = time.perf_counter()
            for _ in range(n):
                await observe_middleware(req, handler)
            wrapped.append((time.perf_counter() - t0) / n)
        return min(bare), min(wrapped)

    bare, wrapped = asyncio.run(run())
    print(f"in-process  handler alone            {bare * 1e6:7.2f} us/request   (baseline)")
    print(f"in-process  through the middleware   {wrapped * 1e6:7.2f} us/request   "
          f"overhead {(wrapped - bare) * 1e6:.2f} us")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http(rounds: int, seconds: int) -> None:
    """Alternate servers without and with the middleware; wrk on the assign route."""
    body = orjson.dumps({"experiment": "bench", "unit_id": "user-12345"})
    results: dict[str, list[tuple[float, float, float]]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(prefix="litmus-bench-obs-") as tmp:
        data = Path(tmp) / "data"
        for _ in range(rounds):
            for variant in ("without", "with"):
                port = free_port()
                # CORS open: the app then stacks observe_middleware apart from the rest (so the
                # "without" variant can take it out) and the main port is aiohttp's alone (no
                # front answering assign with the fast lane's code; docs/DEVELOPING.md).
                env = {"LITMUS_DATA_DIR": str(data), "ADMIN_API_TOKENS": f"bench:{TOKEN}",
                       "LITMUS_PORT": str(port), "LITMUS_LOG_LEVEL": "WARNING",
                       "LITMUS_CORS_ORIGINS": "http://bench.invalid"}
                env.pop("DATABASE_URL", None)
                proc = Proc([sys.executable, __file__, SERVE_FLAG, variant], env=env, core=0)
                base = f"http://127.0.0.1:{port}"
                try:
                    wait_ready(base + "/readyz", 90)
                    if api(base, "GET", "/api/v1/experiments?limit=1")["experiments"] == []:
                        launch_bench_experiment(base, {"m": 1})
                    c0 = _cpu_seconds(proc.p.pid)
                    r = wrk(base + "/api/v1/assign", body, seconds,
                            headers={"Authorization": f"Bearer {TOKEN}"})
                    cpu_us = (_cpu_seconds(proc.p.pid) - c0) / (r["rps"] * seconds) * 1e6
                finally:
                    proc.stop()
                results[variant].append((r["rps"], cpu_us, r["p99_ms"]))
                print(f"  round: {variant:7s} {r['rps']:8.0f} req/s  {cpu_us:6.1f} us CPU/request"
                      f"  p99 {r['p99_ms']:.2f} ms  non-2xx {r['non_2xx']:.0f}", flush=True)
    base_rps = statistics.median(x[0] for x in results["without"])
    base_cpu = statistics.median(x[1] for x in results["without"])
    rps = statistics.median(x[0] for x in results["with"])
    cpu = statistics.median(x[1] for x in results["with"])
    print(f"http  assign without the middleware  {base_rps:8.0f} req/s  {base_cpu:6.1f} us CPU/request"
          "   (baseline, medians)")
    print(f"http  assign with the middleware     {rps:8.0f} req/s  {cpu:6.1f} us CPU/request"
          f"   ratio {rps / base_rps:.2f}x req/s, {cpu / base_cpu:.2f}x CPU")


def main() -> None:
    """Parse flags and run."""
    if len(sys.argv) == 3 and sys.argv[1] == SERVE_FLAG:
        serve_variant(sys.argv[2])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--no-http", action="store_true", help="only the in-process measurement")
    args = p.parse_args()
    print("== observability middleware benchmark")
    in_process(args.rounds)
    if not args.no_http:
        http(args.rounds, args.seconds)


if __name__ == "__main__":
    main()
