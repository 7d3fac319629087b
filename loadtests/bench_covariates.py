"""Covariates benchmark: what exposures carrying CUPED covariates cost on the ingest path.

Every figure is a ratio against a baseline measured in the same run, alternated with it:
0. In process: the events route's typed decoder (JSON bytes -> rows, `decode_events`) on a
   1000-event batch (two exposures in three) whose exposures carry two declared covariates
   (`{"pre_sessions": u % 50, "pre_revenue": u % 7 + 0.5}`) against the same batch without
   them, ROUNDS rounds.
1. Write path in PostgreSQL (embedded, durable defaults): 100,000 exposure rows COPYed in
   batches of 5000 with two of the five covariate columns filled (migration 0017) against the
   same rows with it NULL, into two tables of the same shape and indexes (`exposures` and a
   copy of it); the two alternate batch by batch, ROUNDS rounds on truncated tables. Only the
   exposures COPY is timed (the dedupe COPY into event_ids is the same either way), so the
   ratio is the column's share at its largest. Rows/s and CPU per row (client + backend).
2. HTTP on one server core, wrk on the other: events/s through POST /api/v1/events, batches of
   100 (two exposures in three) to an experiment that declares the covariates
   (metrics.covariates, `conversion` defined with `"cuped": "pre_revenue"`), with every exposure
   carrying both against the same batches without them; HTTP_ROUNDS rounds of HTTP_SECONDS
   each, alternated, new unit and event ids in every request; events/s and the CPU per event
   of the server and PostgreSQL. Goal (the issue): ingestion >= 0.9x without covariates.

The recompute with covariates is `loadtests/bench_recompute.py --covariates` (10 M events).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loadtests._harness import api, litmus_server
from loadtests.bench_counterfactual import (
    copy_rounds,
    cpu_per,
    http_rounds,
    per_round,
    rates,
    validation_costs,
    wrk_rate,
)
from loadtests.bench_ingest import LUA

ROUNDS = 7
ROWS = 100_000
HTTP_ROUNDS = 5
HTTP_SECONDS = 4
COVARIATES = ["pre_sessions", "pre_revenue"]
METRICS = {"primary": "conversion", "guardrails": [], "covariates": COVARIATES,
           "definitions": {"conversion": {"cuped": "pre_revenue"}}}

_PLAIN_EXPOSURE = '\'","variant":"model_b","event_id":"\''
_COV_EXPOSURE = ('\'","variant":"model_b","covariates":{"pre_sessions":\' .. (u %% 50) .. '
                 '\',"pre_revenue":\' .. (u %% 7) .. \'.5},"event_id":"\'')
assert LUA.count(_PLAIN_EXPOSURE) == 1
LUA_COV = LUA.replace(_PLAIN_EXPOSURE, _COV_EXPOSURE)
# --attributes: the exposures also carry two segment attributes (migration 0019).
_ATTRS = ('\'.5},"attributes":{"country":"c\' .. (u %% 20) .. \'","device":"ios"},'
          '"event_id":"\'')
assert _COV_EXPOSURE.count('\'.5},"event_id":"\'') == 1
LUA_COV_ATTRS = LUA.replace(_PLAIN_EXPOSURE,
                            _COV_EXPOSURE.replace('\'.5},"event_id":"\'', _ATTRS))


def validation(attributes: bool) -> None:
    """In process: a 1000-event batch with two covariates (and with `attributes` two segment
    attributes) on every exposure against without, as JSON bytes through the typed decoder."""
    import orjson

    from litmus.api.event_decode import decode_events
    from litmus.db.events import EXPOSURE_COLUMNS
    from loadtests.bench_ingest import _Entry, events

    plain = {"events": events(1000)}
    with_c = {"events": [
        dict(e, covariates={"pre_sessions": u % 50, "pre_revenue": u % 7 + 0.5},
             **({"attributes": {"country": f"c{u % 20}", "device": "ios"}} if attributes
                else {}))
        if e["type"] == "exposure" else e for u, e in enumerate(plain["events"])]}
    entry: Any = _Entry()
    entry.experiment = dataclasses.replace(entry.experiment, metrics=METRICS)
    now = datetime.now(UTC)
    typed = decode_events(orjson.dumps(with_c), "typed", lambda _: entry, now)
    assert typed is not None  # validation_costs checks it too; the rows are looked at here
    cov_at = EXPOSURE_COLUMNS.index("covariate_2")
    assert typed.exposures[-1][cov_at] is not None, "the covariates were not kept"
    assert (typed.exposures[-1][-1] is not None) == attributes, "attributes kept or not"
    per_event = validation_costs({True: with_c, False: plain}, entry, ROUNDS)
    ratios = [b / a for a, b in zip(per_event[True], per_event[False], strict=True)]
    what = "covariates and attributes" if attributes else "covariates"
    print(f"parse  decode_events (JSON -> rows), 1000 events (CPU time), without {what} "
          f"{statistics.median(per_event[False]) * 1e6:6.2f} us/event (baseline)   with "
          f"{statistics.median(per_event[True]) * 1e6:6.2f} us/event", flush=True)
    print(f"parse  rate ratio with/without per round: {per_round(ratios)}", flush=True)


async def write_path(dsn: str) -> None:
    """Exposure rows COPYed with two covariate columns filled against the same rows with NULL."""
    from litmus.db import events as db
    from litmus.services.ingest import to_micros

    exp_ids = [str(uuid.uuid4()) for _ in range(4)]
    now = to_micros(datetime.now(UTC))
    conn = await db.connect(dsn)
    await conn.execute("DROP TABLE IF EXISTS bench_exposures_null")
    await conn.execute("CREATE TABLE bench_exposures_null (LIKE exposures INCLUDING ALL)")
    cols = db.EXPOSURE_COLUMNS[:db.EXPOSURE_COVARIATES + 5]

    def rows(with_c: bool, tag: str) -> list[tuple[object, ...]]:
        return [(exp_ids[i % 4], f"user-{(i * 2654435761) % 2**32:08x}", i % 3, now,
                 f"{tag}-{uuid.uuid4().hex}", -0.5,
                 *db.covariate_columns([float(i % 50), i % 7 + 0.5] if with_c else None))
                for i in range(ROWS)]

    try:
        rate, cpu_us, client_us = await copy_rounds(
            conn, {True: ("exposures", cols), False: ("bench_exposures_null", cols)}, rows, ROUNDS)
        stored = await conn.fetchrow("SELECT covariate_1, covariate_2, covariate_3 FROM exposures "
                                     "LIMIT 1")
        assert stored[1] is not None and stored[2] is None, stored
        await conn.execute("TRUNCATE exposures")
        await conn.execute("DROP TABLE bench_exposures_null")
    finally:
        await conn.close()
    ratios = [a / b for a, b in zip(rate[True], rate[False], strict=True)]
    print("write  COPY exposures, covariates NULL (baseline) " + rates(rate[False], "rows/s", 0))
    print("write  COPY exposures, 2 covariates             " + rates(rate[True], "rows/s", 0))
    print(f"write  ratio with/without per round: {per_round(ratios)}")
    print(f"write  CPU per row (client + its PostgreSQL backend): {cpu_per(cpu_us, 2)}")
    print(f"write  of which the client (asyncpg's row encoding): without "
          f"{statistics.median(client_us[False]):.2f} us, with "
          f"{statistics.median(client_us[True]):.2f} us per row", flush=True)


def launch(base: str) -> dict[str, Any]:
    """The experiment "bench" (model_a, model_b; 50/50) declaring the covariates, launched."""
    exp: dict[str, Any] = api(base, "POST", "/api/v1/experiments", {
        "key": "bench", "name": "bench", "description": "covariates benchmark",
        "owner_team": "perf", "metrics": METRICS,
        "variants": [{"key": "model_a", "weight": 0.5}, {"key": "model_b", "weight": 0.5}]})
    api(base, "POST", f"/api/v1/experiments/{exp['id']}/launch", {"ramp": 1})
    return exp


def http_ingest(data_dir: Path, attributes: bool = False, rounds: int = HTTP_ROUNDS) -> None:
    """Batches of 100 with and without covariates (and, with `attributes`, two segment
    attributes) on their exposures, alternated."""
    lua_with = LUA_COV_ATTRS if attributes else LUA_COV
    label = "2 covariates, 2 attributes" if attributes else "2 covariates"
    proc, base = litmus_server(data_dir, {"LITMUS_RECOMPUTE_INTERVAL_S": "3600"})
    try:
        exp = launch(base)
        time.sleep(0.5)
        url = base + "/api/v1/events"
        wrk_rate(url, lua_with.replace('"%%d-', '"w-%%d-'), 2)  # warm-up (and a 202 check)
        rate, cpu_us = http_rounds(url, {True: lua_with, False: LUA}, proc.p.pid, data_dir,
                                   rounds, HTTP_SECONDS)
        stored = asyncio.run(_count_covariates(data_dir, exp["id"]))
    finally:
        proc.stop()
    ratios = [a / b for a, b in zip(rate[True], rate[False], strict=True)]
    print("http   batch 100, exposures without covariates "
          + rates(rate[False], "ev/s", 1, baseline=True))
    print(f"http   batch 100, exposures with {label}  " + rates(rate[True], "ev/s", 1))
    print(f"http   ratio with/without per round: {per_round(ratios, goal=0.9)}")
    print(f"http   CPU per event (server + PostgreSQL): {cpu_per(cpu_us, 1)}")
    print(f"http   stored exposures with covariates: {stored[0]:,} of {stored[1]:,}"
          + (f", with attributes: {stored[2]:,}" if attributes else ""), flush=True)
    if attributes:
        assert stored[2] == stored[0], "the attributes were not stored with the covariates"


async def _count_covariates(data_dir: Path, exp_id: str) -> tuple[int, int, int]:
    """(exposures stored with covariates, all exposures, exposures with attributes) of the
    experiment: the check that the covariates really went through."""
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres:@/postgres?host={(data_dir / 'pg').resolve()}")
    try:
        row = await conn.fetchrow(
            "SELECT count(covariate_1), count(*), count(attributes) FROM exposures "
            "WHERE experiment_id = $1",
            uuid.UUID(exp_id))
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--http-only", action="store_true",
                        help="only the HTTP part (no in-process parse or COPY rounds)")
    parser.add_argument("--http-rounds", type=int, default=HTTP_ROUNDS,
                        help=f"alternated HTTP rounds of {HTTP_SECONDS} s each (default {HTTP_ROUNDS})")
    parser.add_argument("--attributes", action="store_true",
                        help="the exposures also carry two segment attributes")
    args = parser.parse_args()
    print("== covariates benchmark (server on core 0, wrk on core 1, embedded PostgreSQL on "
          f"both; load average {os.getloadavg()[0]:.2f})", flush=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="litmus-bench-cov-") as tmp:
        if not args.http_only:
            validation(args.attributes)
            from litmus.db.pool import run_migrations, start_embedded

            dsn = start_embedded(Path(tmp) / "write", cleanup_mode="stop")
            asyncio.run(run_migrations(dsn))
            asyncio.run(write_path(dsn))
        if not args.skip_http:
            http_ingest(Path(tmp) / "http", args.attributes, args.http_rounds)
    print(f"(took {time.monotonic() - t0:.0f} s; load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
