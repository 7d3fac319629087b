"""Frequentist and Bayesian comparisons over sufficient statistics (README, "How it works, briefly"). Pure.

Two layers:

* array kernels (`arm_moments`, `welch_arrays`, `delta_relative_arrays`, `mixture_cs_arrays`,
  `chance_to_beat_arrays`, `risk_arrays`, `srm_chi2`) work elementwise on numpy arrays so simulations can
  check the very code the server runs over thousands of experiments at once; they mark undefined
  entries with NaN and never warn;
* scalar wrappers (`welch`, `delta_relative`, `mixture_cs`, `srm`, `holm`,
  `benjamini_hochberg`, `chance_to_beat`, `compare`, `compare_many`) take `ArmStats` and turn every undefined number into `None` with a reason, so their
  results are always JSON-safe (finite floats or None).

Conventions for degenerate data, applied everywhere:

* an arm with fewer than 2 units has no variance estimate: lifts are reported when both arms have
  units, but intervals and p-values are None;
* zero variance in both arms (se == 0) is a deterministic comparison: p = 1 and chance to beat
  0.5 when the means are equal, p = 0 and chance to beat 0 or 1 otherwise; intervals collapse to
  the point estimate;
* a control mean of 0 leaves the relative lift undefined (None).

Distribution functions come from `scipy.special` ufuncs (stdtr, stdtrit, ndtr, ndtri, chdtrc)
rather than `scipy.stats` objects: same maths, far less overhead per call, which matters when a
recompute tick compares many pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from litmus.core.models import ArmStats, Correction
from litmus.core.quantiles import QuantileEstimate

FloatArray = NDArray[np.float64]

ALPHA = 0.05
SRM_ALPHA = 0.001
# The normal-mixture boundary is tightest around this many units (both arms together).
CS_TUNING_N = 5000
# Variance below this fraction of sum_sq is float64 cancellation noise in sum_sq - sum²/n, not
# signal: an arm whose values are all 0.1 must have variance 0, not 1e-18.
_VAR_REL_TOL = 1e-10
# With se == 0, means this close (relative) are equal: sums of identical values round differently.
_MEAN_REL_TOL = 1e-9

REASON_EMPTY_ARM = "an arm has no units"
REASON_FEW_UNITS = "fewer than 2 units in an arm: variance undefined"
REASON_ZERO_CONTROL = "control mean is 0: relative lift undefined"
REASON_NO_UNITS = "no exposed units"
REASON_NOT_FINITE = "sums too large for float64: variance undefined"


def _f64(x: ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def _opt(x: float | FloatArray) -> float | None:
    """A Python float when finite, else None (JSON has no NaN/Infinity)."""
    f = float(x)
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------------------------------------
# Array kernels
# ---------------------------------------------------------------------------------------------


def arm_moments(n: ArrayLike, s: ArrayLike, ss: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Mean s/n and unbiased variance (ss − s²/n)/(n − 1) from sufficient statistics."""
    n_, s_, ss_ = _f64(n), _f64(s), _f64(ss)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mean = np.where(n_ > 0, s_ / n_, 0.0)
        var = np.where(n_ > 1, (ss_ - s_ * mean) / (n_ - 1.0), 0.0)
    noise = var * np.maximum(n_ - 1.0, 0.0) <= _VAR_REL_TOL * np.abs(ss_)
    # Overflowed sums leave the variance unknown (NaN -> None downstream), not zero: a zero
    # would read as a deterministic, hence "significant", difference.
    var = np.where(np.isfinite(var), np.where((var > 0.0) & ~noise, var, 0.0), np.nan)
    return mean, var


def variance(arm: ArmStats) -> float:
    """Unbiased sample variance (n − 1), cancellation noise snapped to 0; NaN on overflow."""
    return float(arm_moments(arm.n, arm.sum, arm.sum_sq)[1])


def _welch_df(a_c: FloatArray, a_t: FloatArray, k_c: FloatArray, k_t: FloatArray) -> FloatArray:
    """Welch–Satterthwaite df (a = s²/n per arm), scaled by the larger term so that squaring
    cannot overflow; se == 0 leaves it 0/0, where it cannot matter: the pooled df then."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        top = np.maximum(a_c, a_t)
        x, y = a_c / top, a_t / top
        den = x * x / (k_c - 1.0) + y * y / (k_t - 1.0)
        return np.asarray(np.where(top > 0.0, (x + y) ** 2 / den, k_c + k_t - 2.0),
                          dtype=np.float64)


@dataclass(frozen=True, slots=True)
class WelchArrays:
    """Elementwise Welch t results; NaN where an arm has fewer than 2 units."""

    abs_lift: FloatArray
    se: FloatArray
    df: FloatArray
    ci_lo: FloatArray
    ci_hi: FloatArray
    p_value: FloatArray


def welch_arrays(
    mean_c: ArrayLike,
    var_c: ArrayLike,
    n_c: ArrayLike,
    mean_t: ArrayLike,
    var_t: ArrayLike,
    n_t: ArrayLike,
    alpha: float = ALPHA,
) -> WelchArrays:
    """Welch t test with Welch–Satterthwaite df: lift m_t − m_c, two-sided CI and p-value."""
    m_c, v_c, k_c = _f64(mean_c), _f64(var_c), _f64(n_c)
    m_t, v_t, k_t = _f64(mean_t), _f64(var_t), _f64(n_t)
    ok = (k_c >= 2) & (k_t >= 2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a_c = np.where(ok, v_c / k_c, np.nan)
        a_t = np.where(ok, v_t / k_t, np.nan)
        se2 = a_c + a_t
        se = np.sqrt(se2)
        df = _welch_df(a_c, a_t, k_c, k_t)
        d = m_t - m_c
        # With se == 0 every unit of an arm has the same value, so means that differ by rounding
        # only are equal: snap the lift to exactly 0 so every later step sees a tie.
        tied = (se == 0.0) & (np.abs(d) <= _MEAN_REL_TOL * np.maximum(np.abs(m_c), np.abs(m_t)))
        d = np.where(tied, 0.0, d)
        half = np.asarray(special.stdtrit(df, 1.0 - alpha / 2.0), dtype=np.float64) * se
        t_abs = np.abs(d) / se
        p_pos = 2.0 * np.asarray(special.stdtr(df, -t_abs), dtype=np.float64)
        # se == 0 is the deterministic case; a NaN se (overflow) must stay NaN, not become it.
        p = np.where(se == 0.0, np.where(d == 0.0, 1.0, 0.0), np.minimum(p_pos, 1.0))
        half = np.where(se == 0.0, 0.0, half)
        lo, hi = d - half, d + half
    # Overflow anywhere (absurd sums) leaves the test undefined as a whole, never half-reported.
    ok = ok & np.isfinite(se) & np.isfinite(df) & np.isfinite(lo) & np.isfinite(hi)
    both = (k_c > 0) & (k_t > 0)
    return WelchArrays(
        abs_lift=np.where(both, d, np.nan),
        se=np.where(ok, se, np.nan),
        df=np.where(ok, df, np.nan),
        ci_lo=np.where(ok, lo, np.nan),
        ci_hi=np.where(ok, hi, np.nan),
        p_value=np.where(ok, p, np.nan),
    )


def delta_relative_arrays(
    mean_c: ArrayLike,
    var_c: ArrayLike,
    n_c: ArrayLike,
    mean_t: ArrayLike,
    var_t: ArrayLike,
    n_t: ArrayLike,
    alpha: float = ALPHA,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Delta method: rel = m_t/m_c − 1, Var = s_t²/(n_t·m_c²) + s_c²·m_t²/(n_c·m_c⁴); (rel, lo, hi).

    The interval is rel ± t_{1−α/2, ν}·√Var with ν the Welch–Satterthwaite df of the absolute
    difference (as gbstats' TwoSidedTTest with relative differences): with few units a normal
    quantile covers far less than 1 − α (0.91 on normal, 0.88 on lognormal data at 5 units per
    arm; t: 0.95 and 0.93, tests/unit/test_stats_simulation.py)."""
    rel, se, df = delta_relative_se_arrays(mean_c, var_c, n_c, mean_t, var_t, n_t)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        half = np.asarray(special.stdtrit(df, 1.0 - alpha / 2.0), dtype=np.float64) * se
        half = np.where(se == 0.0, 0.0, half)
        ok = np.isfinite(se) & np.isfinite(half)
        lo = np.where(ok, rel - half, np.nan)
        hi = np.where(ok, rel + half, np.nan)
    return rel, lo, hi


def delta_relative_se_arrays(
    mean_c: ArrayLike,
    var_c: ArrayLike,
    n_c: ArrayLike,
    mean_t: ArrayLike,
    var_t: ArrayLike,
    n_t: ArrayLike,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(rel, se, df): rel = m_t/m_c − 1 (NaN when undefined), its delta-method se
    √(s_t²/(n_t·m_c²) + s_c²·m_t²/(n_c·m_c⁴)) and the Welch df of the absolute difference
    (se and df NaN with fewer than 2 units in an arm)."""
    m_c, v_c, k_c = _f64(mean_c), _f64(var_c), _f64(n_c)
    m_t, v_t, k_t = _f64(mean_t), _f64(var_t), _f64(n_t)
    defined = (k_c > 0) & (k_t > 0) & (m_c != 0.0)
    ok = defined & (k_c >= 2) & (k_t >= 2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        var = v_t / (k_t * m_c**2) + v_c * m_t**2 / (k_c * m_c**4)
        # Same rounding tie as in welch_arrays: zero variance and equal means is a lift of 0.
        tied = (var == 0.0) & (np.abs(m_t - m_c) <= _MEAN_REL_TOL * np.abs(m_c))
        rel = np.where(defined, np.where(tied, 0.0, m_t / m_c - 1.0), np.nan)
        df = _welch_df(np.where(ok, v_c / k_c, np.nan), np.where(ok, v_t / k_t, np.nan), k_c, k_t)
        se = np.where(ok, np.sqrt(var), np.nan)
    return rel, se, np.where(ok & np.isfinite(df), df, np.nan)


def mixture_rho2(alpha: float = ALPHA, tuning_n: float = CS_TUNING_N) -> float:
    """Normal-mixture ρ² = (−2 ln α + ln(1 − 2 ln α)) / n*, tightest near n* units."""
    la = math.log(alpha)
    return (-2.0 * la + math.log(1.0 - 2.0 * la)) / tuning_n


def mixture_cs_arrays(
    abs_lift: ArrayLike, se: ArrayLike, n: ArrayLike, alpha: float = ALPHA
) -> tuple[FloatArray, FloatArray]:
    """Normal-mixture confidence sequence: half-width se·√((1+r)/r·ln((1+r)/α²)) and anytime p."""
    d, s, k = _f64(abs_lift), _f64(se), _f64(n)
    r = k * mixture_rho2(alpha)
    ok = (r > 0.0) & np.isfinite(s) & np.isfinite(d)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        half = s * np.sqrt((1.0 + r) / r * np.log((1.0 + r) / alpha**2))
        # se == 0: z is 0 for equal means (p = 1) and infinite otherwise (p = 0), as in Welch.
        z2 = np.where(s > 0.0, (d / s) ** 2, np.where(d == 0.0, 0.0, np.inf))
        p = np.minimum(1.0, np.sqrt(1.0 + r) * np.exp(-r / (1.0 + r) * z2 / 2.0))
    return np.where(ok, np.where(s > 0.0, half, 0.0), np.nan), np.where(ok, p, np.nan)


def chance_to_beat_arrays(
    abs_lift: ArrayLike, se: ArrayLike, minimize: bool = False
) -> FloatArray:
    """Chance to beat control under a flat prior: Φ(abs_lift/se), mirrored when minimising."""
    d, s = _f64(abs_lift), _f64(se)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = np.where(s > 0.0, d / s, np.sign(d) * np.inf)
        p = np.asarray(special.ndtr(z), dtype=np.float64)
        p = np.where((s == 0.0) & (d == 0.0), 0.5, p)
    p = 1.0 - p if minimize else p
    return np.where(np.isfinite(d) & np.isfinite(s), p, np.nan)


def risk_arrays(
    lift: ArrayLike, se: ArrayLike, minimize: bool = False
) -> tuple[FloatArray, FloatArray]:
    """Expected loss of choosing control and of choosing the treatment (flat prior, the lift
    ~ N(lift, se²)), as gbstats' `get_risk`: with d the lift in the good direction,
    risk_control = E[max(d, 0)] = μΦ(μ/σ) + σφ(μ/σ) and risk_treatment = E[max(−d, 0)]
    = −μΦ(−μ/σ) + σφ(μ/σ). In the lift's units (gbstats' default: the relative lift)."""
    d, s = _f64(lift), _f64(se)
    d = -d if minimize else d
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = np.where(s > 0.0, d / s, 0.0)
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        r_c = np.where(s > 0.0, d * special.ndtr(z) + s * pdf, np.maximum(d, 0.0))
        r_t = np.where(s > 0.0, -d * special.ndtr(-z) + s * pdf, np.maximum(-d, 0.0))
    ok = np.isfinite(d) & np.isfinite(s)
    # Far in a tail the closed form is a difference of nearly equal numbers: never below 0.
    return (np.where(ok, np.maximum(r_c, 0.0), np.nan),
            np.where(ok, np.maximum(r_t, 0.0), np.nan))


def srm_chi2(observed: ArrayLike, weights: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Pearson chi-square of counts (last axis) against weights, k − 1 df: (statistic, p)."""
    o = _f64(observed)
    w = _f64(weights)
    w = w / w.sum()
    total = o.sum(axis=-1, keepdims=True)
    e = total * w
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # A zero-weight arm contributes nothing while empty and is an infinite mismatch otherwise.
        terms = np.where(e > 0.0, (o - e) ** 2 / e, np.where(o > 0.0, np.inf, 0.0))
    stat = terms.sum(axis=-1)
    dof = max(int(np.count_nonzero(w > 0.0)) - 1, 1)
    p = np.asarray(special.chdtrc(dof, stat), dtype=np.float64)
    empty = total[..., 0] <= 0.0
    return np.where(empty, np.nan, stat), np.where(empty, np.nan, p)


# ---------------------------------------------------------------------------------------------
# Scalar wrappers: ArmStats in, finite floats or None out
# ---------------------------------------------------------------------------------------------


Interval = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Welch:
    """Welch t result for one treatment against control."""

    abs_lift: float | None
    se: float | None
    df: float | None
    ci: Interval | None
    p_value: float | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Relative:
    """Relative lift and its delta-method interval."""

    rel_lift: float | None
    ci: Interval | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Anytime:
    """Anytime-valid interval and p-value; `p_value` is already the running minimum."""

    ci: Interval | None
    p_value: float | None
    p_value_now: float | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Srm:
    """Sample-ratio-mismatch test."""

    p_value: float | None
    flagged: bool
    chi2: float | None = None
    reason: str | None = None


def _interval(lo: float, hi: float) -> Interval | None:
    a, b = _opt(lo), _opt(hi)
    return (a, b) if a is not None and b is not None else None


def _few_units_reason(control: ArmStats, treatment: ArmStats) -> str | None:
    if control.n == 0 or treatment.n == 0:
        return REASON_EMPTY_ARM
    if control.n < 2 or treatment.n < 2:
        return REASON_FEW_UNITS
    return None


def _welch_at(w: WelchArrays, i: int | tuple[()], reason: str | None) -> Welch:
    p = _opt(w.p_value[i])
    return Welch(
        abs_lift=_opt(w.abs_lift[i]),
        se=_opt(w.se[i]),
        df=_opt(w.df[i]),
        ci=_interval(float(w.ci_lo[i]), float(w.ci_hi[i])),
        p_value=p,
        reason=reason or (REASON_NOT_FINITE if p is None else None),
    )


def welch(control: ArmStats, treatment: ArmStats, alpha: float = ALPHA) -> Welch:
    """Welch t test (Welch–Satterthwaite df): lift m_t − m_c, two-sided CI and p-value."""
    m_c, v_c = arm_moments(control.n, control.sum, control.sum_sq)
    m_t, v_t = arm_moments(treatment.n, treatment.sum, treatment.sum_sq)
    w = welch_arrays(m_c, v_c, control.n, m_t, v_t, treatment.n, alpha)
    return _welch_at(w, (), _few_units_reason(control, treatment))


def _relative_at(
    rel: FloatArray, lo: FloatArray, hi: FloatArray, i: int | tuple[()], reason: str | None
) -> Relative:
    ci = _interval(float(lo[i]), float(hi[i]))
    return Relative(_opt(rel[i]), ci, reason or (REASON_NOT_FINITE if ci is None else None))


def delta_relative(control: ArmStats, treatment: ArmStats, alpha: float = ALPHA) -> Relative:
    """Delta method: rel = m_t/m_c − 1, Var = s_t²/(n_t·m_c²) + s_c²·m_t²/(n_c·m_c⁴)."""
    m_c, v_c = arm_moments(control.n, control.sum, control.sum_sq)
    m_t, v_t = arm_moments(treatment.n, treatment.sum, treatment.sum_sq)
    rel, lo, hi = delta_relative_arrays(m_c, v_c, control.n, m_t, v_t, treatment.n, alpha)
    return _relative_at(rel, lo, hi, (), _rel_reason(control, treatment, float(m_c)))


def running_min(p: float | None, prev: float | None) -> float | None:
    """Running minimum of the anytime p-value: the smallest value seen so far stays valid."""
    if p is None:
        return prev
    return p if prev is None else min(p, prev)


def mixture_cs(
    abs_lift: float | None,
    se: float | None,
    n: int,
    prev_p: float | None = None,
    alpha: float = ALPHA,
) -> Anytime:
    """Normal-mixture confidence sequence (r = n·ρ²) and running-minimum anytime p-value."""
    if abs_lift is None or se is None or n <= 0:
        return Anytime(None, prev_p, None, "lift or its standard error is undefined")
    half, p = mixture_cs_arrays(abs_lift, se, n, alpha)
    h = _opt(half)
    p_now = _opt(p)
    ci = (abs_lift - h, abs_lift + h) if h is not None else None
    return Anytime(ci, running_min(p_now, prev_p), p_now)


def chance_to_beat(
    abs_lift: float | None, se: float | None, minimize: bool = False
) -> float | None:
    """Chance to beat control, flat prior: Φ(abs_lift/se), mirrored (1 − ·) when minimising."""
    if abs_lift is None or se is None:
        return None
    return _opt(chance_to_beat_arrays(abs_lift, se, minimize))


def srm(units: Sequence[int], weights: Sequence[float], threshold: float = SRM_ALPHA) -> Srm:
    """Sample ratio mismatch: chi-square goodness of fit of units to weights, flagged p < 0.001."""
    if len(units) != len(weights) or len(units) < 2:
        return Srm(None, False, None, "need units and weights for at least 2 variants")
    if sum(units) <= 0:
        return Srm(None, False, None, REASON_NO_UNITS)
    if not all(math.isfinite(w) and w >= 0.0 for w in weights) or sum(weights) <= 0.0:
        return Srm(None, False, None, "weights must be non-negative and sum to more than 0")
    stat, p_arr = srm_chi2(units, weights)
    p = _opt(p_arr)
    return Srm(p, p is not None and p < threshold, _opt(stat))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjustment: p_(i)·(m − i + 1), made monotone and capped at 1."""
    # Undefined p-values are not tests yet: they neither count in m nor get a value.
    idx = [i for i, p in enumerate(p_values) if p is not None]
    ps = [float(p) for p in p_values if p is not None]
    m = len(ps)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, j in enumerate(sorted(range(m), key=lambda j: ps[j])):
        running = max(running, min(1.0, (m - rank) * ps[j]))
        out[idx[j]] = running
    return out


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini–Hochberg step-up adjustment: p_(i)·m/i, made monotone from the top, capped at
    1 (statsmodels' `fdr_bh`); controls the false discovery rate among the m defined tests."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    ps = [float(p) for p in p_values if p is not None]
    m = len(ps)
    out: list[float | None] = [None] * len(p_values)
    running = 1.0
    order = sorted(range(m), key=lambda j: ps[j])
    for rank in range(m - 1, -1, -1):
        j = order[rank]
        running = min(running, ps[j] * m / (rank + 1))
        out[idx[j]] = running
    return out


def adjust(p_values: Sequence[float | None], method: Correction = "holm") -> list[float | None]:
    """Multiple-comparison adjusted p-values: Holm (family-wise error) or Benjamini–Hochberg
    (false discovery rate); undefined p-values stay None and do not count."""
    if method == "bh":
        return benjamini_hochberg(p_values)
    return holm(p_values)


def running_interval(now: Interval | None, prev: Interval | None) -> Interval | None:
    """The running intersection of a confidence sequence's intervals: the interval shown never
    widens. Intervals that no longer meet (which happens with probability at most α while the
    sequence covers) collapse to the previous interval's end nearest the new one, so the
    result is still inside every earlier one."""
    if now is None:
        return prev
    if prev is None:
        return now
    lo, hi = max(now[0], prev[0]), min(now[1], prev[1])
    if lo <= hi:
        return (lo, hi)
    end = prev[1] if now[0] > prev[1] else prev[0]
    return (end, end)


def excludes_zero(ci: Interval | None) -> bool:
    """The interval lies wholly on one side of 0."""
    return ci is not None and (ci[0] > 0.0 or ci[1] < 0.0)


def is_significant(
    p_value_holm: float | None,
    anytime_p_value_holm: float | None,
    analysis_mode: Literal["sequential", "fixed"],
    alpha: float = ALPHA,
) -> bool:
    """Significant: Holm-adjusted anytime p < α (sequential) or Holm-adjusted Welch p < α (fixed)."""
    p = anytime_p_value_holm if analysis_mode == "sequential" else p_value_holm
    return p is not None and p < alpha


@dataclass(frozen=True, slots=True)
class Comparison:
    """Every per-pair number of one lift row, before the Holm step across treatments."""

    control_mean: float
    treatment_mean: float
    welch: Welch
    relative: Relative
    anytime: Anytime
    chance_to_beat: float | None
    # Expected relative loss of choosing control / the treatment (gbstats' `get_risk`).
    risk_control: float | None = None
    risk_treatment: float | None = None

    @property
    def reason(self) -> str | None:
        """Why some numbers are None, if they are."""
        return self.welch.reason or self.relative.reason


def _rel_reason(control: ArmStats, treatment: ArmStats, control_mean: float) -> str | None:
    reason = _few_units_reason(control, treatment)
    if reason != REASON_EMPTY_ARM and control_mean == 0.0:
        return REASON_ZERO_CONTROL
    return reason


def compare_many(
    control: ArmStats,
    treatments: Sequence[ArmStats],
    *,
    prev_anytime_p: Sequence[float | None] | None = None,
    minimize: bool = False,
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Welch, delta method, normal-mixture sequence and chance to beat: control vs each treatment."""
    if not treatments:
        return []
    prev = list(prev_anytime_p) if prev_anytime_p is not None else [None] * len(treatments)
    # One vectorised pass per metric instead of one per pair: numpy's per-call overhead, not the
    # arithmetic, is what a recompute tick over many experiments would otherwise pay for.
    n_t = _f64([t.n for t in treatments])
    m_c, v_c = arm_moments(control.n, control.sum, control.sum_sq)
    m_t, v_t = arm_moments(n_t, [t.sum for t in treatments], [t.sum_sq for t in treatments])
    w = welch_arrays(m_c, v_c, control.n, m_t, v_t, n_t, alpha)
    rel, rel_lo, rel_hi = delta_relative_arrays(m_c, v_c, control.n, m_t, v_t, n_t, alpha)
    _, rel_se, _ = delta_relative_se_arrays(m_c, v_c, control.n, m_t, v_t, n_t)
    half, p_any = mixture_cs_arrays(w.abs_lift, w.se, control.n + n_t, alpha)
    ctb = chance_to_beat_arrays(w.abs_lift, w.se, minimize)
    risk_c, risk_t = risk_arrays(rel, rel_se, minimize)

    out: list[Comparison] = []
    for i, t in enumerate(treatments):
        reason = _few_units_reason(control, t)
        d, h = _opt(w.abs_lift[i]), _opt(half[i])
        welch_i = _welch_at(w, i, reason)
        if d is not None and h is not None:
            p_now = _opt(p_any[i])
            anytime = Anytime((d - h, d + h), running_min(p_now, prev[i]), p_now)
        else:
            anytime = Anytime(None, prev[i], None, welch_i.reason or REASON_NOT_FINITE)
        out.append(Comparison(
            control_mean=float(control.mean),
            treatment_mean=float(t.mean),
            welch=welch_i,
            relative=_relative_at(rel, rel_lo, rel_hi, i, _rel_reason(control, t, float(m_c))),
            anytime=anytime,
            chance_to_beat=None if d is None else _opt(ctb[i]),
            risk_control=_opt(risk_c[i]),
            risk_treatment=_opt(risk_t[i]),
        ))
    return out


def compare(
    control: ArmStats,
    treatment: ArmStats,
    *,
    prev_anytime_p: float | None = None,
    minimize: bool = False,
    alpha: float = ALPHA,
) -> Comparison:
    """Welch, delta method, normal-mixture sequence and chance to beat for one unit-level pair."""
    return compare_many(
        control, [treatment], prev_anytime_p=[prev_anytime_p], minimize=minimize, alpha=alpha
    )[0]


REASON_FEW_EVENTS = "fewer than 2 events in an arm: the quantile's error is undefined"


def compare_quantiles(
    control: QuantileEstimate,
    treatments: Sequence[QuantileEstimate],
    *,
    prev_anytime_p: Sequence[float | None] | None = None,
    minimize: bool = False,
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Quantiles of event values, control vs each treatment: a z-test on q_t − q_c with the
    order-statistic se of each arm summed in variance (Welch-like), the relative lift by the
    delta method Var = se_t²/q_c² + q_t²·se_c²/q_c⁴, and the normal-mixture sequence with n the
    events of both arms."""
    prev = list(prev_anytime_p) if prev_anytime_p is not None else [None] * len(treatments)
    z = float(special.ndtri(1.0 - alpha / 2.0))
    out: list[Comparison] = []
    for i, t in enumerate(treatments):
        qc, qt = control.value, t.value
        reason = None
        if qc is None or qt is None:
            reason = REASON_EMPTY_ARM
        elif control.n < 2 or t.n < 2 or control.se is None or t.se is None:
            reason = REASON_FEW_EVENTS
        if qc is None or qt is None:
            out.append(_undefined(prev[i], reason))
            continue
        d = qt - qc
        if reason is not None:
            rel = qt / qc - 1.0 if qc != 0.0 else None
            out.append(Comparison(
                control_mean=qc, treatment_mean=qt,
                welch=Welch(d, None, None, None, None, reason),
                relative=Relative(rel, None, reason if rel is not None else REASON_ZERO_CONTROL),
                anytime=Anytime(None, prev[i], None, reason), chance_to_beat=None))
            continue
        assert control.se is not None and t.se is not None
        se = math.sqrt(control.se ** 2 + t.se ** 2)
        if se == 0.0:
            p = 1.0 if d == 0.0 else 0.0
            ci: Interval | None = (d, d)
        else:
            p = float(2.0 * special.ndtr(-abs(d) / se))
            ci = (d - z * se, d + z * se)
        if qc != 0.0:
            rel = qt / qc - 1.0
            rel_se = math.sqrt(t.se ** 2 / qc ** 2 + qt ** 2 * control.se ** 2 / qc ** 4)
            relative = Relative(rel, (rel - z * rel_se, rel + z * rel_se))
            r_c, r_t = risk_arrays(rel, rel_se, minimize)
            risk: tuple[float | None, float | None] = (_opt(r_c), _opt(r_t))
        else:
            relative = Relative(None, None, REASON_ZERO_CONTROL)
            risk = (None, None)
        half, p_any = mixture_cs_arrays(d, se, control.n + t.n, alpha)
        h, p_now = _opt(half), _opt(p_any)
        anytime = (Anytime((d - h, d + h), running_min(p_now, prev[i]), p_now)
                   if h is not None else Anytime(None, prev[i], None, REASON_NOT_FINITE))
        out.append(Comparison(
            control_mean=qc, treatment_mean=qt,
            welch=Welch(d, se, None, ci, p),
            relative=relative,
            anytime=anytime,
            chance_to_beat=_opt(chance_to_beat_arrays(d, se, minimize)),
            risk_control=risk[0],
            risk_treatment=risk[1],
        ))
    return out


def _undefined(prev: float | None, reason: str | None) -> Comparison:
    return Comparison(
        control_mean=math.nan, treatment_mean=math.nan,
        welch=Welch(None, None, None, None, None, reason), relative=Relative(None, None, reason),
        anytime=Anytime(None, prev, None, reason), chance_to_beat=None)


REASON_FEW_SEGMENTS = "fewer than 2 segments with an estimate: nothing to compare"


@dataclass(frozen=True, slots=True)
class Heterogeneity:
    """Cochran's Q test that one effect holds in every segment (docs/STATISTICS.md)."""

    segments: int
    q: float | None
    df: int | None
    p_value: float | None
    i2: float | None  # share of the spread beyond chance, (Q − df) / Q floored at 0
    pooled: float | None  # the inverse-variance weighted mean effect
    reason: str | None = None


def cochran_q(estimates: Sequence[float | None], ses: Sequence[float | None]) -> Heterogeneity:
    """Cochran's Q over per-segment effects with their standard errors: Q = Σ w (e − ē)², w =
    1/se², ē the w-weighted mean, against chi-square with k − 1 df. Segments whose estimate or
    se is missing, not finite or se ≤ 0 are left out."""
    pairs = [(float(e), float(s)) for e, s in zip(estimates, ses, strict=True)
             if e is not None and s is not None and math.isfinite(e) and math.isfinite(s) and s > 0]
    k = len(pairs)
    if k < 2:
        return Heterogeneity(k, None, None, None, None, None, REASON_FEW_SEGMENTS)
    e = np.array([p[0] for p in pairs])
    w = 1.0 / np.array([p[1] for p in pairs]) ** 2
    pooled = float((w * e).sum() / w.sum())
    q = float((w * (e - pooled) ** 2).sum())
    df = k - 1
    p = float(special.chdtrc(df, q))
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    return Heterogeneity(k, q, df, p, i2, pooled)
