"""Thompson-sampling bandit over models: posteriors, P(best), floored weights, convergence.

Pure: numpy only, randomness from a `numpy.random.Generator` the caller passes in, the time
from the caller too. The array functions take sufficient statistics shaped `(..., k)` (k arms,
any leading batch axes) so the offline simulation can run many seeds at once through the same
code the server runs; `update` is the one entry point the recompute loop calls.

With constraints (a bandit objective: maximise quality subject to cost and latency bounds), each
Monte Carlo draw also samples every variant's constrained statistics from Normal(value, se); the
draw's winner is the best sampled objective among the variants whose samples meet every bound,
or, when none does, the variant with the smallest total violation (each scaled by its bound).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from litmus.core.models import ArmStats, BanditSettings, Constraint, Goal, RewardType
from litmus.core.snapshot import MetricAgg, unit_arm

__all__ = [
    "MIN_DRAWS",
    "BanditState",
    "ConstraintStat",
    "constrained_p_best_arrays",
    "constraint_arrays",
    "converged_now",
    "floored_weights",
    "in_burn_in",
    "p_best",
    "p_best_arrays",
    "posterior_draws",
    "reward_arms",
    "update",
    "update_seed",
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
    #: Per variant and constrained metric, the share of draws whose sampled statistic met the
    #: bound(s); empty without constraints.
    p_feasible: dict[str, dict[str, float]] = field(default_factory=dict)


#: One constraint as `update` takes it: the bound, and per variant the statistic's current value
#: and standard error (None, NaN or a missing variant: no data yet).
ConstraintStat = tuple[Constraint, Mapping[str, tuple[float | None, float | None]]]


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
    best = samples.argmin(axis=-1) if goal == "minimize" else samples.argmax(axis=-1)
    return _win_shares(best, samples.shape[-1])


def constrained_p_best_arrays(
    n: ArrayLike,
    total: ArrayLike,
    total_sq: ArrayLike,
    reward_type: RewardType,
    goal: Goal,
    cons_value: ArrayLike,
    cons_se: ArrayLike,
    cons_max: ArrayLike,
    cons_min: ArrayLike,
    draws: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    """Constrained Thompson sampling by Monte Carlo: P(best) (..., k) and P(feasible) (..., c, k).

    `cons_value`/`cons_se` (..., c, k): each constraint's statistic per arm and its standard
    error, sampled as Normal(value, se); a non-finite value or se (no data yet) is sampled as
    Normal(bound, |bound|), an even chance either side of the bound. `cons_max`/`cons_min`
    (..., c): the bounds, NaN or ±inf where a side has none. A draw's winner is the best sampled
    objective among the arms meeting every bound; when none does, among those with the smallest
    total violation (each side's excess divided by |bound|), so ties go to the better objective.
    With c = 0 this is `p_best_arrays`, draw for draw."""
    if draws < 1:
        raise ValueError("draws must be positive")
    samples = posterior_draws(n, total, total_sq, reward_type, draws, rng)
    k = samples.shape[-1]
    value = np.asarray(cons_value, dtype=np.float64)
    se = np.asarray(cons_se, dtype=np.float64)
    if value.ndim < 2 or value.shape[-1] != k or se.shape != value.shape:
        raise ValueError("cons_value and cons_se must both have shape (..., c, k)")
    c = value.shape[-2]
    if c == 0:
        best = samples.argmin(axis=-1) if goal == "minimize" else samples.argmax(axis=-1)
        return _win_shares(best, k), np.zeros(value.shape, dtype=np.float64)

    hi = np.asarray(cons_max, dtype=np.float64)
    lo = np.asarray(cons_min, dtype=np.float64)
    hi = np.where(np.isnan(hi), np.inf, hi)
    lo = np.where(np.isnan(lo), -np.inf, lo)
    if not np.all(np.isfinite(hi) | np.isfinite(lo)):
        raise ValueError("every constraint needs a max or a min")
    bound = np.where(np.isfinite(hi), hi, lo)
    unknown = ~(np.isfinite(value) & np.isfinite(se) & (se >= 0))
    value = np.where(unknown, bound[..., None], value)
    se = np.where(unknown, np.maximum(np.abs(bound), 1e-12)[..., None], se)

    # The statistics' standard normals, (..., draws, c, k) in C order, are drawn a block at a
    # time (whole batch rows, or runs of draws of one row): the same numbers as one call, in
    # memory bounded by _CHUNK whatever the draws, arms and constraints.
    batch = value.shape[:-2]
    rows = int(np.prod(batch, dtype=np.int64))
    value_f, se_f = value.reshape(rows, c, k), se.reshape(rows, c, k)
    hi_f = np.broadcast_to(hi, (*batch, c)).reshape(rows, c)
    lo_f = np.broadcast_to(lo, (*batch, c)).reshape(rows, c)
    obj = samples.reshape(rows, draws, k)
    best = np.empty((rows, draws), dtype=np.intp)
    met = np.zeros((rows, c, k), dtype=np.int64)
    per_row = draws * c * k
    if per_row <= _CHUNK:
        step = max(1, _CHUNK // per_row)
        blocks = [(r, min(r + step, rows), 0, draws) for r in range(0, rows, step)]
    else:
        step = max(1, _CHUNK // (c * k))
        blocks = [(r, r + 1, m, min(m + step, draws))
                  for r in range(rows) for m in range(0, draws, step)]
    for r0, r1, m0, m1 in blocks:
        noise = rng.standard_normal((r1 - r0, m1 - m0, c, k))
        best[r0:r1, m0:m1], block_met = _constrained_winners(
            obj[r0:r1, m0:m1], value_f[r0:r1], se_f[r0:r1], hi_f[r0:r1], lo_f[r0:r1], noise,
            goal)
        met[r0:r1] += block_met
    return (_win_shares(best.reshape(*batch, draws), k),
            np.asarray((met / draws).reshape(*batch, c, k), dtype=np.float64))


#: Elements of the statistics' draws held at once (8 MB per float64 array).
_CHUNK = 1 << 20


def _constrained_winners(
    obj: FloatArray,
    value: FloatArray,
    se: FloatArray,
    hi: FloatArray,
    lo: FloatArray,
    noise: FloatArray,
    goal: Goal,
) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
    """One block's winners (r, m) and bounds met (r, c, k): objective draws (r, m, k), stats
    (r, c, k), bounds (r, c) with ±inf for no side, standard normals (r, m, c, k)."""
    stat = value[:, None] + se[:, None] * noise
    hi_, lo_ = hi[:, None, :, None], lo[:, None, :, None]
    meets = stat <= hi_
    if np.isfinite(lo).any():
        meets &= stat >= lo_
    candidate: BoolArray = np.asarray(meets.all(axis=-2), dtype=np.bool_)
    # A draw where no arm meets every bound goes to the least total violation (its ties too);
    # such draws are usually few, so the violations are computed for them alone.
    none = ~candidate.any(axis=-1)
    if none.any():
        where = np.nonzero(none)
        sub = stat[where]
        hi_s, lo_s = hi[where[0]][..., None], lo[where[0]][..., None]
        over = np.where(np.isfinite(hi_s), np.maximum(sub - hi_s, 0.0)
                        / np.maximum(np.abs(hi_s), 1e-12), 0.0)
        under = np.where(np.isfinite(lo_s), np.maximum(lo_s - sub, 0.0)
                         / np.maximum(np.abs(lo_s), 1e-12), 0.0)
        violation = (over + under).sum(axis=-2)
        candidate[where] = violation <= violation.min(axis=-1, keepdims=True)
    if goal == "minimize":
        best = np.where(candidate, obj, np.inf).argmin(axis=-1)
    else:
        best = np.where(candidate, obj, -np.inf).argmax(axis=-1)
    return best, np.asarray(meets.sum(axis=1), dtype=np.int64)


def _win_shares(best: NDArray[np.intp], k: int) -> FloatArray:
    """Share of draws each arm won, (..., k), from the winners' indices (..., draws)."""
    draws = best.shape[-1]
    # One bincount over (batch row, arm) pairs: far cheaper than a one-hot of draws x arms.
    rows = best.reshape(-1, draws)
    flat = (rows + k * np.arange(rows.shape[0])[:, None]).ravel()
    counts = np.bincount(flat, minlength=rows.shape[0] * k).reshape(*best.shape[:-1], k)
    return np.asarray(counts / draws, dtype=np.float64)


def constraint_arrays(
    keys: Sequence[str], constraints: Sequence[ConstraintStat]
) -> tuple[list[str], FloatArray, FloatArray, FloatArray, FloatArray]:
    """Constraints as `constrained_p_best_arrays` reads them: (metrics, value (c, k), se (c, k),
    max (c,), min (c,)), one row per metric (a `max` and a `min` on one metric share a row, the
    tighter of each side kept); a value or se that is None or missing becomes NaN (no data)."""
    rows: dict[str, list[float]] = {}
    stats: dict[str, Mapping[str, tuple[float | None, float | None]]] = {}
    for con, per_variant in constraints:
        if con.max is None and con.min is None:
            raise ValueError(f"constraint on {con.metric!r} has neither max nor min")
        hi, lo = rows.setdefault(con.metric, [math.inf, -math.inf])
        rows[con.metric] = [min(hi, con.max) if con.max is not None else hi,
                            max(lo, con.min) if con.min is not None else lo]
        stats.setdefault(con.metric, per_variant)
    metrics = list(rows)
    value = np.full((len(metrics), len(keys)), np.nan)
    se = np.full((len(metrics), len(keys)), np.nan)
    for i, metric in enumerate(metrics):
        for j, key in enumerate(keys):
            v, e = stats[metric].get(key, (None, None))
            value[i, j] = np.nan if v is None else v
            se[i, j] = np.nan if e is None else e
    bounds = np.array([rows[m] for m in metrics], dtype=np.float64).reshape(len(metrics), 2)
    return metrics, value, se, bounds[:, 0].copy(), bounds[:, 1].copy()


def p_best(
    arms: Mapping[str, ArmStats], settings: BanditSettings, rng: np.random.Generator
) -> dict[str, float]:
    """Thompson sampling P(best) per arm by Monte Carlo with max(settings.draws, MIN_DRAWS) draws."""
    keys, n, s, ss = _arrays(arms)
    probs = p_best_arrays(
        n, s, ss, settings.reward_type, settings.goal, max(settings.draws, MIN_DRAWS), rng
    )
    return {key: float(p) for key, p in zip(keys, probs, strict=True)}


def reward_arms(
    settings: BanditSettings,
    exposed: Mapping[str, int],
    reward: Mapping[str, MetricAgg],
    successes: Mapping[str, int],
) -> dict[str, ArmStats]:
    """The arms the posterior reads, over every exposed unit: for binary rewards (n, successes)
    with `successes` the units whose reward total is above 0; else unit-level sums (`unit_arm`)."""
    if settings.reward_type == "binary":
        # A success is a unit whose rewards add up to more than 0, not a unit with a reward
        # event: with a 0 sent for every failure, every unit has one. Repeat conversions of one
        # unit are one success too.
        out = {}
        for key, units in exposed.items():
            wins = float(min(max(successes.get(key, 0), 0), max(units, 0)))
            out[key] = ArmStats(max(units, 0), wins, wins)
        return out
    return {key: unit_arm(reward.get(key), units) for key, units in exposed.items()}


def update_seed(salt: str, update: int) -> list[int]:
    """Seed of an experiment's `update`-th bandit update (0 for the first): its hashing salt
    and the update number, nothing else, so the same events give the same weights."""
    digest = hashlib.blake2b(salt.encode("utf-8"), digest_size=8).digest()
    return [int.from_bytes(digest, "big"), update]


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
    constraints: Sequence[ConstraintStat] = (),
) -> BanditState:
    """Thompson sampling step: P(best) (constrained when given), floored weights, sticky convergence.

    `constraints`: per constraint, each variant's (value, se) of the constrained statistic;
    without any, the draws and the answer are those of plain Thompson sampling."""
    keys, n, s, ss = _arrays(arms)
    draws = max(settings.draws, MIN_DRAWS)
    p_feasible: dict[str, dict[str, float]] = {}
    if constraints:
        metrics, value, se, hi, lo = constraint_arrays(keys, constraints)
        probs, feas = constrained_p_best_arrays(
            n, s, ss, settings.reward_type, settings.goal, value, se, hi, lo, draws, rng
        )
        p_feasible = {
            key: {m: float(feas[i, j]) for i, m in enumerate(metrics)}
            for j, key in enumerate(keys)
        }
    else:
        probs = p_best_arrays(n, s, ss, settings.reward_type, settings.goal, draws, rng)
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
        p_feasible=p_feasible,
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
