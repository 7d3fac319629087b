"""Offline acceptance of the constrained bandit: a model router choosing among 4 models on
quality, subject to cost and p95 latency bounds — 100 seeded runs of 100,000 requests each,
simulated as one batch through the same core functions the server's `update` uses.

The router: quality 0.70/0.76/0.80/0.82 (0/1 per request), cost per request 0.2/0.5/1.0/3.0
(each request's cost lognormal around its model's, 10% spread), latency lognormal (σ = 0.5)
with p95 400/700/1300/2600 ms. The objective maximises quality subject to mean cost ≤ 1.5 and
p95 latency ≤ 1500 ms, so model 3 (index 2) is the right answer while model 4, the best on
quality alone, breaks both bounds.

Cadence: the server updates weights every `update_interval_s` (10 s by default); at 200
requests/s that is an update every 2,000 requests, 50 updates per run. Between updates the
requests are a multinomial draw over the current weights (the first block at equal weights, as
a freshly launched bandit). At each update, per seed and model: the quality posterior from
(units, successes); cost's unit-level mean and its se sqrt(var/n); latency's p95 over the
model's events (numpy's default quantile) and its order-statistic se
(x_(u) − x_(l)) / (2·1.959964) with ranks n·q ∓ 1.959964·sqrt(n·q·(1−q)) (the ranks of
`litmus.core.quantiles`, from exact values rather than the server's sketch); then
`constrained_p_best_arrays` with production's MIN_DRAWS draws, burn-in, floored weights and
sticky convergence exactly as `update` applies them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.typing import NDArray

from litmus.core.bandit import (
    MIN_DRAWS,
    ConstraintStat,
    constrained_p_best_arrays,
    converged_now,
    floored_weights,
    in_burn_in,
    p_best_arrays,
    reward_arms,
    update,
    update_seed,
)
from litmus.core.models import BanditSettings, Constraint
from litmus.core.quantiles import Z95, order_statistic_ranks, order_statistic_se
from litmus.core.snapshot import MetricAgg
from litmus.core.unitfold import ExperimentUnits

QUALITY = np.array([0.70, 0.76, 0.80, 0.82])
COST = np.array([0.2, 0.5, 1.0, 3.0])
COST_SIGMA = 0.1
LATENCY_P95 = np.array([400.0, 700.0, 1300.0, 2600.0])
LATENCY_SIGMA = 0.5
LATENCY_MU = np.log(LATENCY_P95) - 1.6448536269514722 * LATENCY_SIGMA
COST_MAX, LATENCY_MAX, Q = 1.5, 1500.0, 0.95

SEEDS = 100
UNITS = 100_000
UNITS_PER_S = 200
SETTINGS = BanditSettings()
BLOCK = int(UNITS_PER_S * SETTINGS.update_interval_s)  # requests between two updates
K = QUALITY.size


def quantile_and_se(values: NDArray[np.float64], q: float) -> tuple[float, float]:
    """numpy's default (linear) q-quantile and `order_statistic_se`, from one partition instead
    of a sort (the simulation takes 20,000 of them). NaN for no values."""
    n = values.size
    if n == 0:
        return math.nan, math.nan
    lo_rank, hi_rank = order_statistic_ranks(n, q)
    lo, hi = int(lo_rank), int(hi_rank)
    h = (n - 1) * q
    below = math.floor(h)
    above = min(below + 1, n - 1)
    part = np.partition(values, sorted({lo, hi, below, above}))
    value = part[below] + (h - below) * (part[above] - part[below])
    return float(value), float(part[hi] - part[lo]) / (2 * Z95)


@dataclass(frozen=True)
class Run:
    """Per-seed outcome of a batch of router runs."""

    converged: NDArray[np.bool_]
    winner: NDArray[np.int64]  # model index declared at convergence, -1 if none
    converged_at_unit: NDArray[np.int64]
    top: NDArray[np.int64]  # top model at the last update
    share_after_burn_in: NDArray[np.float64]  # (seeds, k) traffic after the first real update
    p_feasible: NDArray[np.float64]  # (seeds, 2, k) at the last update (NaN when unconstrained)
    seconds: float


def simulate(constrained: bool, seed: int) -> Run:
    """SEEDS router runs as one batch; constrained or on quality alone."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = np.zeros((SEEDS, K), dtype=np.int64)
    wins = np.zeros((SEEDS, K), dtype=np.int64)
    cost_s = np.zeros((SEEDS, K))
    cost_ss = np.zeros((SEEDS, K))
    latency = [np.empty(0) for _ in range(SEEDS * K)]
    weights = np.full((SEEDS, K), 1.0 / K)
    converged = np.zeros(SEEDS, dtype=bool)
    winner = np.full(SEEDS, -1, dtype=np.int64)
    at_unit = np.full(SEEDS, -1, dtype=np.int64)
    after = np.zeros((SEEDS, K), dtype=np.int64)
    learned = np.zeros(SEEDS, dtype=bool)  # a post-burn-in update has set the weights
    p = np.full((SEEDS, K), 1.0 / K)
    feas = np.full((SEEDS, 2, K), np.nan)
    hi, lo = np.array([COST_MAX, LATENCY_MAX]), np.array([np.nan, np.nan])

    for block in range(UNITS // BLOCK):
        pulls = rng.multinomial(BLOCK, weights)
        after += np.where(learned[:, None], pulls, 0)
        wins += rng.binomial(pulls, QUALITY)
        n += pulls
        if constrained:
            group = np.repeat(np.arange(SEEDS * K), pulls.ravel())
            arm = group % K
            cost = COST[arm] * np.exp(COST_SIGMA * rng.standard_normal(group.size)
                                      - COST_SIGMA**2 / 2)
            cost_s += np.bincount(group, cost, minlength=SEEDS * K).reshape(SEEDS, K)
            cost_ss += np.bincount(group, cost * cost, minlength=SEEDS * K).reshape(SEEDS, K)
            lat = np.exp(LATENCY_MU[arm] + LATENCY_SIGMA * rng.standard_normal(group.size))
            for g, chunk in enumerate(np.split(lat, np.cumsum(pulls.ravel())[:-1])):
                latency[g] = np.concatenate([latency[g], chunk])

            value = np.full((SEEDS, 2, K), np.nan)
            se = np.full((SEEDS, 2, K), np.nan)
            safe = np.maximum(n, 1)
            mean = cost_s / safe
            var = (cost_ss - cost_s * mean) / np.maximum(n - 1, 1)
            value[:, 0] = np.where(n > 0, mean, np.nan)
            se[:, 0] = np.where(n > 1, np.sqrt(np.maximum(var, 0.0) / safe), np.nan)
            for g in range(SEEDS * K):
                value[g // K, 1, g % K], se[g // K, 1, g % K] = quantile_and_se(latency[g], Q)
            p, feas = constrained_p_best_arrays(n, wins, wins, "binary", SETTINGS.goal, value,
                                                se, hi, lo, MIN_DRAWS, rng)
        else:
            p = p_best_arrays(n, wins, wins, "binary", SETTINGS.goal, MIN_DRAWS, rng)

        burn = in_burn_in(n, SETTINGS.burn_in_units)
        new = ~converged & ~burn & converged_now(p, n, SETTINGS)
        winner[new] = p[new].argmax(axis=-1)
        at_unit[new] = (block + 1) * BLOCK
        converged |= new
        weights = np.where(burn[:, None], 1.0 / K, floored_weights(p, SETTINGS.floor))
        learned |= ~burn

    share = after / np.maximum(after.sum(axis=-1, keepdims=True), 1)
    return Run(converged, winner, at_unit, p.argmax(axis=-1), share, feas,
               time.perf_counter() - started)


def report(name: str, run: Run) -> str:
    picked = np.bincount(run.winner[run.converged], minlength=K)
    return (
        f"\nrouter_simulation {name}: seeds={SEEDS} units={UNITS} update_every={BLOCK} units"
        f" ({UNITS_PER_S}/s, {SETTINGS.update_interval_s:g} s) draws={MIN_DRAWS}"
        f"\n  converged {int(run.converged.sum())}/{SEEDS}; declared winner per model"
        f" {picked.tolist()}; top at the end per model {np.bincount(run.top, minlength=K).tolist()}"
        f"\n  median units to convergence: {np.median(run.converged_at_unit[run.converged]):.0f}"
        f"\n  traffic after burn-in, mean per model: "
        f"{np.round(run.share_after_burn_in.mean(axis=0), 4).tolist()}"
        f" (model 4 max over seeds {run.share_after_burn_in[:, 3].max():.4f})"
        f"\n  simulated in {run.seconds:.1f}s"
    )


@pytest.mark.slow
def test_constrained_router_picks_the_best_model_within_cost_and_latency() -> None:
    run = simulate(constrained=True, seed=20261202)
    print(report("constrained (cost <= 1.5, p95 latency <= 1500 ms)", run))
    print(f"  p_feasible at the end, mean over seeds: cost "
          f"{np.round(run.p_feasible[:, 0].mean(axis=0), 3).tolist()} latency "
          f"{np.round(run.p_feasible[:, 1].mean(axis=0), 3).tolist()}")
    right = int(np.sum(run.converged & (run.winner == 2)))
    assert right >= 95, f"model 3 declared in {right} of {SEEDS} seeds"
    assert int(np.sum(run.top == 2)) >= 95
    # Model 4 breaks both bounds: after burn-in it gets little more than the floor.
    assert float(run.share_after_burn_in[:, 3].max()) <= 0.05
    assert np.all(run.p_feasible[:, :, 3] < 0.01)
    assert np.all(run.p_feasible[:, :, 2] > 0.99)


@pytest.mark.slow
def test_plain_router_on_quality_alone_picks_the_costly_model() -> None:
    run = simulate(constrained=False, seed=20261203)
    print(report("plain (quality only)", run))
    right = int(np.sum(run.converged & (run.winner == 3)))
    assert right >= 90, f"model 4 declared in {right} of {SEEDS} seeds"


def test_quantile_and_se_match_numpy_and_the_order_statistics() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 100, 2_345):
        x = rng.lognormal(6.0, 0.5, n)
        value, se = quantile_and_se(x.copy(), Q)
        assert value == pytest.approx(float(np.quantile(x, Q)), rel=1e-12)
        assert se == pytest.approx(order_statistic_se(np.sort(x), Q), rel=1e-12)
    assert all(math.isnan(v) for v in quantile_and_se(np.empty(0), Q))


def test_zero_one_and_success_only_quality_give_the_same_constrained_p_best() -> None:
    """A router that sends quality 0 or 1 for every request and one that sends only the 1s:
    the same units above 0, the same arms through `reward_arms`, the same P(best) and
    p_feasible from `update` with the cost and latency constraints on the same seed."""
    rng = np.random.default_rng(2)
    units, names = 4000, ["small", "mid", "large", "huge"]
    keys = np.arange(units, dtype=np.int64)
    arm = rng.integers(0, K, units)
    good = rng.random(units) < QUALITY[arm]
    stats: list[ConstraintStat] = [
        (Constraint("cost_usd", max=COST_MAX),
         {m: (float(COST[i]), 0.01) for i, m in enumerate(names)}),
        (Constraint("latency_ms", max=LATENCY_MAX),
         {m: (float(LATENCY_P95[i]), 40.0) for i, m in enumerate(names)}),
    ]
    settings = BanditSettings(reward_metric="quality")
    seen = []
    for zeros in (True, False):
        st = ExperimentUnits()
        st.fold_exposures(keys, arm, np.zeros(units, np.int64), keys, None)
        sel = np.ones(units, np.bool_) if zeros else good
        st.fold_metrics("quality", keys[sel], good[sel].astype(np.float64), None)
        t = st.arm_totals()
        exposed = {names[a]: u for a, (u, _) in t.exposures.items()}
        per = {names[a]: v for (a, _), v in t.metrics.items()}
        arms = reward_arms(settings, exposed,
                           {k: MetricAgg(int(v[1]), int(v[0]), v[2], v[3]) for k, v in per.items()},
                           {k: int(v[4]) for k, v in per.items()})
        state = update(arms, settings, np.random.default_rng(update_seed("router", 3)), None,
                       "2026-01-01T00:00:00Z", stats)
        seen.append((arms, state))
    assert seen[0] == seen[1]
    arms, state = seen[0]
    assert arms["large"].sum == good[arm == 2].sum()
    assert state.top_variant == "large" and state.p_best["huge"] == 0.0
    assert state.p_feasible["huge"] == {"cost_usd": 0.0, "latency_ms": 0.0}
