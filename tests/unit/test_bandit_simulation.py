"""Offline validation of the bandit core: 100 seeded runs of 20,000 pulls, simulated as a batch.

Each run refreshes its weights every 100 pulls, like the recompute loop: a block's pulls are a
multinomial draw over the current weights, its conversions binomial at each arm's true rate, and
the next weights come from the same core functions `update` uses (`p_best_arrays`, `in_burn_in`,
`floored_weights`, `converged_now`), applied to all seeds at once.

Monte Carlo budget: production P(best) uses MIN_DRAWS (10,000) draws. Doing that for 100 seeds x
200 refreshes is 10^9 beta draws (over a minute here), so:
- weights come from a 250-draw P(best). That estimate is unbiased, so each pull's expected arm is
  the same as with 10,000 draws; only the block-to-block noise is a little larger. Measured
  offline: mean regret 87.8 with 250 draws against 88.6 with 2,000 (standard error 1.5).
- convergence is decided with MIN_DRAWS draws, exactly as in production, for every seed that could
  converge: not yet converged, min_units reached, and a 250-draw max P(best) within 0.1 of the
  threshold (0.1 is 7 standard errors of a 250-draw proportion near 0.95, so no real crossing
  is missed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.typing import NDArray

from litmus.core.bandit import (
    MIN_DRAWS,
    converged_now,
    floored_weights,
    in_burn_in,
    p_best_arrays,
)
from litmus.core.models import BanditSettings

RATES = (0.04, 0.05, 0.06, 0.07, 0.10)
SEEDS = 100
PULLS = 20_000
BLOCK = 100
WEIGHT_DRAWS = 250
SCREEN_MARGIN = 0.1


@dataclass(frozen=True)
class Simulation:
    """Per-seed outcome of a batch of bandit runs."""

    converged: NDArray[np.bool_]
    winner: NDArray[np.int64]  # arm index declared at convergence, -1 if none
    converged_at_pull: NDArray[np.int64]
    regret: NDArray[np.float64]  # expected conversions lost against always playing the best arm
    seconds: float


def simulate(rates: tuple[float, ...], settings: BanditSettings, seed: int) -> Simulation:
    """Thompson sampling with a floor over Bernoulli arms, SEEDS runs vectorised as one batch."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    p_true = np.asarray(rates)
    k = p_true.size
    gap = p_true.max() - p_true
    n = np.zeros((SEEDS, k), dtype=np.int64)
    wins = np.zeros((SEEDS, k), dtype=np.int64)
    weights = np.full((SEEDS, k), 1.0 / k)
    converged = np.zeros(SEEDS, dtype=bool)
    winner = np.full(SEEDS, -1, dtype=np.int64)
    at_pull = np.full(SEEDS, -1, dtype=np.int64)
    regret = np.zeros(SEEDS)

    for block in range(PULLS // BLOCK):
        pulls = rng.multinomial(BLOCK, weights)
        wins += rng.binomial(pulls, p_true)
        n += pulls
        regret += pulls @ gap

        burn = in_burn_in(n, settings.burn_in_units)
        if burn.all():
            continue
        p = p_best_arrays(n, wins, wins, "binary", settings.goal, WEIGHT_DRAWS, rng)
        candidate = (
            ~converged
            & ~burn
            & (n.min(axis=-1) >= settings.min_units)
            & (p.max(axis=-1) >= settings.convergence_threshold - SCREEN_MARGIN)
        )
        if candidate.any():
            p[candidate] = p_best_arrays(
                n[candidate],
                wins[candidate],
                wins[candidate],
                "binary",
                settings.goal,
                MIN_DRAWS,
                rng,
            )
        new = candidate & converged_now(p, n, settings)
        winner[new] = p[new].argmax(axis=-1)
        at_pull[new] = (block + 1) * BLOCK
        converged |= new
        weights = np.where(burn[:, None], 1.0 / k, floored_weights(p, settings.floor))

    return Simulation(converged, winner, at_pull, regret, time.perf_counter() - started)


@pytest.fixture(scope="module")
def five_models() -> Simulation:
    return simulate(RATES, BanditSettings(), seed=20260101)


def test_best_model_is_declared_in_95_percent_of_seeds(five_models: Simulation) -> None:
    sim = five_models
    best = int(np.argmax(RATES))
    right = float(np.mean(sim.converged & (sim.winner == best)))
    wrong = float(np.mean(sim.converged & (sim.winner != best)))
    equal_regret = PULLS * (max(RATES) - float(np.mean(RATES)))
    mean_regret = float(sim.regret.mean())
    se = float(sim.regret.std(ddof=1) / np.sqrt(SEEDS))
    print(
        f"\nbandit_simulation rates={RATES} seeds={SEEDS} pulls={PULLS} refresh_every={BLOCK}"
        f"\n  best declared: {right:.0%}  wrong arm declared: {wrong:.0%}"
        f"  median pulls to convergence: {np.median(sim.converged_at_pull[sim.converged]):.0f}"
        f"\n  mean cumulative regret vs always-best: {mean_regret:.1f} conversions (se {se:.1f})"
        f"\n  equal allocation regret vs always-best: {equal_regret:.1f} conversions"
        f"\n  bandit vs equal allocation: {equal_regret - mean_regret:.1f} more conversions,"
        f" regret {mean_regret / equal_regret:.1%} of equal allocation's"
        f"\n  simulated in {sim.seconds:.1f}s"
    )
    assert right >= 0.95
    assert wrong <= 0.05
    # Thompson sampling must beat equal allocation by a wide margin here (measured ≈ 12%).
    assert mean_regret < 0.25 * equal_regret


@pytest.mark.parametrize("rate", [0.05, 0.10])
def test_identical_models_rarely_declare_a_winner(rate: float) -> None:
    sim = simulate((rate,) * 5, BanditSettings(), seed=int(rate * 1000) + 7)
    false_winner = float(np.mean(sim.converged))
    print(
        f"\nbandit_simulation null rate={rate}: false winner in {false_winner:.0%} of {SEEDS} "
        f"seeds ({sim.seconds:.1f}s)"
    )
    assert false_winner <= 0.05
