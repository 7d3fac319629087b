"""Recompute benchmark: one experiment with 10 M events (2 M exposures, 8 M metric events).

Every time is printed as a ratio against a plain `GROUP BY variant` scan over the whole events
tables, measured in the same run on the same data:
- catch-up: the first fold of all 10 M events into the leader's in-memory per-unit state and
  the per-arm tables, plus one snapshot: a full recompute from the raw events (what a leader
  pays when there is no checkpoint);
- steady state: a recompute after 100 k new events (fold + snapshot) — the cost that repeats
  (new units, repeat and late earlier exposures, metric events on random existing units);
  five rounds, each after another 100 k events, and their median (one round is noisy). One
  metric, `latency_ms`, is defined as a p95, so each fold also adds its events to the quantile
  sketches and each snapshot reads them; five more rounds, alternated with those, run with the
  sketches turned off in this script, and the ratio of the medians is the sketches' cost;
- idle: a recompute with nothing new;
- checkpoint: writing the per-unit state to PostgreSQL (every 5 minutes), and a new leader's
  takeover: loading it and replaying the events that followed it (here one round).
For reference it also times the naive unit-level query (per-unit totals by GROUP BY unit, then
by variant) that a non-incremental design in SQL would run on every recompute.

`--covariates`: every generated exposure also carries two covariates (`pre_sessions` g % 50,
`pre_revenue` g % 7, declared in metrics.covariates) and `conversion` is defined with
`"cuped": "pre_revenue"`, so each fold keeps the units' first-exposure covariates and each
snapshot reads the kept CUPED sums (compare with a run without the option).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from litmus.core.models import Experiment, Variant
from litmus.core.unitfold import ExperimentUnits
from litmus.db import experiments as db_experiments
from litmus.db.pool import create_pool, run_migrations, start_embedded
from litmus.services.recompute import Recompute

BASELINE = """
SELECT variant, count(*) FROM exposures WHERE experiment_id = $1 GROUP BY variant;
"""
BASELINE_M = "SELECT variant, count(*), sum(value) FROM metric_events WHERE experiment_id = $1 GROUP BY variant"
STEADY_ROUNDS = 5
COVARIATES = ["pre_sessions", "pre_revenue"]
# The covariates column and its value per generated row (g), or nothing without --covariates.
_COV = {True: (", covariate_1, covariate_2", ", (g % 50)::float8, (g % 7)::float8"),
        False: ("", "")}
NAIVE_UNIT = """
WITH first AS (
  SELECT DISTINCT ON (unit_id) unit_id, variant FROM exposures WHERE experiment_id = $1
  ORDER BY unit_id, ts),
tot AS (
  SELECT unit_id, metric, sum(value) AS total, count(*) AS n FROM metric_events
  WHERE experiment_id = $1 GROUP BY unit_id, metric)
SELECT f.variant, t.metric, count(*), sum(t.total), sum(t.total * t.total), sum(t.n)
FROM tot t JOIN first f USING (unit_id) GROUP BY 1, 2
"""


async def timed(label: str, coro: object) -> float:
    t0 = time.perf_counter()
    await coro  # type: ignore[misc]
    dt = time.perf_counter() - t0
    print(f"  {label:<58} {dt:8.2f} s", flush=True)
    return dt


def print_steps(rec: Recompute) -> None:
    """Seconds per step of the last fold."""
    fold = rec.last_fold
    assert fold is not None
    print("      fold steps: " + " ".join(
        f"{k.removeprefix('fold_')} {v:.3f}" for k, v in fold.seconds.items()), flush=True)


async def print_cuped(conn: asyncpg.Connection, exp_id: uuid.UUID) -> None:
    """Check that the snapshot carries the CUPED comparison (each lift row's `cuped` object)."""
    snap = json.loads(await conn.fetchval(
        "SELECT snapshot::text FROM results_snapshots WHERE experiment_id = $1", exp_id))
    rows: list[dict[str, object]] = []

    def walk(x: object) -> None:
        if isinstance(x, dict):
            if isinstance(x.get("cuped"), dict):
                rows.append(x["cuped"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(snap)
    if not rows:
        raise RuntimeError("the snapshot carries no cuped comparison")
    print(f"  snapshot: {len(rows)} lift rows carry cuped, e.g. "
          + ", ".join(f"{k} {v}" for k, v in list(rows[0].items())[:4]), flush=True)


async def insert_events(conn: asyncpg.Connection, exp_id: uuid.UUID, exposures: int,
                        metrics: int, start: int, covariates: bool = False) -> None:
    """Generate events in SQL (faster than shipping rows from Python)."""
    units = exposures + exposures // 5
    col, val = _COV[covariates]
    await conn.execute(
        f"""INSERT INTO exposures (experiment_id, unit_id, variant, ts, event_id, probability{col})
           SELECT $1, 'u' || g, (g % 3)::smallint, now() - (g % 3600) * interval '1 second', 'e' || g,
                  0.2 + (g % 5) / 10.0{val}
           FROM generate_series($2::bigint, $3::bigint) g""", exp_id, start, start + exposures - 1)
    await conn.execute(
        """INSERT INTO metric_events (experiment_id, unit_id, metric, value, ts, event_id)
           SELECT $1, 'u' || (g % $4::bigint),
                  CASE WHEN g % 4 = 0 THEN 'latency_ms' ELSE 'conversion' END,
                  CASE WHEN g % 4 = 0 THEN 50 + (g % 997) ELSE 1 END,
                  now() - (g % 3600) * interval '1 second', 'm' || g
           FROM generate_series($2::bigint, $3::bigint) g""",
        exp_id, start, start + metrics - 1, units)


async def insert_round(conn: asyncpg.Connection, exp_id: uuid.UUID, exposures: int,
                       metrics: int, start: int, units: int, covariates: bool = False) -> None:
    """One steady round, spread over the whole unit space as live traffic would be: half the
    exposures are new units, half repeat exposures of random existing units, and one in ten of
    those is dated before any stored exposure (a late, earlier exposure: the unit may change
    arm and its metric totals move with it); the metric events hit random existing units."""
    col, val = _COV[covariates]
    await conn.execute(
        f"""INSERT INTO exposures (experiment_id, unit_id, variant, ts, event_id, probability{col})
           SELECT $1, CASE WHEN g % 2 = 0 THEN 'n' || g ELSE 'u' || (g * 2654435761 % $4) END,
                  (g % 3)::smallint,
                  CASE WHEN g % 20 = 1 THEN now() - interval '2 hours' ELSE now() END, 'e' || g,
                  0.2 + (g % 5) / 10.0{val}
           FROM generate_series($2::bigint, $3::bigint) g""",
        exp_id, start, start + exposures - 1, units)
    await conn.execute(
        """INSERT INTO metric_events (experiment_id, unit_id, metric, value, ts, event_id)
           SELECT $1, 'u' || (g * 40503 % $4),
                  CASE WHEN g % 4 = 0 THEN 'latency_ms' ELSE 'conversion' END,
                  CASE WHEN g % 4 = 0 THEN 50 + (g % 997) ELSE 1 END, now(), 'm' || g
           FROM generate_series($2::bigint, $3::bigint) g""",
        exp_id, start, start + metrics - 1, units)


async def main(total: int, covariates: bool = False) -> None:
    exposures, metrics = total // 5, total - total // 5
    with tempfile.TemporaryDirectory(prefix="litmus-bench-recompute-") as tmp:
        print(f"== recompute benchmark: {total:,} events ({exposures:,} exposures, "
              f"{metrics:,} metric events) on the embedded PostgreSQL"
              + (f"; exposures carry covariates {', '.join(COVARIATES)}, conversion cuped on "
                 "pre_revenue" if covariates else ""), flush=True)
        dsn = await asyncio.get_running_loop().run_in_executor(None, start_embedded, Path(tmp))
        await run_migrations(dsn)
        pool = await create_pool(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            exp = Experiment(id=str(uuid.uuid4()), key="bench", name="bench", description="d",
                             owner_team="perf", status="draft",
                             variants=(Variant("model_a", 0.4), Variant("model_b", 0.3),
                                       Variant("model_c", 0.3)),
                             metrics={"primary": "conversion", "guardrails": [], "definitions": {
                                 "latency_ms": {"stat": "p95", "direction": "decrease"},
                                 **({"conversion": {"cuped": "pre_revenue"}} if covariates
                                    else {})},
                                 **({"covariates": COVARIATES} if covariates else {})})
            exp = await db_experiments.create(pool, exp, "bench")
            await conn.execute("UPDATE experiments SET status = 'running', launched_at = now() "
                               "WHERE id = $1", uuid.UUID(exp.id))
            uid = uuid.UUID(exp.id)
            t0 = time.perf_counter()
            await insert_events(conn, uid, exposures, metrics, 1, covariates)
            await conn.execute("VACUUM ANALYZE")
            print(f"  generated the events in {time.perf_counter() - t0:.1f} s", flush=True)
            rec = Recompute(pool, dsn, None, 3600)  # type: ignore[arg-type]

            async def baseline() -> None:
                await conn.fetch(BASELINE, uid)
                await conn.fetch(BASELINE_M, uid)

            await baseline()  # warm the cache for a fair baseline
            base = await timed("baseline: GROUP BY variant over both events tables", baseline())
            naive = await timed("reference: naive unit-level query (every recompute)",
                                conn.fetch(NAIVE_UNIT, uid))
            catch_up = await timed("catch-up: first fold of all events + snapshot", rec.tick())
            print_steps(rec)
            if covariates:
                await print_cuped(conn, uid)
            steps: list[float] = []
            plain: list[float] = []
            with_sketches = ExperimentUnits._sketch
            for i in range(2 * STEADY_ROUNDS):
                sketching = i % 2 == 0
                # Without: this script alone turns the sketches off, to price them.
                ExperimentUnits._sketch = (  # type: ignore[method-assign]
                    with_sketches if sketching else lambda *a: None)
                await insert_round(conn, uid, 20_000, 80_000, 50_000_000 + i * 1_000_000,
                                   exposures + exposures // 5, covariates)
                label = "with p95 sketches" if sketching else "sketches off"
                (steps if sketching else plain).append(await timed(
                    f"steady state {i // 2 + 1}/{STEADY_ROUNDS} ({label}): after 100k events",
                    rec.tick()))
                print_steps(rec)
            ExperimentUnits._sketch = with_sketches  # type: ignore[method-assign]
            steady = statistics.median(steps)
            print(f"  {'steady state: median of the ' + str(STEADY_ROUNDS) + ' rounds':<58} "
                  f"{steady:8.2f} s")
            print(f"  steady state with the p95 sketches / without: "
                  f"{steady / statistics.median(plain):.3f}x (medians; per round "
                  + " ".join(f"{a / b:.2f}" for a, b in zip(steps, plain, strict=True)) + ")")
            idle = await timed("idle: recompute with no new events", rec.tick())
            states = rec.folder.states or {}
            size = sum(a.nbytes for st in states.values() for a in st.arrays().values())
            print(f"  per-unit state in memory: {size / 1e6:.0f} MB "
                  f"({sum(st.units for st in states.values()):,} units)")
            async with pool.acquire() as c:
                cp = await timed("checkpoint: write the per-unit state", rec.folder.checkpoint(c))
            await insert_round(conn, uid, 20_000, 80_000, 60_000_000, exposures + exposures // 5,
                               covariates)
            await rec.tick()  # folded by this leader, after its checkpoint
            rec.folder.forget()  # a new leader: nothing in memory
            takeover = await timed("takeover: load the checkpoint, replay 100k events, recompute",
                                   rec.tick())
            assert rec.last_fold is not None and rec.last_fold.replayed == 100_000, rec.last_fold
            print_steps(rec)
            print(f"  ratios against the baseline ({base:.2f} s): naive unit-level "
                  f"{naive / base:.2f}x, catch-up (full recompute) {catch_up / base:.2f}x, "
                  f"steady state {steady / base:.3f}x, idle {idle / base:.3f}x, "
                  f"checkpoint {cp / base:.2f}x, takeover {takeover / base:.2f}x")
        finally:
            await conn.close()
            await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--covariates", action="store_true",
                        help="exposures carry two covariates; conversion is defined with cuped")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.covariates))
