"""litmus.core.stats against scipy on raw per-unit data, closed forms and edge cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from litmus.core import stats
from litmus.core.models import ArmStats

# The kernels promise never to warn: any numpy RuntimeWarning is a bug.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def arm(x: np.ndarray) -> ArmStats:
    """Sufficient statistics of raw per-unit values, as SQL would return them."""
    return ArmStats(int(x.size), float(x.sum()), float((x * x).sum()))


def finite_or_none(*values: object) -> bool:
    flat: list[object] = []
    for v in values:
        flat.extend(v if isinstance(v, tuple) else [v])
    return all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in flat)


# ------------------------------------------------------------------ Welch


RAW_CASES = [
    ("normal", 50, 80),
    ("normal", 2, 3),
    ("bernoulli", 400, 380),
    ("exponential", 1000, 1200),
    ("lognormal", 30, 7000),
    ("poisson", 250, 251),
]


def draw(rng: np.random.Generator, kind: str, n: int, shift: float) -> np.ndarray:
    if kind == "normal":
        return rng.normal(10.0 + shift, 3.0, n)
    if kind == "bernoulli":
        return (rng.random(n) < 0.1 + shift / 10).astype(float)
    if kind == "exponential":
        return rng.exponential(2.0 + shift, n)
    if kind == "lognormal":
        return rng.lognormal(1.0 + shift, 1.2, n)
    return rng.poisson(3.0 + shift, n).astype(float)


@pytest.mark.parametrize(("kind", "n_c", "n_t"), RAW_CASES)
@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_welch_matches_scipy_on_raw_data(kind: str, n_c: int, n_t: int, shift: float) -> None:
    rng = np.random.default_rng([RAW_CASES.index((kind, n_c, n_t)), int(shift * 10)])
    c, t = draw(rng, kind, n_c, 0.0), draw(rng, kind, n_t, shift)
    w = stats.welch(arm(c), arm(t))
    ref = sps.ttest_ind(t, c, equal_var=False)
    lo, hi = ref.confidence_interval(0.95)
    assert w.reason is None
    assert w.abs_lift == pytest.approx(t.mean() - c.mean(), rel=1e-9, abs=1e-12)
    assert w.p_value == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)
    assert w.df == pytest.approx(ref.df, rel=1e-8)
    assert w.ci == pytest.approx((lo, hi), rel=1e-8, abs=1e-12)
    assert w.se == pytest.approx(
        math.sqrt(c.var(ddof=1) / n_c + t.var(ddof=1) / n_t), rel=1e-8
    )


def test_welch_arrays_match_vectorised_scipy() -> None:
    rng = np.random.default_rng(7)
    c = rng.normal(0.0, 1.0, (500, 40))
    t = rng.normal(0.2, 2.0, (500, 25))
    mc, vc = stats.arm_moments(40, c.sum(1), (c * c).sum(1))
    mt, vt = stats.arm_moments(25, t.sum(1), (t * t).sum(1))
    w = stats.welch_arrays(mc, vc, 40, mt, vt, 25)
    ref = sps.ttest_ind(t, c, axis=1, equal_var=False)
    lo, hi = ref.confidence_interval(0.95)
    np.testing.assert_allclose(w.p_value, ref.pvalue, rtol=1e-6)
    np.testing.assert_allclose(w.df, ref.df, rtol=1e-8)
    np.testing.assert_allclose(w.ci_lo, lo, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(w.ci_hi, hi, rtol=1e-7, atol=1e-12)


def test_welch_closed_form_two_units_per_arm() -> None:
    # control [0, 2]: mean 1, var 2; treatment [2, 4]: mean 3, var 2 -> se = √2, df = 2, t = √2.
    w = stats.welch(ArmStats(2, 2.0, 4.0), ArmStats(2, 6.0, 20.0))
    assert w.abs_lift == 2.0
    assert w.se == pytest.approx(math.sqrt(2.0))
    assert w.df == pytest.approx(2.0)
    # Student t with 2 df: sf(t) = (1 − t/√(t² + 2))/2, so p = 1 − 1/√2.
    assert w.p_value == pytest.approx(1.0 - 1.0 / math.sqrt(2.0), rel=1e-12)
    # ... and the 97.5% quantile is 0.95/√(2·0.975·0.025).
    q = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert w.ci == pytest.approx((2.0 - q * math.sqrt(2), 2.0 + q * math.sqrt(2)), rel=1e-10)


def test_arm_moments_match_numpy_and_snap_cancellation_noise() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, 1234)
    mean, var = stats.arm_moments(x.size, x.sum(), (x * x).sum())
    assert float(mean) == pytest.approx(x.mean(), rel=1e-12)
    assert float(var) == pytest.approx(x.var(ddof=1), rel=1e-9)
    same = np.full(1000, 0.1)
    a = arm(same)
    assert stats.variance(a) == 0.0  # the naive ss − s²/n leaves ~1e-18 here
    assert stats.variance(ArmStats(1, 3.0, 9.0)) == 0.0
    assert stats.variance(ArmStats()) == 0.0


# ------------------------------------------------------------------ delta method


@pytest.mark.parametrize(("kind", "n_c", "n_t"), RAW_CASES[:5])
def test_delta_relative_matches_formula_on_raw_data(kind: str, n_c: int, n_t: int) -> None:
    rng = np.random.default_rng(n_c * 7 + n_t)
    c, t = draw(rng, kind, n_c, 0.0), draw(rng, kind, n_t, 0.2)
    mc, mt = c.mean(), t.mean()
    var = t.var(ddof=1) / (n_t * mc**2) + c.var(ddof=1) * mt**2 / (n_c * mc**4)
    a_c, a_t = c.var(ddof=1) / n_c, t.var(ddof=1) / n_t
    df = (a_c + a_t) ** 2 / (a_c**2 / (n_c - 1) + a_t**2 / (n_t - 1))
    half = sps.t.ppf(0.975, df) * math.sqrt(var)
    r = stats.delta_relative(arm(c), arm(t))
    assert r.reason is None
    assert r.rel_lift == pytest.approx(mt / mc - 1.0, rel=1e-9)
    assert r.ci == pytest.approx((mt / mc - 1 - half, mt / mc - 1 + half), rel=1e-8, abs=1e-12)


def test_delta_relative_closed_form() -> None:
    # m_c = 2 (var 8, n 2: [0, 4]); m_t = 3 (var 2, n 2: [2, 4]).
    # Var = 2/(2·4) + 8·9/(2·16) = 0.25 + 2.25 = 2.5; Welch df (4 + 1)²/(4² + 1²) = 25/17.
    r = stats.delta_relative(ArmStats(2, 4.0, 16.0), ArmStats(2, 6.0, 20.0))
    half = sps.t.ppf(0.975, 25 / 17) * math.sqrt(2.5)
    assert r.rel_lift == pytest.approx(0.5)
    assert r.ci == pytest.approx((0.5 - half, 0.5 + half), rel=1e-12)


def test_delta_relative_undefined_for_zero_control_mean() -> None:
    r = stats.delta_relative(ArmStats(100, 0.0, 0.0), ArmStats(100, 5.0, 5.0))
    assert r.rel_lift is None and r.ci is None
    assert r.reason == stats.REASON_ZERO_CONTROL
    # A control mean of zero from values that cancel is just as undefined.
    r = stats.delta_relative(ArmStats(2, 0.0, 2.0), ArmStats(2, 2.0, 2.0))
    assert r.rel_lift is None and r.reason == stats.REASON_ZERO_CONTROL


# ------------------------------------------------------------------ confidence sequence


def test_mixture_rho2_value() -> None:
    a = 0.05
    assert stats.mixture_rho2() == pytest.approx(
        (-2 * math.log(a) + math.log(1 - 2 * math.log(a))) / 5000, rel=1e-15
    )
    assert stats.mixture_rho2() == pytest.approx(0.00158723, rel=1e-5)


def test_mixture_cs_closed_form() -> None:
    rho2 = stats.mixture_rho2()
    n, d, se = 3000, 0.02, 0.008
    r = n * rho2
    half = se * math.sqrt((1 + r) / r * math.log((1 + r) / 0.05**2))
    p = min(1.0, math.sqrt(1 + r) * math.exp(-r / (1 + r) * (d / se) ** 2 / 2))
    a = stats.mixture_cs(d, se, n)
    assert a.ci == pytest.approx((d - half, d + half), rel=1e-12)
    assert a.p_value == pytest.approx(p, rel=1e-12)
    assert a.p_value_now == a.p_value
    # The running minimum keeps an earlier, smaller value and drops a larger one.
    assert stats.mixture_cs(d, se, n, prev_p=p / 2).p_value == p / 2
    assert stats.mixture_cs(d, se, n, prev_p=0.99).p_value == pytest.approx(p)


def test_mixture_cs_p_below_alpha_iff_zero_outside_interval() -> None:
    rng = np.random.default_rng(11)
    d = rng.normal(0.0, 1.0, 20_000)
    se = rng.uniform(0.05, 1.0, 20_000)
    n = rng.integers(2, 200_000, 20_000)
    half, p = stats.mixture_cs_arrays(d, se, n)
    outside = np.abs(d) > half
    margin = np.abs(np.abs(d) - half) > 1e-9 * half  # skip ties on the boundary
    assert np.array_equal((p < 0.05)[margin], outside[margin])
    assert np.all((p >= 0) & (p <= 1))


def test_mixture_cs_wider_than_fixed_horizon_interval() -> None:
    # Valid at every n means wider than the single-look z interval at every n.
    n = np.array([10, 100, 1000, 5000, 50_000, 10**7])
    half, _ = stats.mixture_cs_arrays(0.0, 1.0, n)
    assert np.all(half > 1.96)
    # Tightest near the tuning sample size.
    grid = np.arange(100, 100_000, 100)
    h, _ = stats.mixture_cs_arrays(0.0, 1.0 / np.sqrt(grid), grid)
    assert 2000 <= grid[np.argmin(h * np.sqrt(grid))] <= 12_000


def test_running_min() -> None:
    assert stats.running_min(0.3, None) == 0.3
    assert stats.running_min(0.3, 0.1) == 0.1
    assert stats.running_min(None, 0.1) == 0.1
    assert stats.running_min(None, None) is None


# ------------------------------------------------------------------ SRM


@pytest.mark.parametrize(
    ("units", "weights"),
    [
        ([5000, 5100], [0.5, 0.5]),
        ([101_000, 99_000], [0.5, 0.5]),
        ([300, 200, 500], [0.3, 0.2, 0.5]),
        ([10, 0, 7, 3, 1], [0.2, 0.2, 0.2, 0.2, 0.2]),
        ([1, 1], [0.9, 0.1]),
    ],
)
def test_srm_matches_scipy_chisquare(units: list[int], weights: list[float]) -> None:
    total = sum(units)
    ref = sps.chisquare(units, [w * total for w in weights])
    s = stats.srm(units, weights)
    assert s.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    assert s.chi2 == pytest.approx(ref.statistic, rel=1e-12)
    assert s.flagged == (ref.pvalue < 0.001)


def test_srm_closed_form_and_threshold() -> None:
    # 50.5/49.5 of 200k: chi2 = 2·1000²/100000 = 20, p = erfc(√10).
    s = stats.srm([101_000, 99_000], [0.5, 0.5])
    assert s.chi2 == pytest.approx(20.0)
    assert s.p_value == pytest.approx(math.erfc(math.sqrt(10.0)), rel=1e-9)
    assert s.flagged
    assert not stats.srm([50_000, 50_000], [0.5, 0.5]).flagged
    assert stats.srm([50_000, 50_000], [0.5, 0.5]).p_value == 1.0


def test_srm_degenerate_inputs() -> None:
    assert stats.srm([0, 0], [0.5, 0.5]) == stats.Srm(None, False, None, stats.REASON_NO_UNITS)
    single = stats.srm([1000, 0], [0.5, 0.5])  # a single exposed arm is a gross mismatch
    assert single.flagged and single.p_value is not None and single.p_value < 1e-200
    assert stats.srm([10], [1.0]).p_value is None
    assert stats.srm([10, 10], [0.5]).p_value is None
    zero_w = stats.srm([10, 5], [1.0, 0.0])  # an arm that should get nothing but got units
    assert zero_w.p_value == 0.0 and zero_w.flagged and zero_w.chi2 is None


def test_srm_vectorised_equals_scalar() -> None:
    rng = np.random.default_rng(5)
    obs = rng.multinomial(1000, [0.2, 0.3, 0.5], size=200)
    _, p = stats.srm_chi2(obs, [0.2, 0.3, 0.5])
    ref = sps.chisquare(obs, 1000 * np.array([0.2, 0.3, 0.5]), axis=1).pvalue
    np.testing.assert_allclose(p, ref, rtol=1e-9)


# ------------------------------------------------------------------ Holm


def holm_reference(p: list[float]) -> list[float]:
    """Holm by definition: adj_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for rank, i in enumerate(order):
        out[i] = max(min(1.0, (m - j) * p[order[j]]) for j in range(rank + 1))
    return out


def test_holm_hand_case() -> None:
    # sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04) = 0.06 (monotone).
    assert stats.holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]
    assert stats.holm([0.2]) == [0.2]
    assert stats.holm([]) == []


def test_holm_skips_undefined_p_values() -> None:
    assert stats.holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])
    assert stats.holm([None, None]) == [None, None]


@settings(database=None, derandomize=True)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_holm_properties(ps: list[float]) -> None:
    adj = stats.holm(list(ps))
    assert adj == pytest.approx(holm_reference(ps))
    assert all(a is not None and p <= a <= 1.0 for p, a in zip(ps, adj, strict=True))
    for (p1, a1), (p2, a2) in itertools.combinations(zip(ps, adj, strict=True), 2):
        if p1 < p2:
            assert a1 is not None and a2 is not None and a1 <= a2


# ------------------------------------------------------------------ chance to beat


def test_chance_to_beat() -> None:
    assert stats.chance_to_beat(0.5, 0.25) == pytest.approx(sps.norm.cdf(2.0))
    assert stats.chance_to_beat(0.5, 0.25, minimize=True) == pytest.approx(sps.norm.cdf(-2.0))
    assert stats.chance_to_beat(0.0, 1.0) == 0.5
    assert stats.chance_to_beat(1.0, 0.0) == 1.0
    assert stats.chance_to_beat(-1.0, 0.0) == 0.0
    assert stats.chance_to_beat(0.0, 0.0) == 0.5
    assert stats.chance_to_beat(-1.0, 0.0, minimize=True) == 1.0
    assert stats.chance_to_beat(None, 1.0) is None
    assert stats.chance_to_beat(1.0, None) is None


# ------------------------------------------------------------------ significance


def test_is_significant_follows_analysis_mode() -> None:
    assert stats.is_significant(0.01, 0.2, "fixed")
    assert not stats.is_significant(0.01, 0.2, "sequential")
    assert stats.is_significant(0.2, 0.01, "sequential")
    assert not stats.is_significant(0.05, 0.05, "fixed")  # strictly below
    assert not stats.is_significant(None, None, "sequential")


# ------------------------------------------------------------------ edge cases


def test_zero_variance_both_arms_equal_means() -> None:
    # Every unit 0.1 in both arms: sums differ by rounding, the means are still equal.
    c = stats.compare(arm(np.full(300, 0.1)), arm(np.full(700, 0.1)))
    assert c.welch.se == 0.0
    assert c.welch.abs_lift == 0.0 and c.welch.p_value == 1.0 and c.welch.ci == (0.0, 0.0)
    assert c.relative.rel_lift == 0.0 and c.relative.ci == (0.0, 0.0)
    assert c.anytime.p_value == 1.0 and c.anytime.ci == (0.0, 0.0)
    assert c.chance_to_beat == 0.5


def test_zero_variance_both_arms_different_means() -> None:
    c = stats.compare(ArmStats(10, 0.0, 0.0), ArmStats(10, 10.0, 10.0))
    assert c.welch.abs_lift == 1.0 and c.welch.p_value == 0.0 and c.welch.ci == (1.0, 1.0)
    assert c.anytime.p_value == 0.0 and c.anytime.ci == (1.0, 1.0)
    assert c.chance_to_beat == 1.0
    assert c.relative.rel_lift is None and c.relative.reason == stats.REASON_ZERO_CONTROL


def test_zero_variance_one_arm_uses_the_other_arms_df() -> None:
    rng = np.random.default_rng(2)
    t = rng.normal(1.0, 1.0, 30)
    w = stats.welch(ArmStats(50, 0.0, 0.0), arm(t))
    assert w.df == pytest.approx(29.0)
    assert w.p_value == pytest.approx(sps.ttest_1samp(t, 0.0).pvalue, rel=1e-9)


@pytest.mark.parametrize(
    ("control", "treatment", "reason"),
    [
        (ArmStats(), ArmStats(), stats.REASON_EMPTY_ARM),
        (ArmStats(), ArmStats(5, 2.0, 2.0), stats.REASON_EMPTY_ARM),
        (ArmStats(5, 2.0, 2.0), ArmStats(), stats.REASON_EMPTY_ARM),
        (ArmStats(1, 1.0, 1.0), ArmStats(5, 2.0, 2.0), stats.REASON_FEW_UNITS),
        (ArmStats(1, 1.0, 1.0), ArmStats(1, 0.0, 0.0), stats.REASON_FEW_UNITS),
    ],
)
def test_too_few_units(control: ArmStats, treatment: ArmStats, reason: str) -> None:
    c = stats.compare(control, treatment, prev_anytime_p=0.4)
    assert c.welch.reason == reason and c.reason == reason
    assert c.welch.p_value is None and c.welch.ci is None and c.welch.se is None
    assert c.anytime.ci is None and c.anytime.p_value_now is None
    assert c.anytime.p_value == 0.4  # the stored running minimum survives an undefined tick
    assert c.chance_to_beat is None
    if control.n and treatment.n:
        assert c.welch.abs_lift == pytest.approx(treatment.mean - control.mean)
    else:
        assert c.welch.abs_lift is None


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    st.integers(0, 10**6), st.floats(-1e300, 1e300), st.floats(0, 1e308),
    st.integers(0, 10**6), st.floats(-1e300, 1e300), st.floats(0, 1e308),
    st.booleans(), st.one_of(st.none(), st.floats(0, 1)),
)
def test_compare_never_returns_nan_or_infinity(
    n_c: int, s_c: float, ss_c: float, n_t: int, s_t: float, ss_t: float,
    minimize: bool, prev: float | None,
) -> None:
    # Arbitrary (even inconsistent) sufficient statistics: outputs are finite floats or None.
    c = stats.compare(
        ArmStats(n_c, s_c, ss_c), ArmStats(n_t, s_t, ss_t), prev_anytime_p=prev, minimize=minimize
    )
    w, r, a = c.welch, c.relative, c.anytime
    assert finite_or_none(
        c.control_mean, c.treatment_mean, w.abs_lift, w.se, w.df, w.ci, w.p_value,
        r.rel_lift, r.ci, a.ci, a.p_value, a.p_value_now, c.chance_to_beat,
    )
    for p in (w.p_value, a.p_value, a.p_value_now, c.chance_to_beat):
        assert p is None or 0.0 <= p <= 1.0
    for ci in (w.ci, r.ci, a.ci):
        assert ci is None or ci[0] <= ci[1]
    if prev is not None:
        assert a.p_value is not None and a.p_value <= prev
    # Numbers are defined together, and every missing one says why.
    assert (w.se is None) == (w.p_value is None) == (w.ci is None) == (a.ci is None)
    assert (w.se is None) == (c.chance_to_beat is None) == (a.p_value_now is None)
    assert w.p_value is not None or (w.reason and a.reason)
    assert r.ci is not None or r.reason
    assert w.p_value is None or w.abs_lift is not None


def test_compare_many_equals_the_scalar_wrappers() -> None:
    rng = np.random.default_rng(17)
    control = arm(rng.exponential(2.0, 400))
    treatments = [arm(rng.exponential(2.0 + 0.1 * i, 300 + i)) for i in range(5)]
    treatments += [ArmStats(), ArmStats(1, 2.0, 4.0)]
    prev: list[float | None] = [0.5, None, 1e-4, 0.9, None, 0.2, 0.3]
    many = stats.compare_many(control, treatments, prev_anytime_p=prev, minimize=True)
    for t, p, c in zip(treatments, prev, many, strict=True):
        w = stats.welch(control, t)
        assert c.welch == w
        assert c.relative == stats.delta_relative(control, t)
        a = stats.mixture_cs(w.abs_lift, w.se, control.n + t.n, p)
        assert (c.anytime.ci, c.anytime.p_value, c.anytime.p_value_now) == (
            a.ci, a.p_value, a.p_value_now
        )
        assert c.chance_to_beat == stats.chance_to_beat(w.abs_lift, w.se, minimize=True)
        assert c == stats.compare(control, t, prev_anytime_p=p, minimize=True)
    assert stats.compare_many(control, []) == []
