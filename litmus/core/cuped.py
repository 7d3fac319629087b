"""CUPED: the regression-adjusted comparison of a metric, with θ pooled over both arms. Pure.

Per arm the fold keeps `CupedSums` over the arm's exposed units: n, Σx, Σx², Σy, Σy², Σxy with
x the unit's covariate (a pre-experiment value) and y its metric total. As gbstats'
`RegressionAdjustedStatistic` (gbstats.models.statistics):

* θ = cov(x, y) / var(x), both over the pooled units of control and treatment (n − 1
  denominators); θ = 0, the plain comparison, when either pooled variance is 0;
* per arm the adjusted mean ȳ − θ·x̄ and variance var(y) + θ²·var(x) − 2θ·cov(x, y);
* the absolute lift is the difference of adjusted means, tested by Welch's t with the adjusted
  variances (`stats.welch_arrays`); the relative lift divides it by control's plain mean ȳ_c,
  with the delta-method variance v_t/(n_t·ȳ_c²) + v_c·ȳ_t²/(n_c·ȳ_c⁴) over the adjusted
  variances and the plain means, and a Student t interval with the Welch df (as gbstats'
  TwoSidedTTest with relative differences);
* the anytime interval and p are the plain test's normal-mixture confidence sequence
  (`stats.mixture_cs_arrays`) fed the adjusted standard error.

The variance reduction is 1 − se²(adjusted) / se²(plain) of the absolute lift. The array kernel
`cuped_arrays` works elementwise so the simulations in tests/unit/test_cuped.py run the very
code the snapshot runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from litmus.core import stats
from litmus.core.stats import ALPHA, FloatArray, Interval

REASON_NO_COVARIATE_VARIANCE = "the covariate does not vary: θ = 0, the plain comparison"


@dataclass(frozen=True, slots=True)
class CupedSums:
    """One arm's sums over its exposed units: x the covariate, y the metric total."""

    n: int = 0
    x: float = 0.0
    x2: float = 0.0
    y: float = 0.0
    y2: float = 0.0
    xy: float = 0.0


@dataclass(frozen=True, slots=True)
class CupedArrays:
    """Elementwise regression-adjusted comparison; NaN where undefined."""

    theta: FloatArray
    mean_c: FloatArray
    mean_t: FloatArray
    var_c: FloatArray
    var_t: FloatArray
    welch: stats.WelchArrays
    rel_lift: FloatArray
    rel_lo: FloatArray
    rel_hi: FloatArray
    anytime_half: FloatArray
    anytime_p: FloatArray
    variance_reduction: FloatArray


def _f64(x: ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def _cov(n: FloatArray, a: FloatArray, b: FloatArray, ab: FloatArray) -> FloatArray:
    """Unbiased (n − 1) covariance from sums; 0 below 2 units."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(n > 1, (ab - a * b / np.where(n > 0, n, 1.0)) / (n - 1.0), 0.0)


def cuped_arrays(c: tuple[ArrayLike, ...], t: tuple[ArrayLike, ...],
                 alpha: float = ALPHA) -> CupedArrays:
    """The regression-adjusted comparison from each arm's sums (n, Σx, Σx², Σy, Σy², Σxy),
    given as arrays of any one shape: θ pooled over both arms (gbstats' compute_theta)."""
    n_c, x_c, x2_c, y_c, y2_c, xy_c = (_f64(a) for a in c)
    n_t, x_t, x2_t, y_t, y2_t, xy_t = (_f64(a) for a in t)
    n = n_c + n_t
    var_x = _cov(n, x_c + x_t, x_c + x_t, x2_c + x2_t)
    var_y = _cov(n, y_c + y_t, y_c + y_t, y2_c + y2_t)
    cov_xy = _cov(n, x_c + x_t, y_c + y_t, xy_c + xy_t)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        flat = ~((var_x > 0.0) & (var_y > 0.0))
        theta = np.where(flat, 0.0, cov_xy / np.where(flat, 1.0, var_x))

        def arm(k: FloatArray, sx: FloatArray, sx2: FloatArray, sy: FloatArray, sy2: FloatArray,
                sxy: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
            plain_mean, plain_var = stats.arm_moments(k, sy, sy2)
            tx = theta**2 * _cov(k, sx, sx, sx2)
            v = plain_var + tx - 2.0 * theta * _cov(k, sx, sy, sxy)
            # var(y − θx) ≥ 0: a value within rounding of the terms' size is 0; overflowed
            # sums leave it unknown (NaN), never a zero that would read as deterministic.
            adj = np.where(np.isfinite(v), np.where(v > 1e-12 * (plain_var + tx), v, 0.0), np.nan)
            mean = np.where(k > 0, (sy - theta * sx) / np.where(k > 0, k, 1.0), 0.0)
            return mean, adj, plain_mean, plain_var

        m_c, v_c, pm_c, pv_c = arm(n_c, x_c, x2_c, y_c, y2_c, xy_c)
        m_t, v_t, pm_t, pv_t = arm(n_t, x_t, x2_t, y_t, y2_t, xy_t)
    w = stats.welch_arrays(m_c, v_c, n_c, m_t, v_t, n_t, alpha)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        defined = np.isfinite(w.abs_lift) & (pm_c != 0.0)
        rel = np.where(defined, w.abs_lift / np.where(pm_c != 0.0, pm_c, 1.0), np.nan)
        rel_var = v_t / (n_t * pm_c**2) + v_c * pm_t**2 / (n_c * pm_c**4)
        q = np.asarray(special.stdtrit(w.df, 1.0 - alpha / 2.0), dtype=np.float64)
        half = np.where(rel_var == 0.0, 0.0, q * np.sqrt(rel_var))
        ok = defined & np.isfinite(w.se) & np.isfinite(half)
        plain_se2 = pv_c / n_c + pv_t / n_t
        reduction = np.where(plain_se2 > 0.0, 1.0 - w.se**2 / plain_se2, np.nan)
        # Both branches are computed: where not ok, rel ± half may be inf - inf (discarded).
        rel_lo = np.where(ok, rel - half, np.nan)
        rel_hi = np.where(ok, rel + half, np.nan)
    any_half, any_p = stats.mixture_cs_arrays(w.abs_lift, w.se, n, alpha)
    return CupedArrays(
        theta=theta, mean_c=m_c, mean_t=m_t, var_c=v_c, var_t=v_t, welch=w,
        rel_lift=rel, rel_lo=rel_lo, rel_hi=rel_hi,
        anytime_half=any_half, anytime_p=any_p,
        variance_reduction=np.where(np.isfinite(w.se), reduction, np.nan),
    )


@dataclass(frozen=True, slots=True)
class Cuped:
    """One treatment's regression-adjusted comparison against control (JSON-safe numbers)."""

    theta: float | None
    control_mean: float | None
    treatment_mean: float | None
    control_variance: float | None
    treatment_variance: float | None
    abs_lift: float | None
    se: float | None
    df: float | None
    abs_ci: Interval | None
    p_value: float | None
    rel_lift: float | None
    rel_ci: Interval | None
    anytime_abs_ci: Interval | None
    anytime_p_value: float | None
    variance_reduction: float | None
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        """As the lift row's `cuped` object."""
        out: dict[str, object] = {}
        for name in Cuped.__slots__:
            v = getattr(self, name)
            out[name] = [v[0], v[1]] if isinstance(v, tuple) else v
        return out


def _opt(x: float | FloatArray) -> float | None:
    f = float(x)
    return f if math.isfinite(f) else None


def _pair(lo: float | FloatArray, hi: float | FloatArray) -> Interval | None:
    a, b = _opt(lo), _opt(hi)
    return (a, b) if a is not None and b is not None else None


def cuped_compare(control: CupedSums, treatment: CupedSums, alpha: float = ALPHA) -> Cuped:
    """The regression-adjusted comparison of one treatment against control (see the module)."""
    fields = ("n", "x", "x2", "y", "y2", "xy")
    r = cuped_arrays(tuple(getattr(control, f) for f in fields),
                     tuple(getattr(treatment, f) for f in fields), alpha)
    w = r.welch
    d, half = _opt(w.abs_lift), _opt(r.anytime_half)
    reason = None
    if control.n == 0 or treatment.n == 0:
        reason = stats.REASON_EMPTY_ARM
    elif control.n < 2 or treatment.n < 2:
        reason = stats.REASON_FEW_UNITS
    elif _opt(w.p_value) is None:
        reason = stats.REASON_NOT_FINITE
    elif float(r.theta) == 0.0:
        reason = REASON_NO_COVARIATE_VARIANCE
    elif _opt(r.rel_lift) is None and d is not None:
        reason = stats.REASON_ZERO_CONTROL
    return Cuped(
        theta=_opt(r.theta),
        control_mean=_opt(r.mean_c) if control.n else None,
        treatment_mean=_opt(r.mean_t) if treatment.n else None,
        control_variance=_opt(r.var_c) if control.n >= 2 else None,
        treatment_variance=_opt(r.var_t) if treatment.n >= 2 else None,
        abs_lift=d,
        se=_opt(w.se),
        df=_opt(w.df),
        abs_ci=_pair(w.ci_lo, w.ci_hi),
        p_value=_opt(w.p_value),
        rel_lift=_opt(r.rel_lift),
        rel_ci=_pair(r.rel_lo, r.rel_hi),
        anytime_abs_ci=(d - half, d + half) if d is not None and half is not None else None,
        anytime_p_value=_opt(r.anytime_p),
        variance_reduction=_opt(r.variance_reduction),
        reason=reason,
    )
