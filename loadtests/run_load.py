"""`make load`: a local Litmus with its embedded PostgreSQL, three running experiments, and locust
headless for a bounded time against 127.0.0.1; prints requests/s, failures and p50/p95/p99 per
endpoint (from locust) and the server's own view (from its /metrics).

The server runs on core 0 and locust on core 1 (2-core machines), like the other benchmarks.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from litmus import payloads, routes
from loadtests._harness import api, litmus_server

CLIENT_TOKEN = "load-client-token-0123456789"
HERE = Path(__file__).resolve().parent


def setup_experiments(base: str) -> list[str]:
    """A fixed three-model test, a five-model bandit and a targeted test; all launched."""
    specs = [
        payloads.experiment("load-ranker", "Ranker", [
            ("model_a", 0.5, {"model": "ranker-v1"}), ("model_b", 0.3, {"model": "ranker-v2"}),
            ("model_c", 0.2, {"model": "ranker-v3"})],
            description="load test", owner_team="perf"),
        payloads.experiment("load-bandit", "Bandit", [
            (f"model_{c}", 0.2, {"model": c}) for c in "abcde"],
            description="load test", owner_team="perf", allocation="bandit"),
        payloads.experiment("load-targeted", "Targeted", [
            ("model_a", 0.5, None), ("model_b", 0.5, None)],
            description="load test", owner_team="perf",
            targeting=[{"attribute": "country", "op": "in", "value": ["fr", "de", "us"]}]),
    ]
    keys = []
    for body in specs:
        exp = api(base, "POST", routes.EXPERIMENTS, body)
        api(base, "POST", routes.experiment_action(exp["id"], "launch"), {"ramp": 1})
        keys.append(exp["key"])
    return keys


def run_locust(base: str, keys: list[str], seconds: int, users: int, out: Path) -> None:
    """Locust headless on core 1, bounded by `seconds`."""
    env = {**os.environ, "LITMUS_TOKEN": CLIENT_TOKEN, "LITMUS_EXPERIMENTS": ",".join(keys)}
    cmd = (["taskset", "-c", "1"] if shutil.which("taskset") else []) + [
        sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
        "--host", base, "-u", str(users), "-r", str(max(1, users // 2)), "-t", f"{seconds}s",
        "--stop-timeout", "5", "--csv", str(out / "load"), "--only-summary",
        "--loglevel", "WARNING",
    ]
    subprocess.run(cmd, env=env, check=False, timeout=seconds + 120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def print_locust(out: Path, seconds: int) -> None:
    """The per-endpoint table from locust's CSV."""
    rows = list(csv.DictReader((out / "load_stats.csv").open()))
    print(f"\n== locust, {seconds} s (client side; latencies in ms)")
    print(f"{'endpoint':28s} {'requests':>9s} {'fails':>6s} {'req/s':>8s} "
          f"{'p50':>6s} {'p95':>6s} {'p99':>6s}")
    for r in rows:
        name = r["Name"] if r["Name"] != "Aggregated" else "TOTAL"
        print(f"{name:28s} {int(r['Request Count']):9d} {int(r['Failure Count']):6d} "
              f"{float(r['Requests/s']):8.1f} {r['50%']:>6s} {r['95%']:>6s} {r['99%']:>6s}")
    failures = out / "load_failures.csv"
    if failures.exists():
        for r in list(csv.DictReader(failures.open()))[:5]:
            print(f"  failure: {r['Name']}: {r['Error'][:120]} x{r['Occurrences']}")


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear within the bucket holding the q-th observation."""
    total = buckets[-1][1]
    if total == 0:
        return 0.0
    rank, lo, below = q * total, 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * (rank - below) / max(cum - below, 1e-12)
        lo, below = le, cum
    return lo


def print_server_view(base: str) -> None:
    """What the server measured: latency per route (its own histograms), events, assignments."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(base + routes.METRICS, timeout=10) as r:
        text = r.read().decode()
    hist: dict[str, dict[float, float]] = {}
    counts: dict[tuple[str, str], float] = {}
    other: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "litmus_http_requests_total":
                counts[(s.labels["route"], s.labels["status"])] = s.value
            elif s.name == "litmus_http_request_duration_seconds_bucket":
                per = hist.setdefault(s.labels["route"], {})
                le = float(s.labels["le"])
                per[le] = per.get(le, 0.0) + s.value
            elif s.name == "litmus_ingest_events_total":
                other[f"events {s.labels['outcome']}"] = s.value
            elif s.name == "litmus_assignments_total":
                other["assignments"] = other.get("assignments", 0) + s.value
    print("\n== server side (/metrics: time inside the app, all statuses; ms)")
    print(f"{'route':28s} {'status':>6s} {'requests':>9s} {'p50':>6s} {'p95':>6s} {'p99':>6s}")
    for (route, status), n in sorted(counts.items()):
        if route.startswith("ops.") or route not in hist:
            continue
        b = sorted(hist[route].items())
        qs = [quantile(q, b) * 1e3 for q in (0.5, 0.95, 0.99)]
        print(f"{route:28s} {status:>6s} {n:9.0f} {qs[0]:6.2f} {qs[1]:6.2f} {qs[2]:6.2f}")
    for k, v in sorted(other.items()):
        print(f"  {k:32s} {v:9.0f}")


def main() -> None:
    """Start, load, print, stop."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=int, default=30, help="how long locust runs (default 30)")
    p.add_argument("--users", type=int, default=32, help="concurrent locust users (default 32)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="litmus-load-") as tmp:
        data = Path(tmp) / "data"
        proc, base = litmus_server(data, {"CLIENT_API_TOKENS": f"load:{CLIENT_TOKEN}"})
        try:
            keys = setup_experiments(base)
            time.sleep(1.0)  # the launches reach the registry through LISTEN/NOTIFY
            print(f"== Litmus at {base} (core 0), experiments: {', '.join(keys)}; "
                  f"locust {args.users} users (core 1), {args.seconds} s")
            run_locust(base, keys, args.seconds, args.users, Path(tmp))
            print_locust(Path(tmp), args.seconds)
            print_server_view(base)
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
