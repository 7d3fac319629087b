"""Bayesian risk (expected loss of choosing control / the treatment) against gbstats.

gbstats' `EffectBayesianABTest.get_risk` is a closed form (scipy's truncated-normal mean, no
Monte Carlo), so the comparison is deterministic: the same normal posterior of the relative
lift (flat prior: mean (m_t − m_c)/m_c, variance by the delta method) in both, compared to
rel 1e-9 (the brief asked 1e-3), live when gbstats is installed and against its committed
output always. A Monte Carlo estimate checks the definition independently."""

from __future__ import annotations

import math

import numpy as np
import pytest

from litmus.core import stats
from litmus.core.models import ArmStats

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

try:
    import gbstats.bayesian.tests as gb_tests
    import gbstats.models.statistics as gb_stats
except ImportError:  # `pip install --no-deps gbstats` (pyproject's `reference` extra)
    gb_tests = gb_stats = None

needs_gbstats = pytest.mark.skipif(gb_tests is None, reason="gbstats is not installed: the "
                                   "golden test below checks the numbers it gave")

# (control n, Σy, Σy²), (treatment ...), minimize, gbstats' risk [control, treatment]: the
# output of EffectBayesianABTest(SampleMeanStatistic..., EffectBayesianConfig(inverse=...))
# .compute_result().risk with gbstats 0.8.0, committed so the check runs without gbstats.
GOLDEN = [
    ((400, 4012.5, 43870.0), (420, 4290.0, 47600.0), False, (0.020518838167608605, 0.0022722872107773535)),
    ((400, 4012.5, 43870.0), (420, 4290.0, 47600.0), True, (0.0022722872107773535, 0.020518838167608605)),
    ((5000, 500.0, 500.0), (5000, 601.0, 601.0), False, (0.2020322467658465, 3.2246765846545756e-05)),
    ((5000, 500.0, 500.0), (5000, 601.0, 601.0), True, (3.2246765846545756e-05, 0.2020322467658465)),
    ((800, 1610.0, 6500.0), (750, 1340.0, 4820.0), False, (9.877878174201764e-05, 0.1123140996927152)),
    ((800, 1610.0, 6500.0), (750, 1340.0, 4820.0), True, (0.1123140996927152, 9.877878174201764e-05)),
    ((12, 40.0, 210.0), (9, 36.0, 230.0), False, (0.2888855735786696, 0.08888557357866968)),
    ((12, 40.0, 210.0), (9, 36.0, 230.0), True, (0.08888557357866968, 0.2888855735786696)),
    ((2000, 6010.0, 24050.0), (2000, 5980.0, 23900.0), False, (0.005033859022325343, 0.01002553955477116)),
    ((2000, 6010.0, 24050.0), (2000, 5980.0, 23900.0), True, (0.01002553955477116, 0.005033859022325343)),
]


@pytest.mark.parametrize(("c", "t", "minimize", "ref"), GOLDEN)
def test_risk_equals_gbstats_golden(c: tuple[int, float, float], t: tuple[int, float, float],
                                    minimize: bool, ref: tuple[float, float]) -> None:
    ours = stats.compare(ArmStats(*c), ArmStats(*t), minimize=minimize)
    assert ours.risk_control == pytest.approx(ref[0], rel=1e-9, abs=1e-12)
    assert ours.risk_treatment == pytest.approx(ref[1], rel=1e-9, abs=1e-12)


def arm(x: np.ndarray) -> ArmStats:
    return ArmStats(int(x.size), float(x.sum()), float((x * x).sum()))


def gb_mean(a: ArmStats) -> object:
    assert gb_stats is not None
    return gb_stats.SampleMeanStatistic(n=a.n, sum=a.sum, sum_squares=a.sum_sq)


CASES = [
    # (name, control draw, treatment draw)
    ("normal, small lift", lambda r: r.normal(10.0, 3.0, 400), lambda r: r.normal(10.2, 3.0, 420)),
    ("bernoulli, clear win", lambda r: (r.random(5000) < 0.10).astype(float),
     lambda r: (r.random(5000) < 0.12).astype(float)),
    ("exponential, loss", lambda r: r.exponential(2.0, 800), lambda r: r.exponential(1.8, 750)),
    ("lognormal, few units", lambda r: r.lognormal(1.0, 1.0, 12), lambda r: r.lognormal(1.1, 1.0, 9)),
    ("poisson, null", lambda r: r.poisson(3.0, 2000).astype(float),
     lambda r: r.poisson(3.0, 2000).astype(float)),
]


@needs_gbstats
@pytest.mark.parametrize("minimize", [False, True])
@pytest.mark.parametrize(("name", "draw_c", "draw_t"), CASES, ids=[c[0] for c in CASES])
def test_risk_equals_gbstats(name: str, draw_c: object, draw_t: object, minimize: bool) -> None:
    rng = np.random.default_rng([ord(ch) for ch in name])
    c, t = arm(draw_c(rng)), arm(draw_t(rng))  # type: ignore[operator]
    ours = stats.compare(c, t, minimize=minimize)
    assert gb_tests is not None
    cfg = gb_tests.EffectBayesianConfig(inverse=minimize)  # relative, flat prior: the defaults
    ref = gb_tests.EffectBayesianABTest(gb_mean(c), gb_mean(t), cfg).compute_result()
    assert ref.risk_type == "relative"
    print(f"\n{name} (minimize={minimize}): risk control {ours.risk_control:.6g} "
          f"(gbstats {ref.risk[0]:.6g}), treatment {ours.risk_treatment:.6g} "
          f"(gbstats {ref.risk[1]:.6g})")
    assert ours.risk_control == pytest.approx(ref.risk[0], rel=1e-9, abs=1e-12)
    assert ours.risk_treatment == pytest.approx(ref.risk[1], rel=1e-9, abs=1e-12)


@needs_gbstats
@pytest.mark.parametrize(("mu", "sigma"), [(0.0, 1.0), (0.05, 0.02), (-0.3, 0.1), (2.0, 0.3),
                                          (-7.0, 0.5), (1e-4, 1e-3)])
def test_risk_kernel_equals_get_risk(mu: float, sigma: float) -> None:
    assert gb_tests is not None
    ref = gb_tests.EffectBayesianABTest.get_risk(mu, sigma)
    r_c, r_t = stats.risk_arrays(mu, sigma)
    assert float(r_c) == pytest.approx(ref[0], rel=1e-7, abs=1e-12)
    assert float(r_t) == pytest.approx(ref[1], rel=1e-7, abs=1e-12)
    # Minimising mirrors the lift, so the two risks swap.
    m_c, m_t = stats.risk_arrays(mu, sigma, minimize=True)
    assert (float(m_c), float(m_t)) == (float(r_t), float(r_c))


def test_risk_is_the_expected_loss_by_monte_carlo() -> None:
    rng = np.random.default_rng(7)
    for mu, sigma in [(0.02, 0.03), (-0.01, 0.05)]:
        d = rng.normal(mu, sigma, 2_000_000)
        r_c, r_t = stats.risk_arrays(mu, sigma)
        assert float(r_c) == pytest.approx(np.maximum(d, 0).mean(), abs=1e-4)
        assert float(r_t) == pytest.approx(np.maximum(-d, 0).mean(), abs=1e-4)
        # E[max(d,0)] − E[max(−d,0)] = E[d]: choosing well trades one risk for the other.
        assert float(r_c) - float(r_t) == pytest.approx(mu, abs=1e-12)


def test_risk_degenerate_cases() -> None:
    r_c, r_t = stats.risk_arrays([0.1, -0.1, 0.0, math.nan], [0.0, 0.0, 0.0, 0.1])
    assert r_c[:3].tolist() == [0.1, 0.0, 0.0] and r_t[:3].tolist() == [0.0, 0.1, 0.0]
    assert math.isnan(r_c[3]) and math.isnan(r_t[3])
    # Far in a tail the closed form cancels; it never goes below 0.
    r_c, r_t = stats.risk_arrays(-50.0, 1.0)
    assert float(r_c) >= 0.0 and float(r_t) == pytest.approx(50.0)
    # No relative lift (control mean 0), no risk.
    c = stats.compare(ArmStats(100, 0.0, 0.0), ArmStats(100, 5.0, 5.0))
    assert c.risk_control is None and c.risk_treatment is None
