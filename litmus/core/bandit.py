"""Thompson-sampling bandit over models: posteriors, P(best), floored weights, convergence.

Pure: numpy only, randomness from a `numpy.random.Generator` the caller passes in, the time
from the caller too. The array functions take sufficient statistics shaped `(..., k)` (k arms,
any leading batch axes) so the offline simulation can run many seeds at once through the same
code the server runs; `update` is the one entry point the recompute loop calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from litmus.core.models import ArmStats, BanditSettings, Goal, RewardType

__all__ = [
    "MIN_DRAWS",
    "BanditState",
    "converged_now",
    "floored_weights",
    "in_burn_in",
    "p_best",
    "p_best_arrays",
    "posterior_draws",
    "update",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Fewest Monte Carlo draws production uses: the standard error of P(best) near the 0.95
#: threshold is then sqrt(0.95 * 0.05 / 10_000) ≈ 0.002, small next to the threshold's margin.
MIN_DRAWS = 10_000

# Weak normal-inverse-gamma prior for continuous rewards: one pseudo-observation at the pooled
# mean with the pooled variance. Pooling makes the prior follow the metric's scale (milliseconds,
# dollars, scores) without configuration, and one pseudo-observation is enough to make n = 0 and
# n = 1 well defined without pulling real arms noticeably.
_PRIOR_KAPPA = 1.0
_PRIOR_NU = 1.0


@dataclass(frozen=True, slots=True)
class BanditState:
    """One recompute's bandit outcome; `converged_at`/`converged_variant` stick once set."""

    weights: dict[str, float]
    p_best: dict[str, float]
    top_variant: str
    converged: bool
    converged_at: str | None
    converged_variant: str | None
    burn_in: bool


def posterior_draws(
    n: ArrayLike,
    total: ArrayLike,
    total_sq: ArrayLike,
    reward_type: RewardType,
    draws: int,
    rng: np.random.Generator,
) -> FloatArray:
    """Posterior draws of each arm's mean: Beta-Bernoulli or normal-inverse-gamma (Student t), shape (..., draws, k)."""
    n_ = np.maximum(np.asarray(n, dtype=np.float64), 0.0)
    s_ = np.asarray(total, dtype=np.float64)
    if reward_type == "binary":
        # A unit that converted twice has a reward total above 1; a Bernoulli success is "the unit
        # converted", so successes are clipped into [0, n].
        successes = np.clip(s_, 0.0, n_)
        alpha = 1.0 + successes
        beta = 1.0 + n_ - successes
        shape = (*alpha.shape[:-1], draws, alpha.shape[-1])
        return rng.beta(alpha[..., None, :], beta[..., None, :], size=shape)
    return _normal_mean_draws(n_, s_, np.asarray(total_sq, dtype=np.float64), draws, rng)


def _normal_mean_draws(
    n: FloatArray, s: FloatArray, ss: FloatArray, draws: int, rng: np.random.Generator
) -> FloatArray:
    """Normal-inverse-gamma posterior of the mean: marginally Student t with nu0 + n dof."""
    pooled_n = n.sum(axis=-1, keepdims=True)
    pooled_s = s.sum(axis=-1, keepdims=True)
    pooled_ss = ss.sum(axis=-1, keepdims=True)
    safe_pn = np.maximum(pooled_n, 1.0)
    mu0 = np.where(pooled_n > 0, pooled_s / safe_pn, 0.0)
    pooled_var = (pooled_ss - pooled_s * pooled_s / safe_pn) / np.maximum(pooled_n - 1.0, 1.0)
    # No spread at all (no data, or every value equal) leaves no scale to learn from; any positive
    # scale then gives every arm the same posterior shape, which is the honest answer.
    var0 = np.where((pooled_n > 1) & (pooled_var > 0), pooled_var, 1.0)

    safe_n = np.maximum(n, 1.0)
    mean = np.where(n > 0, s / safe_n, 0.0)
    sse = np.where(n > 0, np.maximum(ss - s * s / safe_n, 0.0), 0.0)
    kappa = _PRIOR_KAPPA + n
    mu = (_PRIOR_KAPPA * mu0 + n * mean) / kappa
    nu = _PRIOR_NU + n
    nu_sigma2 = _PRIOR_NU * var0 + sse + _PRIOR_KAPPA * n * (mean - mu0) ** 2 / kappa
    scale = np.sqrt(nu_sigma2 / nu / kappa)

    shape = (*n.shape[:-1], draws, n.shape[-1])
    t = rng.standard_t(np.broadcast_to(nu[..., None, :], shape))
    return np.asarray(mu[..., None, :] + scale[..., None, :] * t, dtype=np.float64)


def p_best_arrays(
    n: ArrayLike,
    total: ArrayLike,
    total_sq: ArrayLike,
    reward_type: RewardType,
    goal: Goal,
    draws: int,
    rng: np.random.Generator,
) -> FloatArray:
    """Thompson sampling P(best) by Monte Carlo over posterior draws, shape (..., k)."""
    if draws < 1:
        raise ValueError("draws must be positive")
    samples = posterior_draws(n, total, total_sq, reward_type, draws, rng)
    k = samples.shape[-1]
    best = samples.argmin(axis=-1) if goal == "minimize" else samples.argmax(axis=-1)
    # One bincount over (batch row, arm) pairs: far cheaper than a one-hot of draws x arms.
    rows = best.reshape(-1, draws)
    flat = (rows + k * np.arange(rows.shape[0])[:, None]).ravel()
    counts = np.bincount(flat, minlength=rows.shape[0] * k).reshape(*best.shape[:-1], k)
    return np.asarray(counts / draws, dtype=np.float64)


def p_best(
    arms: Mapping[str, ArmStats], settings: BanditSettings, rng: np.random.Generator
) -> dict[str, float]:
    """Thompson sampling P(best) per arm by Monte Carlo with max(settings.draws, MIN_DRAWS) draws."""
    keys, n, s, ss = _arrays(arms)
    probs = p_best_arrays(
        n, s, ss, settings.reward_type, settings.goal, max(settings.draws, MIN_DRAWS), rng
    )
    return {key: float(p) for key, p in zip(keys, probs, strict=True)}


def floored_weights(p_best: ArrayLike, floor: float) -> FloatArray:
    """Probability matching with an additive floor: p_i = f + (1 - k f) w_i, normalised to sum 1."""
    p = np.asarray(p_best, dtype=np.float64)
    k = p.shape[-1]
    f = min(max(float(floor), 0.0), 1.0 / k)
    total = p.sum(axis=-1, keepdims=True)
    # An all-zero input has no preference to match: spread it evenly instead of dividing by 0.
    w = np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / k)
    out = f + (1.0 - k * f) * w
    return np.asarray(out / out.sum(axis=-1, keepdims=True), dtype=np.float64)


def in_burn_in(n: ArrayLike, burn_in_units: int) -> BoolArray:
    """Burn-in: true while any arm has fewer than burn_in_units units, shape (...)."""
    return np.asarray(np.any(np.asarray(n) < burn_in_units, axis=-1), dtype=np.bool_)


def converged_now(p_best: ArrayLike, n: ArrayLike, settings: BanditSettings) -> BoolArray:
    """Convergence test: burn-in over, every arm >= min_units and max P(best) >= threshold."""
    p = np.asarray(p_best, dtype=np.float64)
    n_ = np.asarray(n)
    enough = np.all(n_ >= max(settings.min_units, settings.burn_in_units), axis=-1)
    return np.asarray(enough & (p.max(axis=-1) >= settings.convergence_threshold), dtype=np.bool_)


def update(
    arms: Mapping[str, ArmStats],
    settings: BanditSettings,
    rng: np.random.Generator,
    previous: BanditState | None,
    now_iso: str,
) -> BanditState:
    """Thompson sampling step: P(best), floored probability-matching weights, sticky convergence."""
    keys, n, s, ss = _arrays(arms)
    probs = p_best_arrays(
        n, s, ss, settings.reward_type, settings.goal, max(settings.draws, MIN_DRAWS), rng
    )
    burn_in = bool(in_burn_in(n, settings.burn_in_units))
    k = len(keys)
    # Equal weights during burn-in: a handful of units per arm says little, and reweighting on
    # it would starve arms before they are measured.
    weights = np.full(k, 1.0 / k) if burn_in else floored_weights(probs, settings.floor)
    top = keys[int(np.argmax(probs))]

    if previous is not None and previous.converged:
        # Convergence is an event, not a live flag: once declared it keeps its time and winner.
        converged, at, variant = True, previous.converged_at, previous.converged_variant
    elif not burn_in and bool(converged_now(probs, n, settings)):
        converged, at, variant = True, now_iso, top
    else:
        converged, at, variant = False, None, None

    return BanditState(
        weights={key: float(w) for key, w in zip(keys, weights, strict=True)},
        p_best={key: float(p) for key, p in zip(keys, probs, strict=True)},
        top_variant=top,
        converged=converged,
        converged_at=at,
        converged_variant=variant,
        burn_in=burn_in,
    )


def _arrays(
    arms: Mapping[str, ArmStats],
) -> tuple[list[str], NDArray[np.int64], FloatArray, FloatArray]:
    """Keys in mapping order and the arms' n, sum and sum_sq as arrays."""
    if not arms:
        raise ValueError("a bandit needs at least one arm")
    keys = list(arms)
    n = np.array([arms[key].n for key in keys], dtype=np.int64)
    s = np.array([arms[key].sum for key in keys], dtype=np.float64)
    ss = np.array([arms[key].sum_sq for key in keys], dtype=np.float64)
    return keys, n, s, ss
