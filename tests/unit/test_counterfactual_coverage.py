"""Coverage of the counterfactual estimates on data a Thompson-sampling bandit logged.

Five models convert at 0.04/0.05/0.06/0.07/0.10. Each seeded run serves 50,000 units through
the Litmus bandit: the server recomputes weights every `update_interval_s` (10 s); at 100 units/s
that is every 1,000 units, 50 updates per run. The first block runs at equal weights (a freshly
launched bandit, and burn-in); after each block the next weights come from the core functions
`update` applies — `p_best_arrays` over every unit so far (binary reward: units, conversions),
`in_burn_in`, `floored_weights` with the default floor — for all seeds at once, the draws of the
u-th update seeded with `update_seed` as the server seeds them. Within a block each unit is served
an arm by a multinomial draw over the block's weights and converts at the arm's true rate, and its
propensity is its arm's weight in that block: what the assign answer returns and `log_exposure`
stores.

Monte Carlo budget: production's P(best) takes MIN_DRAWS (10,000) draws; here the weights take
WEIGHT_DRAWS. That changes how closely the logging policy follows P(best), not what is tested:
the estimators are valid for whatever weights served the units, as long as the logged
propensities are those weights, which they are by construction.

For each model-alone policy ({model: 1.0}) the per-arm `PropensitySums.of` of every seed go to
`policy_value`; the test asserts that the DR and SNIPS 95% intervals cover the model's true rate in
93–97% of seeds and the anytime intervals in at least 95%, and prints coverage, bias in se units
and the effective sample size per model (`pytest -s`). With SEEDS = 1,000 the standard error of a
coverage near 0.95 is 0.007, so the 93–97% band is about ±2.9 standard errors wide.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.typing import NDArray

from litmus.core.bandit import floored_weights, in_burn_in, p_best_arrays, update_seed
from litmus.core.counterfactual import PolicyValue, PropensitySums, policy_value
from litmus.core.models import BanditSettings
from litmus.core.quantiles import Z95

RATES = np.array([0.04, 0.05, 0.06, 0.07, 0.10])
K = RATES.size
NAMES = [f"model_{chr(ord('a') + i)}" for i in range(K)]
SEEDS = 1000
UNITS = 50_000
UNITS_PER_S = 100
SETTINGS = BanditSettings()
BLOCK = int(UNITS_PER_S * SETTINGS.update_interval_s)  # units between two weight updates
BLOCKS = UNITS // BLOCK
WEIGHT_DRAWS = 250
SALT = "counterfactual-coverage"


@dataclass(frozen=True)
class Logged:
    """Per seed, block and arm: units served, their conversions, and the weight they were served at."""

    n: NDArray[np.int64]  # (SEEDS, BLOCKS, K)
    x: NDArray[np.int64]
    w: NDArray[np.float64]
    seconds: float


def log_bandit(seed: int) -> Logged:
    """SEEDS bandit runs as one batch, with the server's update cadence."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_all = np.zeros((SEEDS, BLOCKS, K), dtype=np.int64)
    x_all = np.zeros((SEEDS, BLOCKS, K), dtype=np.int64)
    w_all = np.zeros((SEEDS, BLOCKS, K))
    weights = np.full((SEEDS, K), 1.0 / K)
    n = np.zeros((SEEDS, K), dtype=np.int64)
    wins = np.zeros((SEEDS, K), dtype=np.int64)
    for b in range(BLOCKS):
        served = rng.multinomial(BLOCK, weights)
        converted = rng.binomial(served, RATES)
        n_all[:, b], x_all[:, b], w_all[:, b] = served, converted, weights
        n += served
        wins += converted
        draws_rng = np.random.default_rng(update_seed(SALT, b))
        p = p_best_arrays(n, wins, wins, "binary", SETTINGS.goal, WEIGHT_DRAWS, draws_rng)
        burn = in_burn_in(n, SETTINGS.burn_in_units)
        weights = np.where(burn[:, None], 1.0 / K, floored_weights(p, SETTINGS.floor))
    return Logged(n_all, x_all, w_all, time.perf_counter() - started)


def units_of(log: Logged, seed: int, arm: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """One seed's units served `arm`: their values r (1 converted, else 0) and propensities p."""
    counts, conv = log.n[seed, :, arm], log.x[seed, :, arm]
    p = np.repeat(log.w[seed, :, arm], counts)
    starts = np.cumsum(counts) - counts
    rank = np.arange(p.size) - np.repeat(starts, counts)
    r = (rank < np.repeat(conv, counts)).astype(np.float64)
    return r, p


def spec_formulas(r: NDArray[np.float64], p: NDArray[np.float64], a: NDArray[np.int64],
                  target: int) -> tuple[float, float, float, float]:
    """SNIPS and DR (value, se) of {target: 1} straight from the definitions in
    docs/COUNTERFACTUAL.md, over raw units: the check that `policy_value` computes those."""
    pi = (a == target).astype(np.float64)
    t, u = pi * r / p, pi / p
    snips = t.sum() / u.sum()
    snips_se = math.sqrt(np.var(t - snips * u, ddof=1) / r.size) / u.mean()
    q = np.array([r[a == k].mean() for k in range(K)])
    d = q[target] + pi * (r - q[a]) / p
    return float(snips), snips_se, float(d.mean()), math.sqrt(np.var(d, ddof=1) / r.size)


@dataclass(frozen=True)
class Coverage:
    """Per estimator (dr, snips) and model: values, ses, and the intervals' coverage flags."""

    value: dict[str, NDArray[np.float64]]
    se: dict[str, NDArray[np.float64]]
    covered: dict[str, NDArray[np.bool_]]
    anytime: dict[str, NDArray[np.bool_]]
    ess: NDArray[np.float64]
    units: NDArray[np.int64]
    seconds: float


def estimate_all(log: Logged) -> Coverage:
    started = time.perf_counter()
    shape = (SEEDS, K)
    value = {e: np.full(shape, np.nan) for e in ("dr", "snips")}
    se = {e: np.full(shape, np.nan) for e in ("dr", "snips")}
    covered = {e: np.zeros(shape, dtype=bool) for e in ("dr", "snips")}
    anytime = {e: np.zeros(shape, dtype=bool) for e in ("dr", "snips")}
    ess = np.full(shape, np.nan)
    for s in range(SEEDS):
        sums = {NAMES[k]: PropensitySums.of(*units_of(log, s, k)) for k in range(K)}
        for k in range(K):
            pv: PolicyValue = policy_value(sums, {NAMES[k]: 1.0})
            assert pv.support
            ess[s, k] = pv.ess if pv.ess is not None else np.nan
            for name, est in (("dr", pv.dr), ("snips", pv.snips)):
                assert est.value is not None and est.se is not None and est.ci is not None
                value[name][s, k], se[name][s, k] = est.value, est.se
                covered[name][s, k] = est.ci[0] <= RATES[k] <= est.ci[1]
                anytime[name][s, k] = (est.anytime_ci is not None
                                       and est.anytime_ci[0] <= RATES[k] <= est.anytime_ci[1])
    return Coverage(value, se, covered, anytime, ess, log.n.sum(axis=1),
                    time.perf_counter() - started)


@pytest.fixture(scope="module")
def logged() -> Logged:
    return log_bandit(seed=20261202)


@pytest.mark.slow
def test_policy_value_matches_the_formulas_on_bandit_logged_units(logged: Logged) -> None:
    """Seed 0's raw units through the documented formulas and through `policy_value` agree."""
    rs, ps, arms = [], [], []
    for k in range(K):
        r, p = units_of(logged, 0, k)
        rs.append(r)
        ps.append(p)
        arms.append(np.full(r.size, k))
        assert r.size == logged.n[0, :, k].sum() and r.sum() == logged.x[0, :, k].sum()
    r, p, a = np.concatenate(rs), np.concatenate(ps), np.concatenate(arms)
    assert r.size == UNITS
    sums = {NAMES[k]: PropensitySums.of(rs[k], ps[k]) for k in range(K)}
    for k in range(K):
        snips, snips_se, dr, dr_se = spec_formulas(r, p, a, k)
        pv = policy_value(sums, {NAMES[k]: 1.0})
        assert pv.snips.value == pytest.approx(snips, rel=1e-9)
        assert pv.snips.se == pytest.approx(snips_se, rel=1e-6)
        assert pv.dr.value == pytest.approx(dr, rel=1e-9)
        assert pv.dr.se == pytest.approx(dr_se, rel=1e-6)
        assert pv.dr.ci == pytest.approx((dr - Z95 * dr_se, dr + Z95 * dr_se), rel=1e-6)


@pytest.mark.slow
def test_intervals_cover_each_model_alone_policy(logged: Logged) -> None:
    cov = estimate_all(logged)
    lines = [
        f"\ncounterfactual_coverage rates={tuple(RATES.tolist())} seeds={SEEDS} units={UNITS}"
        f" update every {BLOCK} units (10 s at {UNITS_PER_S}/s), floor={SETTINGS.floor},"
        f" weight draws={WEIGHT_DRAWS}; logged in {logged.seconds:.1f}s,"
        f" estimated in {cov.seconds:.1f}s",
        f"  {'model':8} {'rate':>5} {'units':>7} {'min p':>6} {'ESS':>7}"
        f" {'DR 95%':>7} {'DR any':>7} {'DR bias/se':>10}"
        f" {'SNIPS 95%':>9} {'SN any':>7} {'SN bias/se':>10}",
    ]
    rows = []
    for k in range(K):
        row = {}
        for e in ("dr", "snips"):
            row[e] = (float(cov.covered[e][:, k].mean()), float(cov.anytime[e][:, k].mean()),
                      float(np.mean((cov.value[e][:, k] - RATES[k]) / cov.se[e][:, k])))
        rows.append(row)
        lines.append(
            f"  {NAMES[k]:8} {RATES[k]:5.2f} {np.median(cov.units[:, k]):7.0f}"
            f" {logged.w[:, :, k].min():6.3f} {np.median(cov.ess[:, k]):7.0f}"
            f" {row['dr'][0]:7.1%} {row['dr'][1]:7.1%} {row['dr'][2]:+10.3f}"
            f" {row['snips'][0]:9.1%} {row['snips'][1]:7.1%} {row['snips'][2]:+10.3f}"
        )
    lines.append("  (units and ESS: medians over seeds; min p: smallest weight any unit was served at;"
                 " bias/se: mean over seeds of (estimate - true rate)/se)")
    print("\n".join(lines))
    for k in range(K):
        for e in ("dr", "snips"):
            ci, anytime, _ = rows[k][e]
            assert 0.93 <= ci <= 0.97, (NAMES[k], e, ci)
            assert anytime >= 0.95, (NAMES[k], e, anytime)
