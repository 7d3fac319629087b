"""litmus.core.cuped: the regression-adjusted comparison against gbstats, in the snapshot, and
its operating characteristics by simulation (sequential power and peeking A/A)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from litmus.core import stats
from litmus.core.cuped import CupedSums, cuped_arrays, cuped_compare
from litmus.core.models import Experiment, Variant
from litmus.core.snapshot import MetricAgg, build_results

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

try:
    import gbstats.frequentist.tests as gb_freq
    import gbstats.models.statistics as gb_stats
except ImportError:  # `pip install --no-deps gbstats` (pyproject's `reference` extra)
    gb_freq = gb_stats = None

needs_gbstats = pytest.mark.skipif(gb_freq is None, reason="gbstats is not installed: the "
                                   "golden test checks the numbers it gave")

Sums = tuple[float, float, float, float, float, float]


def dataset(seed: int, rho: float, n_c: int, n_t: int, lift: float, kind: str,
            ) -> tuple[Sums, Sums]:
    """Each arm's (n, Σx, Σx², Σy, Σy², Σxy) of generated per-unit data."""
    rng = np.random.default_rng(seed)
    out = []
    for n, lift_arm in ((n_c, 0.0), (n_t, lift)):
        if kind == "normal":  # corr(x, y) = rho
            x = rng.normal(20, 4, n)
            y = 10 + lift_arm + rho * 3 * (x - 20) / 4 + math.sqrt(1 - rho**2) * 3 * rng.normal(size=n)
        elif kind == "useless":  # y independent of x
            x = rng.normal(5, 1, n)
            y = rng.lognormal(1.5, 0.8, n) * (1 + lift_arm)
        else:  # a conversion, the covariate a pre-period count that raises its chance
            x = rng.poisson(2.0, n).astype(float)
            y = (rng.random(n) < np.clip(0.05 + 0.04 * x + lift_arm, 0, 1)).astype(float)
        out.append(tuple(float(v) for v in (n, x.sum(), (x * x).sum(), y.sum(), (y * y).sum(),
                                            (x * y).sum())))
    return out[0], out[1]  # type: ignore[return-value]


DATASETS = {
    "correlated 0.7": (1, 0.7, 3000, 3100, 0.25, "normal"),
    "useless covariate": (2, 0.0, 2500, 2400, 0.05, "useless"),
    "conversion, pre-period count": (3, 0.0, 4000, 4000, 0.01, "conv"),
}

# gbstats 0.8.0 on the datasets above: TwoSidedTTest (absolute, relative) and
# SequentialTwoSidedTTest (absolute, tuning 5000) of RegressionAdjustedStatistic, θ from
# compute_theta. Committed so that the check runs without gbstats installed.
GOLDEN: list[tuple[str, Sums, Sums, dict[str, Any]]] = [
    ('correlated 0.7', (3000.0, 59971.72330170488, 1246450.9929759954, 29899.89449608897, 325205.0244400097, 622872.3356004785), (3100.0, 61942.46584450749, 1286773.3049055776, 31576.00884439448, 348723.5932785241, 656492.5743646622), {'theta': 0.5246637111054965, 'control_mean': -0.5216974709251634, 'treatment_mean': -0.2977274711646043, 'control_variance': 4.636401232721505, 'treatment_variance': 4.448472781255891, 'abs_lift': 0.2239699997605591, 'se': 0.05459357377323635, 'df': 6080.613492495848, 'abs_ci': [0.11694725824608598, 0.3309927412750322], 'p_value': 4.140536619190449e-05, 'rel_lift': 0.022471985624215693, 'rel_ci': [0.011610790868005314, 0.03333318038042607], 'anytime_abs_ci': [0.058168258607375456, 0.3897717409137427], 'anytime_p_value': 0.001591355386171326}),
    ('useless covariate', (2500.0, 12398.091599003728, 63957.97950914614, 15961.643824172266, 189019.69197464598, 79218.37932964039), (2400.0, 12093.047287457928, 63311.53198068022, 15953.967924188868, 200015.02240775904, 80726.4377365997), {'theta': 0.0873744133202945, 'control_mean': 5.951347137767217, 'treatment_mean': 6.207227088413606, 'control_variance': 34.861270466170424, 'treatment_variance': 39.14977369932267, 'abs_lift': 0.25587995064638847, 'se': 0.173945146222938, 'df': 4850.748588626301, 'abs_ci': [-0.08513136043227959, 0.5968912617250566], 'p_value': 0.1413456577753589, 'rel_lift': 0.04007731807968372, 'rel_ci': [-0.01435809129511284, 0.09451272745448028], 'anytime_abs_ci': [-0.27210322875348614, 0.7838631300462631], 'anytime_p_value': 1.0}),
    ('conversion, pre-period count', (4000.0, 7929.0, 23847.0, 506.0, 506.0, 1327.0), (4000.0, 8096.0, 24702.0, 589.0, 589.0, 1513.0), {'theta': 0.03930823733698351, 'control_mean': 0.04858124653876443, 'treatment_mean': 0.06769012762994536, 'control_variance': 0.10729739498540415, 'treatment_variance': 0.12250398784342416, 'abs_lift': 0.019108881091180932, 'se': 0.007579600629796208, 'df': 7963.130765869002, 'abs_ci': [0.004250878487196054, 0.03396688369516581], 'p_value': 0.011718443470671636, 'rel_lift': 0.15105834854688482, 'rel_ci': [0.024243303232283325, 0.27787339386148635], 'anytime_abs_ci': [-0.003989221282541935, 0.0422069834649038], 'anytime_p_value': 0.19449816187281263}),
]


def sums(s: Sums) -> CupedSums:
    return CupedSums(int(s[0]), *s[1:])


def assert_matches(ours: dict[str, Any], ref: dict[str, Any], tol: float) -> None:
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, rel=tol, abs=1e-12), k


def plain_se2(c: Sums, t: Sums) -> float:
    out = 0.0
    for n, _, _, y, y2, _ in (c, t):
        out += (y2 - y * y / n) / (n - 1) / n
    return out


@pytest.mark.parametrize(("name", "c", "t", "ref"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_cuped_equals_gbstats_golden(name: str, c: Sums, t: Sums, ref: dict[str, Any]) -> None:
    ours = cuped_compare(sums(c), sums(t)).to_dict()
    assert_matches(ours, ref, 1e-9)
    vr = ours["variance_reduction"]
    assert vr == pytest.approx(1 - ref["se"] ** 2 / plain_se2(c, t), rel=1e-9)
    print(f"\n{name}: variance reduction {vr:.4f}, theta {ours['theta']:.4f}")
    if name == "correlated 0.7":
        assert vr >= 0.45
    if name == "useless covariate":
        assert abs(vr) < 0.01


@needs_gbstats
@pytest.mark.parametrize("name", list(DATASETS))
def test_cuped_equals_gbstats_live(name: str) -> None:
    """The same datasets, regenerated, through gbstats itself: agreement to 1e-4 (relative)."""
    assert gb_freq is not None and gb_stats is not None
    c, t = dataset(*DATASETS[name])  # type: ignore[arg-type]

    def ra(s: Sums) -> Any:
        n = int(s[0])
        return gb_stats.RegressionAdjustedStatistic(
            n=n, post_statistic=gb_stats.SampleMeanStatistic(n=n, sum=s[3], sum_squares=s[4]),
            pre_statistic=gb_stats.SampleMeanStatistic(n=n, sum=s[1], sum_squares=s[2]),
            post_pre_sum_of_products=s[5], theta=0)

    absolute = gb_freq.TwoSidedTTest(ra(c), ra(t), gb_freq.FrequentistConfig(
        difference_type="absolute"))
    a = absolute.compute_result()
    r = gb_freq.TwoSidedTTest(ra(c), ra(t), gb_freq.FrequentistConfig(
        difference_type="relative")).compute_result()
    s = gb_freq.SequentialTwoSidedTTest(ra(c), ra(t), gb_freq.SequentialConfig(
        difference_type="absolute")).compute_result()
    ref = {"theta": absolute.stat_a.theta, "control_mean": absolute.stat_a.mean,
           "treatment_mean": absolute.stat_b.mean, "control_variance": absolute.stat_a.variance,
           "treatment_variance": absolute.stat_b.variance, "abs_lift": a.expected,
           "se": float(a.uplift.stddev), "df": float(absolute.dof), "abs_ci": a.ci,
           "p_value": a.p_value, "rel_lift": r.expected, "rel_ci": r.ci,
           "anytime_abs_ci": s.ci, "anytime_p_value": s.p_value}
    ours = cuped_compare(sums(c), sums(t)).to_dict()
    worst = max(abs(float(np.max(np.abs(np.subtract(ours[k], v)) / np.maximum(np.abs(v), 1e-12))))
                for k, v in ref.items())
    print(f"\n{name}: largest relative difference from gbstats {worst:.2e}, "
          f"variance reduction {ours['variance_reduction']:.4f}")
    assert_matches(ours, ref, 1e-4)


def test_cuped_degenerate_inputs() -> None:
    # A constant covariate: θ = 0, the plain comparison, with the reason said.
    c, t = CupedSums(10, 10.0, 10.0, 5.0, 5.0, 5.0), CupedSums(10, 10.0, 10.0, 7.0, 7.0, 7.0)
    r = cuped_compare(c, t)
    plain = stats.welch(stats.ArmStats(10, 5.0, 5.0), stats.ArmStats(10, 7.0, 7.0))
    assert r.theta == 0.0 and r.reason is not None and "θ = 0" in r.reason
    assert r.abs_lift == pytest.approx(plain.abs_lift) and r.p_value == pytest.approx(plain.p_value)
    assert r.variance_reduction == pytest.approx(0.0, abs=1e-12)
    # Empty and one-unit arms: nothing but JSON-safe Nones.
    for c in (CupedSums(), CupedSums(1, 2.0, 4.0, 1.0, 1.0, 2.0)):
        r = cuped_compare(c, CupedSums(5, 5.0, 7.0, 2.0, 2.0, 3.0))
        assert r.reason in (stats.REASON_EMPTY_ARM, stats.REASON_FEW_UNITS)
        assert r.p_value is None and r.abs_ci is None and r.anytime_abs_ci is None
    # Sums too large for float64: nothing is reported as certain.
    huge = CupedSums(10, 1e300, 1e300, 1e300, 1e300, 1e300)
    r = cuped_compare(huge, CupedSums(10, 1e299, 1e300, 2e299, 1e300, 1e300))
    assert r.p_value is None and r.abs_ci is None and r.anytime_abs_ci is None
    assert r.variance_reduction is None and r.reason == stats.REASON_NOT_FINITE
    # A control mean of 0: the relative lift is undefined, the absolute one is not.
    r = cuped_compare(CupedSums(4, 4.0, 6.0, 0.0, 0.0, 0.0), CupedSums(4, 4.0, 6.0, 2.0, 2.0, 3.0))
    assert r.rel_lift is None and r.rel_ci is None and r.abs_lift is not None


# ------------------------------------------------------------------ in the snapshot


def test_snapshot_rows_carry_the_cuped_object() -> None:
    (c, t), (c2, t2) = dataset(*DATASETS["correlated 0.7"]), dataset(5, 0.5, 300, 320, 0.0,  # type: ignore[arg-type]
                                                                    "normal")
    exp = Experiment(
        id="7f0c0c9e-0000-4000-8000-000000000003", key="k", name="n", description="",
        owner_team="t", status="running",
        variants=(Variant("a", 0.5), Variant("b", 0.5)),
        metrics={"primary": "revenue", "covariates": ["pre_revenue"],
                 "definitions": {"revenue": {"cuped": "pre_revenue"},
                                 "latency": {"stat": "p95", "cuped": "pre_revenue"},
                                 "clicks": {"cuped": "pre_revenue"}}})

    def agg(s: Sums) -> MetricAgg:
        return MetricAgg(int(s[0]), int(s[0]), s[3], s[4])

    metrics = {"revenue": {"a": agg(c), "b": agg(t)}, "other": {"a": agg(c2), "b": agg(t2)},
               "clicks": {"a": agg(c2), "b": agg(t2)}, "latency": {"a": agg(c2), "b": agg(t2)}}
    exposures = {"a": (int(c[0]), 0), "b": (int(t[0]), 0)}
    args: dict[str, Any] = {"computed_at": "2026-01-02T03:04:05Z", "exposures": exposures,
                            "metrics": metrics}
    plain = build_results(exp, **args).snapshot
    snap = build_results(exp, **args, cuped={"revenue": {"a": sums(c), "b": sums(t)}}).snapshot
    rows = {r["metric"]: r for r in snap["lift"]}
    want = cuped_compare(sums(c), sums(t)).to_dict()
    assert rows["revenue"]["cuped"] == {"covariate": "pre_revenue", **want}
    assert rows["revenue"]["cuped"]["variance_reduction"] >= 0.45
    # The plain numbers stay as they are.
    plain_rows = {r["metric"]: r for r in plain["lift"]}
    for k in ("abs_lift", "abs_ci", "p_value", "rel_ci", "anytime_abs_ci", "se"):
        assert rows["revenue"][k] == plain_rows["revenue"][k]
    assert plain_rows["revenue"]["cuped"] == {"covariate": "pre_revenue",
                                              "reason": "no covariate sums for this metric yet"}
    assert rows["other"]["cuped"] is None  # no covariate named
    assert rows["clicks"]["cuped"]["reason"] == "no covariate sums for this metric yet"
    assert rows["latency"]["cuped"]["reason"].startswith("CUPED adjusts means")
    assert snap["definitions"]["revenue"]["cuped"] == "pre_revenue"


# ------------------------------------------------------------------ simulations


PEEK = 100  # units, both arms together


def paths(rng: np.random.Generator, reps: int, looks: int, rho: float, effect: float,
          ) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Per replication and look, each arm's cumulative CupedSums: units coin-flipped between
    arms, y = effect·treated + ρx + √(1 − ρ²)ε with x, ε ~ N(0, 1) (sd of y: 1)."""
    acc = np.zeros((2, 6, reps))
    out = np.zeros((2, 6, reps, looks))
    for j in range(looks):
        x = rng.standard_normal((reps, PEEK))
        treated = rng.random((reps, PEEK)) < 0.5
        y = 1.0 + effect * treated + rho * x + math.sqrt(1 - rho * rho) * rng.standard_normal(
            (reps, PEEK))
        for arm, sel in ((0, ~treated), (1, treated)):
            xs, ys = np.where(sel, x, 0.0), np.where(sel, y, 0.0)
            acc[arm] += (sel.sum(1), xs.sum(1), (xs * xs).sum(1), ys.sum(1), (ys * ys).sum(1),
                         (xs * ys).sum(1))
            out[arm, :, :, j] = acc[arm]
    return tuple(out[0]), tuple(out[1])


def first_rejection(c: tuple[np.ndarray, ...], t: tuple[np.ndarray, ...],
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per replication, the look (index) at which the running-min anytime p first falls below
    α, plain and CUPED (looks: no rejection)."""
    looks = c[0].shape[1]
    r = cuped_arrays(c, t)
    m_c, v_c = stats.arm_moments(c[0], c[3], c[4])
    m_t, v_t = stats.arm_moments(t[0], t[3], t[4])
    w = stats.welch_arrays(m_c, v_c, c[0], m_t, v_t, t[0])
    _, p_plain = stats.mixture_cs_arrays(w.abs_lift, w.se, c[0] + t[0])

    def first(p: np.ndarray) -> np.ndarray:
        hit = np.nan_to_num(p, nan=1.0) < stats.ALPHA
        return np.where(hit.any(1), hit.argmax(1), looks)

    return first(p_plain), first(r.anytime_p)


def units_for_power(first: np.ndarray, power: float = 0.8) -> float:
    """Units (both arms) by which `power` of the replications have stopped with a rejection."""
    return float((np.quantile(first, power) + 1) * PEEK)


def test_cuped_cuts_the_units_sequential_mode_needs_and_keeps_aa_error() -> None:
    rng = np.random.default_rng(77)
    reps, looks = 2000, 120  # up to 12,000 units, a look every 100
    c, t = paths(rng, reps, looks, 0.7, 0.15)
    plain, adjusted = first_rejection(c, t)
    n_plain, n_cuped = units_for_power(plain), units_for_power(adjusted)
    assert (plain < looks).mean() >= 0.8  # the horizon is long enough to reach 80% plain
    saving = 1 - n_cuped / n_plain
    print(f"\npower 80% in sequential mode (effect 0.15 sd, corr 0.7, {reps} reps, a look "
          f"every {PEEK} units): plain {n_plain:.0f} units, CUPED {n_cuped:.0f} units, "
          f"saving {saving:.1%}")
    assert saving >= 0.40

    c, t = paths(rng, reps, looks, 0.7, 0.0)
    plain, adjusted = first_rejection(c, t)
    fp_plain, fp_cuped = float((plain < looks).mean()), float((adjusted < looks).mean())
    print(f"A/A with peeking every {PEEK} units to {looks * PEEK} ({reps} reps): false "
          f"positives plain {fp_plain:.2%}, CUPED {fp_cuped:.2%}")
    assert fp_cuped <= 0.05


_num = st.floats(-1e12, 1e12, allow_nan=False) | st.sampled_from([0.0, 1.0, 1e300, -1e300])


@settings(max_examples=300, deadline=None)
@given(st.tuples(st.integers(0, 10**6), _num, _num, _num, _num, _num),
       st.tuples(st.integers(0, 10**6), _num, _num, _num, _num, _num))
def test_any_sums_give_json_safe_numbers(c: tuple[Any, ...], t: tuple[Any, ...]) -> None:
    """Whatever the sums (inconsistent ones too), no NaN or infinity and no warning."""
    out = cuped_compare(CupedSums(*c), CupedSums(*t)).to_dict()
    json.dumps(out, allow_nan=False)
    if out["p_value"] is None:
        assert out["abs_ci"] is None and out["anytime_p_value"] is None
