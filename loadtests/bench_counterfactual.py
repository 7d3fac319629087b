"""Counterfactual benchmark: what logging propensities costs, and what an estimate costs.

Every figure is a ratio against a baseline measured in the same run:
0. In process: the events route's typed decoder (JSON bytes -> rows, `decode_events`) on a
   1000-event batch whose exposures carry "probability"
   against the same batch without it (then the variant's weight is looked up), alternated.
1. Write path in PostgreSQL (embedded, durable defaults): 100,000 exposure rows COPYed in batches
   of 5000 into `exposures` (with its `probability` column, migration 0016) against the same rows
   into a table of the shape before it (`exposures` without the column, same indexes); the two
   alternate batch by batch, ROUNDS rounds on truncated tables, and the median of the rounds'
   ratios is the column's cost. Only the exposures COPY is timed (the dedupe COPY into event_ids is the same either
   way), so the ratio is the column's share at its largest.
2. HTTP on one server core, wrk on the other: events/s through POST /api/v1/events, batches of
   100 (two exposures in three), with every exposure carrying "probability" against the same
   batches without it (the server then fills in the variant's weight); ROUNDS rounds each,
   alternated, new unit and event ids in every request. Median ratio and its spread.
3. POST /api/v1/experiments/{id}/counterfactual at 1,000,000 units: 1 M exposures with
   probabilities and 300 k metric events made in SQL, one recompute folds them, then CALLS
   requests with 3 target policies, alternated with GET /healthz (the baseline: the cheapest
   answer the same server gives), on one kept-alive connection. Median and p95 of each.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loadtests._harness import (
    TOKEN,
    api,
    cpu_s,
    launch_bench_experiment,
    litmus_server,
    postgres_cpu_s,
    run_wrk,
)
from loadtests.bench_ingest import LUA

ROUNDS = 7
ROWS = 100_000
HTTP_ROUNDS = 5
HTTP_SECONDS = 4
UNITS = 1_000_000
CALLS = 30
POLICIES = {"all_a": {"model_a": 1.0}, "all_c": {"model_c": 1.0},
            "mix": {"model_a": 0.2, "model_b": 0.3, "model_c": 0.5}}

_PLAIN_EXPOSURE = '\'","variant":"model_b","event_id":"\''
_PROB_EXPOSURE = '\'","variant":"model_b","probability":0.5,"event_id":"\''
assert LUA.count(_PLAIN_EXPOSURE) == 1
LUA_PROB = LUA.replace(_PLAIN_EXPOSURE, _PROB_EXPOSURE)


def group_pids(pgid: int) -> list[int]:
    """Every process of a process group (a server started in its own session)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def spread(xs: list[float]) -> str:
    """The median, min and max of per-round figures, to 3 decimals."""
    return f"median {statistics.median(xs):.3f}, min {min(xs):.3f}, max {max(xs):.3f}"


# -- with/without comparisons (bench_covariates.py uses them too) ------------------------------
# Each side is keyed True (with the feature measured) and False (without it: the baseline).
Sides = dict[bool, list[float]]


def rates(xs: list[float], unit: str, k_digits: int, baseline: bool = False) -> str:
    """A rate's median and each round's in thousands: `   123456 rows/s  (per round 120k 125k)`,
    `(baseline; per round ...)` with `baseline`."""
    return (f"{statistics.median(xs):9.0f} {unit}  ({'baseline; ' if baseline else ''}per round "
            + " ".join(f"{x / 1000:.{k_digits}f}k" for x in xs) + ")")


def per_round(ratios: list[float], goal: float | None = None) -> str:
    """Per-round ratios: their spread, then each of them (and the goal, if any) in brackets."""
    listed = " ".join(f"{x:.3f}" for x in ratios)
    return f"{spread(ratios)}  ({listed}{f'; goal >= {goal:g}' if goal is not None else ''})"


def cpu_per(cpu_us: Sides, digits: int) -> str:
    """CPU us per item without and with (medians), and the rate ratio with/without per round."""
    ratios = [b / a for a, b in zip(cpu_us[True], cpu_us[False], strict=True)]
    return (f"without {statistics.median(cpu_us[False]):.{digits}f} us, with "
            f"{statistics.median(cpu_us[True]):.{digits}f} us; rate ratio with/without per round: "
            f"{per_round(ratios)}")


def validation_costs(bodies: dict[bool, dict[str, Any]], entry: Any, rounds: int) -> Sides:
    """CPU seconds per event of the events route's typed decoder (`decode_events`: JSON bytes
    -> rows, the parse included) on bodies[True] and bodies[False] with the registry `entry`,
    alternated for `rounds` rounds (each the best of 7 repeats of 5 calls). Both bodies are
    well-formed batches, which the route hands to the decoder: checked first."""
    import orjson

    from litmus.api.event_decode import decode_events

    now = datetime.now(UTC)
    raws = {side: orjson.dumps(body) for side, body in bodies.items()}
    for side, raw in raws.items():
        assert decode_events(raw, "typed", lambda _: entry, now) is not None, (
            f"the typed decoder refused the {'with' if side else 'without'} batch")
    per_event: Sides = {True: [], False: []}
    for r in range(rounds):
        for side in (True, False) if r % 2 == 0 else (False, True):

            def once(b: bytes = raws[side]) -> None:
                decode_events(b, "typed", lambda _: entry, now)

            per_event[side].append(min(timeit.repeat(once, timer=time.thread_time, number=5,
                                                     repeat=7)) / 5 / len(bodies[side]["events"]))
    return per_event


async def copy_rounds(conn: Any, into: dict[bool, tuple[str, Sequence[str]]],
                      rows: Callable[[bool, str], list[tuple[object, ...]]],
                      rounds: int) -> tuple[Sides, Sides, Sides]:
    """COPY rows(side, tag) into into[side] = (table, columns) in batches of 5000, the two sides
    alternating batch by batch, `rounds` rounds on truncated tables. Per side and round: rows/s,
    CPU us per row (this thread + the connection's PostgreSQL backend) and of that the client's
    (asyncpg's row encoding)."""
    backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
    rate: Sides = {True: [], False: []}
    cpu_us: Sides = {True: [], False: []}
    client_us: Sides = {True: [], False: []}
    for r in range(rounds):
        data = {True: rows(True, f"{r}w"), False: rows(False, f"{r}n")}
        n = len(data[True])
        await conn.execute(f"TRUNCATE {into[True][0]}, {into[False][0]}")
        spent = {True: 0.0, False: 0.0}
        cpu = {True: 0.0, False: 0.0}
        client = {True: 0.0, False: 0.0}
        # Batch by batch, alternating which side goes first: drift on a shared machine lands on
        # both sides alike.
        for j, i in enumerate(range(0, n, 5000)):
            for side in (True, False) if (r + j) % 2 == 0 else (False, True):
                table, columns = into[side]
                t, c, b = time.perf_counter(), time.thread_time(), cpu_s([backend])
                await conn.copy_records_to_table(table, records=data[side][i:i + 5000],
                                                 columns=columns)
                spent[side] += time.perf_counter() - t
                client[side] += time.thread_time() - c
                cpu[side] += time.thread_time() - c + cpu_s([backend]) - b
        for side in (True, False):
            rate[side].append(n / spent[side])
            cpu_us[side].append(cpu[side] / n * 1e6)
            client_us[side].append(client[side] / n * 1e6)
    return rate, cpu_us, client_us


def wrk_rate(url: str, lua: str, seconds: int) -> tuple[float, int]:
    """Events/s and events sent by wrk (core 1, 32 connections) posting 100-event batches."""
    res = run_wrk(url, lua % {"token": TOKEN, "size": 100}, seconds, 32)
    if res["non_2xx"]:
        raise RuntimeError(f"wrk saw {res['non_2xx']:.0f} non-2xx answers")
    return res["rps"] * 100, int(res["n"]) * 100


def http_rounds(url: str, luas: dict[bool, str], server_pid: int, data_dir: Path, rounds: int,
                seconds: int) -> tuple[Sides, Sides]:
    """wrk posting with the Lua script luas[side], the sides alternated, `rounds` rounds of
    `seconds`. Per side and round: events/s, and CPU us per event of the server's process group
    (started in its own session) and the embedded PostgreSQL in data_dir."""
    rate: Sides = {True: [], False: []}
    cpu_us: Sides = {True: [], False: []}
    for r in range(rounds):
        for side in (True, False) if r % 2 == 0 else (False, True):
            # The wrk script's ids restart with each run: a tag per round keeps them new.
            tag = f"r{r}{'w' if side else 'n'}"
            tagged = luas[side].replace('"%%d-%%08x%%08x"', f'"{tag}-%%d-%%08x%%08x"')
            assert tagged != luas[side]
            server = group_pids(server_pid)
            c0 = cpu_s(server) + postgres_cpu_s(data_dir)
            events, sent = wrk_rate(url, tagged, seconds)
            rate[side].append(events)
            c1 = cpu_s(group_pids(server_pid)) + postgres_cpu_s(data_dir)
            cpu_us[side].append((c1 - c0) / max(sent, 1) * 1e6)
    return rate, cpu_us


# -- the counterfactual benchmark --------------------------------------------------------------


async def write_path(dsn: str) -> None:
    """Exposure rows COPYed with the probability column against the shape without it."""
    from litmus.db import events as db
    from litmus.services.ingest import to_micros

    exp_ids = [str(uuid.uuid4()) for _ in range(4)]
    now = to_micros(datetime.now(UTC))
    conn = await db.connect(dsn)
    await conn.execute("DROP TABLE IF EXISTS bench_exposures_before")
    await conn.execute("CREATE TABLE bench_exposures_before (LIKE exposures INCLUDING ALL)")
    await conn.execute("ALTER TABLE bench_exposures_before DROP COLUMN probability")
    cols = db.EXPOSURE_COLUMNS[:db.EXPOSURE_COLUMNS.index("probability") + 1]

    def rows(with_p: bool, tag: str) -> list[tuple[object, ...]]:
        return [(exp_ids[i % 4], f"user-{(i * 2654435761) % 2**32:08x}", i % 3, now,
                 f"{tag}-{uuid.uuid4().hex}", *((0.2 + (i % 5) / 10.0,) if with_p else ()))
                for i in range(ROWS)]

    try:
        rate, cpu_us, _ = await copy_rounds(conn, {True: ("exposures", cols),
                                                   False: ("bench_exposures_before", cols[:-1])},
                                            rows, ROUNDS)
        await conn.execute("TRUNCATE exposures")
        await conn.execute("DROP TABLE bench_exposures_before")
    finally:
        await conn.close()
    ratios = [a / b for a, b in zip(rate[True], rate[False], strict=True)]
    print("write  COPY exposures without probability (the shape before) "
          + rates(rate[False], "rows/s", 0, baseline=True))
    print("write  COPY exposures with probability                       "
          + rates(rate[True], "rows/s", 0))
    print(f"write  ratio with/without per round: {per_round(ratios, goal=0.95)}")
    print(f"write  CPU per row (client + its PostgreSQL backend): {cpu_per(cpu_us, 2)}", flush=True)


def validation() -> None:
    """In process: validating a 1000-event batch (two exposures in three) with every exposure
    carrying "probability" against the same batch without it (the weight is then looked up)."""
    from loadtests.bench_ingest import _Entry, events

    plain = {"events": events(1000)}
    with_p = {"events": [dict(e, probability=0.5) if e["type"] == "exposure" else e
                         for e in plain["events"]]}
    per_event = validation_costs({True: with_p, False: plain}, _Entry(), ROUNDS)
    ratios = [b / a for a, b in zip(per_event[True], per_event[False], strict=True)]
    print(f"parse  decode_events (JSON -> rows), 1000 events (CPU time), without probability "
          f"{statistics.median(per_event[False]) * 1e6:6.2f} us/event (baseline)   with "
          f"{statistics.median(per_event[True]) * 1e6:6.2f} us/event   rate ratio with/without "
          f"per round: {spread(ratios)}", flush=True)


def http_ingest(data_dir: Path) -> None:
    """Batches of 100 with and without "probability" on their exposures, alternated."""
    proc, base = litmus_server(data_dir, {"LITMUS_RECOMPUTE_INTERVAL_S": "3600"})
    try:
        launch_bench_experiment(base)
        time.sleep(0.5)
        url = base + "/api/v1/events"
        wrk_rate(url, LUA.replace('"%%d-', '"w-%%d-'), 2)  # warm-up
        rate, cpu_us = http_rounds(url, {True: LUA_PROB, False: LUA}, proc.p.pid, data_dir,
                                   HTTP_ROUNDS, HTTP_SECONDS)
    finally:
        proc.stop()
    ratios = [a / b for a, b in zip(rate[True], rate[False], strict=True)]
    print("http   batch 100, exposures without probability "
          + rates(rate[False], "ev/s", 1, baseline=True))
    print("http   batch 100, exposures with probability    " + rates(rate[True], "ev/s", 1))
    print(f"http   ratio with/without per round: {per_round(ratios, goal=0.95)}")
    print(f"http   CPU per event (server + PostgreSQL): {cpu_per(cpu_us, 1)}", flush=True)


def timed_calls(conn: http.client.HTTPConnection, method: str, path: str,
                body: bytes | None) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    t = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    dt = time.perf_counter() - t
    if resp.status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {resp.status} {data[:300]!r}")
    return dt


async def fill(dsn: str, exp_id: str) -> None:
    """UNITS exposures with probabilities and 300 k metric events, made in SQL."""
    conn = await asyncpg.connect(dsn)
    try:
        uid = uuid.UUID(exp_id)
        # One transaction: the recompute folds all of it at once.
        tr = conn.transaction()
        await tr.start()
        await conn.execute(
            """INSERT INTO exposures (experiment_id, unit_id, variant, ts, event_id, probability)
               SELECT $1, 'u' || g, (g % 3)::smallint, now() - (g % 3600) * interval '1 second',
                      'e' || g, 0.2 + (g % 5) / 10.0
               FROM generate_series(1, $2::bigint) g""", uid, UNITS)
        await conn.execute(
            """INSERT INTO metric_events (experiment_id, unit_id, metric, value, ts, event_id)
               SELECT $1, 'u' || (g * 7 % $2::bigint + 1),
                      CASE WHEN g % 3 = 0 THEN 'conversion' ELSE 'revenue' END,
                      CASE WHEN g % 3 = 0 THEN 1 ELSE 5 + g % 50 END, now(), 'm' || g
               FROM generate_series(1, $3::bigint) g""", uid, UNITS, 3 * UNITS // 10)
        await tr.commit()
        await conn.execute("VACUUM ANALYZE exposures, metric_events")
    finally:
        await conn.close()


def endpoint(data_dir: Path) -> None:
    """The counterfactual endpoint at UNITS units against GET /healthz."""
    proc, base = litmus_server(data_dir, {"LITMUS_RECOMPUTE_INTERVAL_S": "2"})
    try:
        exp = api(base, "POST", "/api/v1/experiments", {
            "key": "cf", "name": "cf", "description": "counterfactual benchmark",
            "owner_team": "perf", "metrics": {"primary": "conversion", "guardrails": []},
            "variants": [{"key": "model_a", "weight": 0.4}, {"key": "model_b", "weight": 0.3},
                         {"key": "model_c", "weight": 0.3}]})
        api(base, "POST", f"/api/v1/experiments/{exp['id']}/launch", {"ramp": 1})
        dsn = f"postgresql://postgres:@/postgres?host={(data_dir / 'pg').resolve()}"
        t0 = time.perf_counter()
        asyncio.run(fill(dsn, exp["id"]))
        print(f"cf     made {UNITS:,} exposures with probabilities and {3 * UNITS // 10:,} "
              f"metric events in {time.perf_counter() - t0:.1f} s", flush=True)
        path = f"/api/v1/experiments/{exp['id']}/counterfactual"
        body = json.dumps({"metric": "conversion", "policies": POLICIES}).encode()
        t0 = time.perf_counter()
        while True:
            try:
                answer = api(base, "POST", path, json.loads(body))
            except OSError:  # no snapshot yet, or no propensity data in it yet
                answer = {}
            if answer.get("units") == UNITS and (answer.get("logged_value") or 0) > 0:
                break
            if time.perf_counter() - t0 > 300:
                raise RuntimeError(f"the recompute did not fold {UNITS} units in 300 s: {answer}")
            time.sleep(0.5)
        print(f"cf     folded by the recompute loop within {time.perf_counter() - t0:.1f} s",
              flush=True)
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        cf: list[float] = []
        hz: list[float] = []
        for _ in range(CALLS):
            hz.append(timed_calls(conn, "GET", "/healthz", None))
            cf.append(timed_calls(conn, "POST", path, body))
        conn.close()
    finally:
        proc.stop()

    def ms(xs: list[float]) -> str:
        xs = sorted(x * 1e3 for x in xs)
        return (f"median {statistics.median(xs):6.2f} ms, p95 {xs[int(0.95 * (len(xs) - 1))]:6.2f}"
                f" ms, max {xs[-1]:6.2f} ms")

    mix = answer["policies"]["mix"]["dr"]
    print(f"cf     GET /healthz (baseline)                 {ms(hz)}")
    print(f"cf     POST counterfactual, 3 policies, {UNITS // 1000:,}k units "
          f"{ms(cf)}   goal < 50 ms  (ratio of medians {statistics.median(cf) / statistics.median(hz):.1f}x)")
    print(f"cf     e.g. mix: DR {mix['value']:.5f} [{mix['ci'][0]:.5f}, {mix['ci'][1]:.5f}], "
          f"units {answer['units']:,}, ESS {answer['policies']['mix']['ess']:,.0f}, logged value {answer['logged_value']:.5f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--only-endpoint", action="store_true")
    args = parser.parse_args()
    print("== counterfactual benchmark (server on core 0, wrk and client on core 1, "
          "embedded PostgreSQL on both)", flush=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="litmus-bench-cf-") as tmp:
        if not args.only_endpoint:
            validation()
            from litmus.db.pool import run_migrations, start_embedded

            dsn = start_embedded(Path(tmp) / "write", cleanup_mode="stop")
            asyncio.run(run_migrations(dsn))
            asyncio.run(write_path(dsn))
            if not args.skip_http:
                http_ingest(Path(tmp) / "http")
        endpoint(Path(tmp) / "cf")
    print(f"(took {time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
