"""Operating characteristics of litmus.core.stats by simulation (fixed seeds, vectorised).

Each suite runs thousands of experiments at once through the same array kernels the scalar
wrappers use. With 2000 experiments the standard error of a 5% rate is 0.49%, so the ±1.5% bands
are three standard errors wide.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from litmus.core import stats

# The kernels promise never to warn: any numpy RuntimeWarning is a bug.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

EXPERIMENTS = 2000


def welch_from_sums(
    n_c: np.ndarray, s_c: np.ndarray, ss_c: np.ndarray,
    n_t: np.ndarray, s_t: np.ndarray, ss_t: np.ndarray,
) -> stats.WelchArrays:
    mc, vc = stats.arm_moments(n_c, s_c, ss_c)
    mt, vt = stats.arm_moments(n_t, s_t, ss_t)
    return stats.welch_arrays(mc, vc, n_c, mt, vt, n_t)


def bernoulli_arms(
    rng: np.random.Generator, n: int, p_c: float, p_t: float, size: int = EXPERIMENTS
) -> tuple[np.ndarray, ...]:
    """Per-experiment sufficient statistics of n Bernoulli units per arm (sum_sq == sum)."""
    s_c = rng.binomial(n, p_c, size).astype(float)
    s_t = rng.binomial(n, p_t, size).astype(float)
    k = np.full(size, n)
    return k, s_c, s_c, k, s_t, s_t


def exponential_arms(
    rng: np.random.Generator, n: int, mean_c: float, mean_t: float, size: int = EXPERIMENTS
) -> tuple[np.ndarray, ...]:
    """Per-experiment sufficient statistics from raw skewed (exponential) per-unit values."""
    c = rng.exponential(mean_c, (size, n))
    t = rng.exponential(mean_t, (size, n))
    k = np.full(size, n)
    return k, c.sum(1), (c * c).sum(1), k, t.sum(1), (t * t).sum(1)


# ------------------------------------------------------------------ fixed horizon


@pytest.mark.parametrize("data", ["bernoulli", "exponential"])
def test_aa_fixed_horizon_false_positive_rate(data: str) -> None:
    rng = np.random.default_rng(101)
    arms = (
        bernoulli_arms(rng, 2000, 0.1, 0.1) if data == "bernoulli"
        else exponential_arms(rng, 500, 2.0, 2.0)
    )
    w = welch_from_sums(*arms)
    rate = float(np.mean(w.p_value < 0.05))
    print(f"\nA/A fixed horizon ({data}, {EXPERIMENTS} experiments): Welch rejects {rate:.2%}")
    assert 0.035 <= rate <= 0.065
    # p-values are uniform under the null: each decile holds about 10%.
    deciles = np.histogram(w.p_value, bins=10, range=(0, 1))[0] / EXPERIMENTS
    assert np.all(np.abs(deciles - 0.1) < 0.025)


@pytest.mark.parametrize("data", ["bernoulli", "exponential"])
def test_interval_coverage_of_true_difference(data: str) -> None:
    rng = np.random.default_rng(202)
    if data == "bernoulli":
        arms, m_c, m_t = bernoulli_arms(rng, 2000, 0.10, 0.12), 0.10, 0.12
    else:
        arms, m_c, m_t = exponential_arms(rng, 500, 2.0, 2.3), 2.0, 2.3
    n_c, s_c, ss_c, n_t, s_t, ss_t = arms
    w = welch_from_sums(*arms)
    diff, rel_true = m_t - m_c, m_t / m_c - 1.0
    abs_cov = float(np.mean((w.ci_lo <= diff) & (diff <= w.ci_hi)))

    mc, vc = stats.arm_moments(n_c, s_c, ss_c)
    mt, vt = stats.arm_moments(n_t, s_t, ss_t)
    _, rlo, rhi = stats.delta_relative_arrays(mc, vc, n_c, mt, vt, n_t)
    rel_cov = float(np.mean((rlo <= rel_true) & (rel_true <= rhi)))

    half, _ = stats.mixture_cs_arrays(w.abs_lift, w.se, n_c + n_t)
    any_cov = float(np.mean(np.abs(w.abs_lift - diff) <= half))
    print(
        f"\ncoverage ({data}): Welch abs CI {abs_cov:.2%}, delta-method rel CI {rel_cov:.2%}, "
        f"anytime CI {any_cov:.2%}"
    )
    assert 0.935 <= abs_cov <= 0.965
    assert 0.935 <= rel_cov <= 0.965
    assert any_cov >= 0.95


# ------------------------------------------------------------------ peeking


PEEK_EVERY = 100  # units, both arms together
PEEKS = 100  # 10,000 units per experiment


def bernoulli_paths(
    rng: np.random.Generator, p_c: float, p_t: float
) -> tuple[np.ndarray, ...]:
    """Cumulative sufficient statistics at every peek: units coin-flipped between arms."""
    shape = (EXPERIMENTS, PEEKS)
    n_t = rng.binomial(PEEK_EVERY, 0.5, shape)
    n_c = PEEK_EVERY - n_t
    s_t = rng.binomial(n_t, p_t).astype(float)
    s_c = rng.binomial(n_c, p_c).astype(float)
    cs = [np.cumsum(a, axis=1) for a in (n_c, s_c, n_t, s_t)]
    return cs[0], cs[1], cs[1], cs[2], cs[3], cs[3]


def normal_paths(rng: np.random.Generator, sd: float) -> tuple[np.ndarray, ...]:
    """Cumulative sufficient statistics of raw N(0, sd²) units, one peek-sized batch at a time."""
    out = [np.zeros((EXPERIMENTS, PEEKS)) for _ in range(6)]
    acc = [np.zeros(EXPERIMENTS) for _ in range(6)]
    for j in range(PEEKS):  # vectorised over experiments; 100 batches keep memory small
        x = rng.normal(0.0, sd, (EXPERIMENTS, PEEK_EVERY))
        is_t = rng.random((EXPERIMENTS, PEEK_EVERY)) < 0.5
        xc, xt = np.where(is_t, 0.0, x), np.where(is_t, x, 0.0)
        parts = (~is_t).sum(1), xc.sum(1), (xc * xc).sum(1), is_t.sum(1), xt.sum(1), (xt * xt).sum(1)
        for i, part in enumerate(parts):
            acc[i] = acc[i] + part
            out[i][:, j] = acc[i]
    return tuple(out)


@pytest.mark.parametrize("data", ["bernoulli", "normal"])
def test_peeking_inflates_welch_but_not_the_confidence_sequence(data: str) -> None:
    rng = np.random.default_rng(303)
    paths = bernoulli_paths(rng, 0.1, 0.1) if data == "bernoulli" else normal_paths(rng, 1.0)
    n_c, _, _, n_t, _, _ = paths
    w = welch_from_sums(*paths)
    _, p_any = stats.mixture_cs_arrays(w.abs_lift, w.se, n_c + n_t)
    # The snapshot reports the running minimum, so "ever significant" is the last running min.
    running = np.fmin.accumulate(np.nan_to_num(p_any, nan=1.0), axis=1)

    naive_once = float(np.mean(w.p_value[:, -1] < 0.05))
    naive_ever = float(np.mean(np.any(w.p_value < 0.05, axis=1)))
    anytime_ever = float(np.mean(running[:, -1] < 0.05))
    assert np.array_equal(running[:, -1] < 0.05, np.any(p_any < 0.05, axis=1))
    print(
        f"\npeeking A/A ({data}, {EXPERIMENTS} experiments, {PEEKS} looks every {PEEK_EVERY} "
        f"units): Welch at the end {naive_once:.2%}, Welch at any look {naive_ever:.2%}, "
        f"anytime-valid at any look {anytime_ever:.2%}"
    )
    assert 0.035 <= naive_once <= 0.065
    assert naive_ever >= 0.15  # three times the promised 5%
    assert anytime_ever <= 0.05


def test_confidence_sequence_covers_true_difference_at_every_look() -> None:
    rng = np.random.default_rng(404)
    p_c, p_t = 0.10, 0.12
    paths = bernoulli_paths(rng, p_c, p_t)
    n_c, _, _, n_t, _, _ = paths
    w = welch_from_sums(*paths)
    half, _ = stats.mixture_cs_arrays(w.abs_lift, w.se, n_c + n_t)
    miss = np.abs(w.abs_lift - (p_t - p_c)) > half  # NaN (too few units) compares False
    ever_missed = float(np.mean(np.any(miss, axis=1)))
    fixed_ever_missed = float(np.mean(np.any(
        (w.ci_lo > p_t - p_c) | (w.ci_hi < p_t - p_c), axis=1
    )))
    # And the sequence does find the effect: power by 10,000 units.
    _, p_any = stats.mixture_cs_arrays(w.abs_lift, w.se, n_c + n_t)
    power = float(np.mean(np.nanmin(p_any, axis=1) < 0.05))
    print(
        f"\ntime-uniform miss rate (10% vs 12%): anytime CI {ever_missed:.2%}, "
        f"Welch CI {fixed_ever_missed:.2%}; anytime power by 10k units {power:.2%}"
    )
    assert ever_missed <= 0.05
    assert fixed_ever_missed >= 0.15
    assert power >= 0.3


# ------------------------------------------------------------------ SRM


@pytest.mark.parametrize(
    ("weights", "units"),
    [((0.5, 0.5), 10_000), ((0.2, 0.3, 0.5), 50_000), ((0.25,) * 4, 200_000)],
)
def test_srm_rarely_flags_a_correct_split(weights: tuple[float, ...], units: int) -> None:
    rng = np.random.default_rng(505)
    sims = 20_000
    obs = rng.multinomial(units, weights, size=sims)
    _, p = stats.srm_chi2(obs, weights)
    rate = float(np.mean(p < stats.SRM_ALPHA))
    print(f"\nSRM on correct {weights} splits of {units} units: flagged {rate:.3%} of {sims}")
    assert rate <= 0.003


def test_srm_catches_a_505_495_split_at_200k_units() -> None:
    rng = np.random.default_rng(606)
    obs = rng.multinomial(200_000, (0.505, 0.495), size=EXPERIMENTS)
    _, p = stats.srm_chi2(obs, (0.5, 0.5))
    rate = float(np.mean(p < stats.SRM_ALPHA))
    print(f"\nSRM on a 50.5/49.5 split of 200k units configured 50/50: flagged {rate:.2%}")
    # Noncentrality 20 against the 10.83 cut-off: about 88% power.
    assert rate >= 0.8


# ------------------------------------------------------------------ Holm and chance to beat


def test_holm_controls_familywise_error_across_treatments() -> None:
    rng = np.random.default_rng(707)
    n, p = 2000, 0.1
    s = rng.binomial(n, p, (EXPERIMENTS, 4)).astype(float)  # control + 3 treatments, all equal
    mean, var = stats.arm_moments(n, s, s)
    w = stats.welch_arrays(mean[:, :1], var[:, :1], n, mean[:, 1:], var[:, 1:], n)
    raw_fwer = float(np.mean(np.any(w.p_value < 0.05, axis=1)))
    adjusted = np.array([stats.holm(list(row)) for row in w.p_value], dtype=float)
    holm_fwer = float(np.mean(np.any(adjusted < 0.05, axis=1)))
    print(f"\nA/A/A/A family-wise error: unadjusted {raw_fwer:.2%}, Holm {holm_fwer:.2%}")
    assert raw_fwer >= 0.09
    assert holm_fwer <= 0.065


def test_chance_to_beat_is_calibrated_under_the_null() -> None:
    rng = np.random.default_rng(808)
    w = welch_from_sums(*bernoulli_arms(rng, 2000, 0.1, 0.1))
    ctb = stats.chance_to_beat_arrays(w.abs_lift, w.se)
    high = float(np.mean(ctb > 0.95))
    print(f"\nA/A chance to beat > 95%: {high:.2%} (mean {float(np.mean(ctb)):.3f})")
    assert 0.035 <= high <= 0.065
    assert abs(float(np.mean(ctb)) - 0.5) < 0.02


# ------------------------------------------------------------------ small samples


@pytest.mark.parametrize(("data", "z_below", "t_within"), [
    ("normal", 0.93, (0.94, 0.965)),
    ("lognormal", 0.90, (0.91, 0.95)),
])
def test_relative_interval_covers_better_with_student_t_at_5_units(
    data: str, z_below: float, t_within: tuple[float, float]
) -> None:
    """At 5 units per arm the delta-method interval with a normal quantile covers ~0.92
    (normal data) or ~0.88 (lognormal); Student t with the Welch df moves it toward 0.95."""
    rng = np.random.default_rng(404)
    reps, n = 20_000, 5
    if data == "normal":
        m_c, m_t = 10.0, 11.0
        c, t = rng.normal(m_c, 3.0, (reps, n)), rng.normal(m_t, 3.0, (reps, n))
    else:  # mean of lognormal(mu, 0.6) is exp(mu + 0.18)
        m_c, m_t = 10.0, 12.0
        c = rng.lognormal(math.log(m_c) - 0.18, 0.6, (reps, n))
        t = rng.lognormal(math.log(m_t) - 0.18, 0.6, (reps, n))
    true = m_t / m_c - 1.0
    s = [x.sum(1) for x in (c, c * c, t, t * t)]
    mc, vc = stats.arm_moments(n, s[0], s[1])
    mt, vt = stats.arm_moments(n, s[2], s[3])
    rel, lo, hi = stats.delta_relative_arrays(mc, vc, n, mt, vt, n)
    _, se, _ = stats.delta_relative_se_arrays(mc, vc, n, mt, vt, n)
    cov_t = float(np.mean((lo <= true) & (true <= hi)))
    cov_z = float(np.mean(np.abs(rel - true) <= sps.norm.ppf(0.975) * se))
    print(f"\nrelative CI coverage, {data}, 5 units per arm, {reps} reps: "
          f"normal quantile {cov_z:.4f}, Student t (Welch df) {cov_t:.4f}")
    assert cov_z < z_below
    assert t_within[0] <= cov_t <= t_within[1]
    assert abs(cov_t - 0.95) < abs(cov_z - 0.95)
