"""Ingestion benchmark: every figure is a ratio against a baseline measured in the same run.

1. In-process validation of a 1000-event batch: the hand-written validator (the full path)
   against pydantic per event (the same checks, the same error quality); and the route's typed
   decoder for well-formed batches (msgspec, `decode_events`) against orjson + that validator.
2. HTTP on one server core, wrk on the other, PostgreSQL sharing both: events/s through
   POST /api/v1/events (202 = committed) against a bare aiohttp handler that parses the same
   body and drops it, for batches of 1, 100 and 1000 events. Every request carries new,
   random-looking unit and event ids, so every event is really stored and deduped. CPU per
   event of the server process and of PostgreSQL is printed too: it does not depend on what
   else the machine runs, wall-clock rates do. The results loop is slowed to once an hour.
3. Write path in PostgreSQL (the embedded server, durable defaults): 100,000 rows in COPY
   batches of 5000 through the chosen dedupe (COPY the client ids, per experiment and event
   type, into event_ids, then the rows) against plain COPY without dedupe, against what
   count-once-at-read would need, the ON CONFLICT path (a flush with a repeat: it counts what
   each request had stored), a unique (experiment_id, event_id, ts) index, and extra btrees.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import timeit
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from litmus.api.event_decode import decode_events
from litmus.api.event_schemas import TypedEventIn, validate_events
from loadtests._harness import (
    TOKEN,
    Proc,
    free_port,
    launch_bench_experiment,
    litmus_server,
    postgres_cpu_s,
    process_cpu_s,
    run_wrk,
    wait_post,
)

SIZES = (1, 100, 1000)
SECONDS = 6
ROWS = 100_000

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local size = %(size)d
local n = 0
tid = 0
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
local function event(u)
  local h = (u * 2654435761) %% 4294967296
  local id = string.format("%%d-%%08x%%08x", tid, h, u)
  local unit = string.format("user-%%08x", h)
  if u %% 3 == 0 then
    return '{"type":"conversion","experiment":"bench","unit_id":"' .. unit ..
           '","event_id":"' .. id .. '"}'
  end
  return '{"type":"exposure","experiment":"bench","unit_id":"' .. unit ..
         '","variant":"model_b","event_id":"' .. id .. '"}'
end
request = function()
  n = n + 1
  if size == 1 then
    return wrk.format(nil, nil, nil, event(n + tid * 1000000000))
  end
  local parts = {}
  for j = 1, size do
    parts[j] = event((n * size + j) + tid * 1000000000)
  end
  return wrk.format(nil, nil, nil, '{"events":[' .. table.concat(parts, ",") .. ']}')
end
"""


def events(n: int) -> list[dict[str, Any]]:
    """n typed events like the ones wrk sends."""
    out: list[dict[str, Any]] = []
    for u in range(n):
        if u % 3 == 0:
            out.append({"type": "conversion", "experiment": "bench", "unit_id": f"user-{u:08x}",
                        "event_id": f"e-{u}"})
        else:
            out.append({"type": "exposure", "experiment": "bench", "unit_id": f"user-{u:08x}",
                        "variant": "model_b", "event_id": f"e-{u}"})
    return out


class _Entry:
    """A registry entry stand-in for in-process validation."""

    def __init__(self) -> None:
        from litmus.core.models import Experiment, Variant

        self.experiment = Experiment(
            id=str(uuid.uuid4()), key="bench", name="b", description="d", owner_team="t",
            status="running", variants=(Variant("model_a", 0.5), Variant("model_b", 0.5)))
        self.variant_index = {"model_a": 0, "model_b": 1}
        # What an exposure sent without a probability stores (the served variant's weight).
        self.weights = {"model_a": 0.5, "model_b": 0.5}


def validation() -> None:
    """The hand-written validator against pydantic, per event of a 1000-event batch."""
    body = {"events": events(1000)}
    entry = _Entry()
    now = datetime.now(UTC)
    t_fast = min(timeit.repeat(lambda: validate_events(body, "typed", lambda _: entry, now),
                               number=20, repeat=5)) / 20 / 1000
    t_pyd = min(timeit.repeat(lambda: [TypedEventIn.model_validate(e) for e in body["events"]],
                              number=20, repeat=5)) / 20 / 1000
    print(f"validate  pydantic TypedEventIn      {t_pyd * 1e6:7.2f} us/event   (baseline; shape only)")
    print(f"validate  validate_events (full path) {t_fast * 1e6:6.2f} us/event   "
          f"ratio {t_pyd / t_fast:4.1f}x faster, and it also resolves experiment and variant")
    # The route's typed decoder takes the JSON bytes (the parse included); the full path's parse
    # is added to it here for a like-for-like figure.
    raw = orjson.dumps(body)
    assert decode_events(raw, "typed", lambda _: entry, now) is not None
    t_typed = min(timeit.repeat(lambda: decode_events(raw, "typed", lambda _: entry, now),
                               number=20, repeat=5)) / 20 / 1000
    t_parse = min(timeit.repeat(lambda: orjson.loads(raw), number=20, repeat=5)) / 20 / 1000
    print(f"validate  decode_events (typed)       {t_typed * 1e6:6.2f} us/event   "
          f"against orjson + validate_events {(t_parse + t_fast) * 1e6:.2f} us/event: "
          f"{(t_parse + t_fast) / t_typed:4.1f}x faster, parse included")


async def write_paths(dsn: str) -> None:
    """Rows/s of the dedupe choices, in COPY batches of 5000."""

    from litmus.db import events as db
    from litmus.services.ingest import to_micros

    exp_ids = [str(uuid.uuid4()) for _ in range(4)]
    now = to_micros(datetime.now(UTC))

    def rows(tag: str) -> list[tuple[Any, ...]]:
        # The columns after event_id (probability, covariates, attributes) left NULL.
        rest = (None,) * (len(db.EXPOSURE_COLUMNS) - 5)
        return [(exp_ids[i % 4], f"user-{(i * 2654435761) % 2**32:08x}", i % 3, now,
                 f"{tag}-{uuid.uuid4().hex}", *rest) for i in range(ROWS)]

    conn = await db.connect(dsn)

    async def timed(write: Any, tag: str) -> float:
        data = rows(tag)
        await conn.execute("TRUNCATE exposures, metric_events, event_ids")
        t = time.perf_counter()
        for i in range(0, ROWS, 5000):
            await write(data[i:i + 5000])
        return ROWS / (time.perf_counter() - t)

    async def plain(chunk: list[tuple[Any, ...]]) -> None:
        await db.write_batch(conn, chunk, [], [])

    async def chosen(chunk: list[tuple[Any, ...]]) -> None:
        await db.write_batch(conn, chunk, [], [(r[0], db.EXPOSURE_KIND, r[4]) for r in chunk])

    async def staged_claim(chunk: list[tuple[Any, ...]]) -> None:
        async with conn.transaction():
            await conn.copy_records_to_table("stage_exposures",
                                             records=[(*r, True, 0) for r in chunk],
                                             columns=(*db.EXPOSURE_COLUMNS, "dedupe", "req"))
            await conn.fetch(db.q("stage_flush"))

    async def unique_ts(chunk: list[tuple[Any, ...]]) -> None:
        async with conn.transaction():
            await conn.copy_records_to_table("stage_exposures",
                                             records=[(*r, True, 0) for r in chunk],
                                             columns=(*db.EXPOSURE_COLUMNS, "dedupe", "req"))
            await conn.execute(
                "INSERT INTO exposures (experiment_id, unit_id, variant, ts, event_id) "
                "SELECT experiment_id, unit_id, variant, ts, event_id FROM stage_exposures "
                "ON CONFLICT DO NOTHING")

    async def with_btrees(chunk: list[tuple[Any, ...]]) -> None:
        await db.write_batch(conn, chunk, [], [(r[0], db.EXPOSURE_KIND, r[4]) for r in chunk])

    try:
        base = await timed(plain, "p")
        ours = await timed(chosen, "c")
        staged = await timed(staged_claim, "s")
        await conn.execute("CREATE UNIQUE INDEX bench_uniq ON exposures (experiment_id, event_id, ts)")
        uniq = await timed(unique_ts, "u")
        await conn.execute("DROP INDEX bench_uniq")
        await conn.execute("CREATE INDEX bench_eid ON exposures (experiment_id, event_id)")
        read_side = await timed(plain, "r")
        await conn.execute("DROP INDEX bench_eid")
        await conn.execute("CREATE INDEX bench_unit ON exposures (experiment_id, unit_id)")
        await conn.execute("CREATE INDEX bench_ts ON exposures (experiment_id, ts)")
        btrees = await timed(with_btrees, "b")
        await conn.execute("DROP INDEX bench_unit")
        await conn.execute("DROP INDEX bench_ts")
        await conn.execute("TRUNCATE exposures, metric_events, event_ids")
    finally:
        await conn.close()
    print(f"write  COPY, no dedupe at all                              {base:9.0f} rows/s  (baseline)")
    print(f"write  COPY + index (experiment_id, event_id) for a read-side anti-join"
          f"  {read_side:9.0f} rows/s  ratio {read_side / base:.2f}x  (count-once-at-read)")
    print(f"write  COPY ids into event_ids + COPY rows (chosen)       {ours:9.0f} rows/s  "
          f"ratio {ours / base:.2f}x")
    print(f"write  staged + INSERT .. ON CONFLICT claim (repeat path) {staged:9.0f} rows/s  "
          f"ratio {staged / base:.2f}x")
    print(f"write  staged + unique (experiment_id, event_id, ts)      {uniq:9.0f} rows/s  "
          f"ratio {uniq / base:.2f}x  (misses retries sent without ts)")
    print(f"write  chosen + btree (exp, unit_id) and (exp, ts)        {btrees:9.0f} rows/s  "
          f"ratio {btrees / base:.2f}x  (not used by results queries: left out)")


def wrk_events(url: str, size: int, seconds: int, connections: int) -> dict[str, float]:
    """Run wrk with the unique-body Lua script; returns req/s, events/s, p50/p99 and errors."""
    r = run_wrk(url, LUA % {"token": TOKEN, "size": size}, seconds, connections)
    return {"rps": r["rps"], "eps": r["rps"] * size, "p50": r["p50_ms"], "p99": r["p99_ms"],
            "errors": r["non_2xx"]}


CONNECTIONS = {1: 64, 100: 32, 1000: 16}




def http(env: dict[str, str], data_dir: Path) -> str:
    """Parse-and-drop baseline against the durable endpoint; returns the embedded DSN."""
    port = free_port()
    bare = Proc([sys.executable, str(Path(__file__).with_name("bare_server.py")), str(port)], core=0)
    base_r: dict[int, dict[str, float]] = {}
    try:
        wait_post(port, "/events")
        for size in SIZES:
            base_r[size] = wrk_events(f"http://127.0.0.1:{port}/events", size, SECONDS,
                                      CONNECTIONS[size])
    finally:
        bare.stop()
    proc, base = litmus_server(data_dir, env)
    lit: dict[int, dict[str, float]] = {}
    try:
        launch_bench_experiment(base)
        time.sleep(0.5)
        for size in SIZES:
            pg0 = postgres_cpu_s(data_dir)
            srv0 = process_cpu_s(proc.p.pid)
            lit[size] = wrk_events(base + "/api/v1/events", size, SECONDS, CONNECTIONS[size])
            n = max(lit[size]["eps"] * SECONDS, 1.0)
            lit[size]["srv_us"] = (process_cpu_s(proc.p.pid) - srv0) / n * 1e6
            lit[size]["pg_us"] = (postgres_cpu_s(data_dir) - pg0) / n * 1e6
    finally:
        proc.stop()
    for size in SIZES:
        b, r = base_r[size], lit[size]
        print(f"http  batch {size:4d}  parse-only {b['eps']:9.0f} ev/s ({b['rps']:7.0f} req/s)   "
              f"durable {r['eps']:9.0f} ev/s ({r['rps']:7.0f} req/s, p50 {r['p50']:6.1f} ms, "
              f"p99 {r['p99']:6.1f} ms, non-2xx {r['errors']:.0f})   ratio {r['eps'] / b['eps']:.2f}x"
              f"   cpu/event: server {r['srv_us']:.1f} us, postgres {r['pg_us']:.1f} us")
    return f"postgresql://postgres:@/postgres?host={(data_dir / 'pg').resolve()}"


def tune(data_dir: Path) -> None:
    """Latency and rate below saturation (4 connections, 100 events each) per flush age."""
    for age in (0.0, 2.0, 5.0, 20.0):
        env = {"LITMUS_RECOMPUTE_INTERVAL_S": "3600", "LITMUS_INGEST_FLUSH_AGE_MS": str(age)}
        proc, base = litmus_server(data_dir / f"age{age:g}", env)
        try:
            launch_bench_experiment(base)
            time.sleep(0.5)
            r = wrk_events(base + "/api/v1/events", 100, 4, 4)
        finally:
            proc.stop()
        print(f"tune  flush age {age:4.0f} ms, 4 connections x 100 events: {r['eps']:8.0f} ev/s  "
              f"p50 {r['p50']:5.1f} ms  p99 {r['p99']:5.1f} ms")


def main() -> None:
    """Run all three parts, bounded to about two minutes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flush-events", type=int, default=None)
    parser.add_argument("--flush-age-ms", type=float, default=None)
    parser.add_argument("--skip-write-paths", action="store_true")
    parser.add_argument("--tune", action="store_true", help="only compare flush ages")
    args = parser.parse_args()
    # The results loop folds new events every few seconds: keep it out of this measurement.
    env = {"LITMUS_RECOMPUTE_INTERVAL_S": "3600"}
    if args.flush_events is not None:
        env["LITMUS_INGEST_FLUSH_EVENTS"] = str(args.flush_events)
    if args.flush_age_ms is not None:
        env["LITMUS_INGEST_FLUSH_AGE_MS"] = str(args.flush_age_ms)
    from litmus.settings import Settings

    s = Settings.from_env({**os.environ, **env})
    print(f"== ingestion benchmark (server on core 0, wrk on core 1, embedded PostgreSQL on both; "
          f"flush {s.ingest_flush_events} events or {s.ingest_flush_age_ms:g} ms)")
    t0 = time.monotonic()
    if args.tune:
        with tempfile.TemporaryDirectory(prefix="litmus-bench-tune-") as tmp:
            tune(Path(tmp))
        return
    validation()
    with tempfile.TemporaryDirectory(prefix="litmus-bench-ingest-") as tmp:
        data_dir = Path(tmp) / "data"
        http(env, data_dir)
        if not args.skip_write_paths:
            from litmus.db.pool import start_embedded

            dsn = start_embedded(data_dir, cleanup_mode="stop")
            asyncio.run(write_paths(dsn))
    print(f"(took {time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
