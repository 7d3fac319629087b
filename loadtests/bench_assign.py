"""Assignment benchmark: every figure is a ratio against a baseline measured in the same run.

1. In-process: core.assign per call against a bare mmh3 hash (the floor of any assignment).
2. HTTP: POST /api/v1/assign on one server core against a bare aiohttp handler doing the same
   parse + answer (wrk on the other core).
3. HTTP batch: /api/v1/assign/batch with 100 unit ids: assignments/s against single assigns.
"""

from __future__ import annotations

import sys
import tempfile
import timeit
from pathlib import Path

import mmh3
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
    wait_post,
    wrk,
)

SECONDS = 8


def in_process() -> None:
    """core.assign against one mmh3 hash."""
    exp = Experiment(id="bench", key="bench", name="b", description="d", owner_team="t",
                     status="running", ramp=1.0,
                     variants=(Variant("model_a", 0.5), Variant("model_b", 0.3), Variant("model_c", 0.2)))
    c = compile_experiment(exp)
    n = 200_000
    t_hash = min(timeit.repeat(lambda: mmh3.hash("bench:user-12345", 1, False), number=n, repeat=5)) / n
    t_assign = min(timeit.repeat(lambda: assign(c, "user-12345", None), number=n, repeat=5)) / n
    print(f"in-process  mmh3.hash        {t_hash * 1e9:8.0f} ns/call   (baseline)")
    print(f"in-process  core.assign      {t_assign * 1e9:8.0f} ns/call   "
          f"ratio {t_assign / t_hash:5.2f}x the hash  -> {1 / t_assign / 1e6:.2f} M assignments/s/core")


def http() -> None:
    """The assign endpoint against a bare aiohttp handler."""
    body = orjson.dumps({"experiment": "bench", "unit_id": "user-12345"})
    port = free_port()
    bare = Proc([sys.executable, str(Path(__file__).with_name("bare_server.py")), str(port)], core=0)
    try:
        wait_post(port, "/assign")
        base_r = wrk(f"http://127.0.0.1:{port}/assign", body, SECONDS)
    finally:
        bare.stop()
    with tempfile.TemporaryDirectory(prefix="litmus-bench-") as tmp:
        proc, base = litmus_server(Path(tmp) / "data")
        try:
            launch_bench_experiment(base, {"model": "m"})
            auth = {"Authorization": f"Bearer {TOKEN}"}
            lit = wrk(base + "/api/v1/assign", body, SECONDS, headers=auth)
            batch_body = orjson.dumps({"experiment": "bench",
                                       "unit_ids": [f"user-{i}" for i in range(100)]})
            batch = wrk(base + "/api/v1/assign/batch", batch_body, SECONDS, connections=16, headers=auth)
        finally:
            proc.stop()
    print(f"http  bare aiohttp handler   {base_r['rps']:9.0f} req/s  p50 {base_r['p50_ms']:.2f} ms  "
          f"p99 {base_r['p99_ms']:.2f} ms   (baseline)")
    print(f"http  POST /api/v1/assign    {lit['rps']:9.0f} req/s  p50 {lit['p50_ms']:.2f} ms  "
          f"p99 {lit['p99_ms']:.2f} ms   ratio {lit['rps'] / base_r['rps']:.2f}x baseline"
          f"   non-2xx {lit['non_2xx']:.0f}")
    per_s = batch["rps"] * 100
    print(f"http  assign/batch (100 ids) {per_s:9.0f} assignments/s          "
          f"ratio {per_s / lit['rps']:.1f}x single assigns   non-2xx {batch['non_2xx']:.0f}")


if __name__ == "__main__":
    print("== assignment benchmark (server on core 0, wrk on core 1)")
    in_process()
    http()
