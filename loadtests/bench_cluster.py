"""Throughput of 1, 2 and 3 Litmus nodes behind HAProxy (scripts/cluster.sh), as ratios to 1 node.

For each node count: build the cluster (PostgreSQL primary + synchronous standby, the nodes,
HAProxy, each in its own network namespace), then from the client namespace run wrk through
HAProxy for SECONDS each: single assigns (POST /api/v1/assign), and event batches of 100 with
unique event ids (POST /api/v1/events; a 202 means committed on both PostgreSQL servers), and
single assigns straight to node 1 (the baseline without the balancer). Then tear it down. Recorded, not gated: on a 2-core machine every node, both PostgreSQL servers,
HAProxy and wrk share the same two cores, so more nodes add processes, not CPU; the ratios say
what that costs or buys here, and the per-node-core figures in docs/PERFORMANCE.md are the ones
to plan capacity with (docs/DEPLOYMENT.md). Needs root.

    sudo .venv/bin/python loadtests/bench_cluster.py [--seconds 6] [--nodes 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from loadtests._harness import TOKEN, launch_bench_experiment, wrk  # noqa: E402
from loadtests.bench_ingest import wrk_events  # noqa: E402

SCRIPT = ROOT / "scripts" / "cluster.sh"
LB = "http://10.77.0.2:8080"
NODE1 = "http://10.77.0.21:8000"
CLUSTER_DIR = "/tmp/litmus-cluster-bench"


def inner(seconds: int) -> dict[str, Any]:
    """Run inside the client namespace: the loads through HAProxy."""
    launch_bench_experiment(LB)
    time.sleep(1.0)  # every node hears of the launch through NOTIFY
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = json.dumps({"experiment": "bench", "unit_id": "user-1"}).encode()
    assign = wrk(LB + "/api/v1/assign", body, seconds, connections=64, headers=auth)
    events = wrk_events(LB + "/api/v1/events", 100, seconds, 16)
    # The same single assigns straight to node 1, without HAProxy: what the balancer costs here.
    direct = wrk(NODE1 + "/api/v1/assign", body, seconds, connections=64, headers=auth)
    # What else ran on the machine meanwhile (other engineers' tests share the cores).
    return {"assign": assign, "events": events, "direct": direct, "load": os.getloadavg()[0]}


def cluster(*args: str) -> str:
    """scripts/cluster.sh with the bench's state folder and tokens."""
    env = {**os.environ, "LITMUS_CLUSTER_DIR": CLUSTER_DIR,
           "LITMUS_CLUSTER_ADMIN_TOKEN": f"bench:{TOKEN}",
           # The results loop would compete for the same two cores: once a minute is enough.
           "LITMUS_CLUSTER_ENV": "LITMUS_RECOMPUTE_INTERVAL_S=60 LITMUS_LOG_LEVEL=WARNING"}
    out = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                         timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"cluster.sh {' '.join(args)}: {out.stderr}")
    return out.stdout


def measure(nodes: int, seconds: int) -> dict[str, Any]:
    """Build a cluster of `nodes`, run the loads from its client namespace, tear it down."""
    try:
        cluster("up", str(nodes))
        out = cluster("exec", sys.executable, str(Path(__file__).resolve()), "--inner",
                      "--seconds", str(seconds))
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result
    finally:
        cluster("down")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(args.seconds)))
        return
    if os.geteuid() != 0:
        sys.exit("bench_cluster: needs root (network namespaces); run it with sudo")
    print(f"== cluster benchmark: N Litmus nodes behind HAProxy, PostgreSQL primary + synchronous "
          f"standby, wrk in a client namespace; {os.cpu_count()} cores shared by all of them")
    base: dict[str, Any] | None = None
    for n in args.nodes:
        r = measure(n, args.seconds)
        base = base or r
        a, e = r["assign"], r["events"]
        print(f"{n} node(s)  assign {a['rps']:8.0f} req/s  p50 {a['p50_ms']:6.2f} ms  "
              f"p99 {a['p99_ms']:7.2f} ms  ratio {a['rps'] / base['assign']['rps']:.2f}x   |   "
              f"events {e['eps']:8.0f} /s (batches of 100)  p50 {e['p50']:6.1f} ms  "
              f"p99 {e['p99']:7.1f} ms  ratio {e['eps'] / base['events']['eps']:.2f}x  "
              f"non-2xx {a['non_2xx'] + e['errors']:.0f}  load average {r['load']:.1f}", flush=True)
        d = r["direct"]
        print(f"           assign straight to node 1 {d['rps']:8.0f} req/s  p50 {d['p50_ms']:6.2f} ms"
              f"  (through HAProxy: {a['rps'] / d['rps']:.2f}x of it)", flush=True)


if __name__ == "__main__":
    main()
