"""Thompson-sampling bandit core: posteriors, P(best), floored weights, burn-in, convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import betaln
from scipy.stats import norm

from litmus.core.bandit import (
    MIN_DRAWS,
    BanditState,
    floored_weights,
    p_best,
    p_best_arrays,
    reward_arms,
    update,
    update_seed,
)
from litmus.core.models import ArmStats, BanditSettings, Goal, RewardType
from litmus.core.snapshot import MetricAgg
from litmus.core.unitfold import ExperimentUnits

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:00:10Z"


def binary(n: int, conversions: float) -> ArmStats:
    """Arm stats for 0/1 unit rewards (sum_sq equals sum)."""
    return ArmStats(n, conversions, conversions)


def continuous(values: np.ndarray) -> ArmStats:
    """Arm stats from raw unit values, as SQL would aggregate them."""
    return ArmStats(len(values), float(values.sum()), float((values**2).sum()))


def beta_p_greater(a1: float, b1: float, a2: float, b2: float) -> float:
    """Closed form P(X2 > X1) for X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2), integer a2 (E. Miller)."""
    total = 0.0
    for i in range(int(a2)):
        total += math.exp(
            betaln(a1 + i, b1 + b2) - math.log(b2 + i) - betaln(1 + i, b2) - betaln(a1, b1)
        )
    return total


# --- P(best) against closed forms ------------------------------------------------------------


def test_binary_p_best_matches_closed_form() -> None:
    arms = {"a": binary(400, 40), "b": binary(400, 52)}
    got = p_best(arms, BanditSettings(), np.random.default_rng(1))
    exact = beta_p_greater(1 + 40, 1 + 360, 1 + 52, 1 + 348)
    se = math.sqrt(exact * (1 - exact) / MIN_DRAWS)
    assert got["b"] == pytest.approx(exact, abs=4 * se)
    assert got["a"] + got["b"] == pytest.approx(1.0, abs=1e-12)


def test_continuous_p_best_matches_normal_approximation_for_large_n() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(10.0, 3.0, 5000)
    b = rng.normal(10.08, 3.0, 5000)
    arms = {"a": continuous(a), "b": continuous(b)}
    got = p_best(arms, BanditSettings(reward_type="continuous"), np.random.default_rng(3))
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    expected = float(norm.cdf((b.mean() - a.mean()) / se))
    assert got["b"] == pytest.approx(expected, abs=0.015)


def test_identical_arms_share_p_best_evenly() -> None:
    arms = {k: binary(1000, 50) for k in "abcde"}
    got = p_best(arms, BanditSettings(), np.random.default_rng(4))
    # 4 standard errors of a 10k-draw proportion around 0.2.
    assert all(abs(p - 0.2) < 4 * math.sqrt(0.2 * 0.8 / MIN_DRAWS) for p in got.values())


def test_empty_arms_have_uniform_prior() -> None:
    got = p_best({k: ArmStats() for k in "abcd"}, BanditSettings(), np.random.default_rng(5))
    assert all(abs(p - 0.25) < 0.02 for p in got.values())


def test_production_uses_at_least_min_draws() -> None:
    # Asking for 10 draws must not make P(best) a multiple of 0.1.
    arms = {"a": binary(100, 10), "b": binary(100, 11)}
    got = p_best(arms, BanditSettings(draws=10), np.random.default_rng(6))
    assert got["a"] * 10 != round(got["a"] * 10)
    assert got["a"] * MIN_DRAWS == pytest.approx(round(got["a"] * MIN_DRAWS))


def test_batched_p_best_rows_sum_to_one() -> None:
    rng = np.random.default_rng(7)
    n = rng.integers(0, 500, (3, 4, 6))
    s = rng.binomial(n, 0.1)
    p = p_best_arrays(n, s, s, "binary", "maximize", 500, rng)
    assert p.shape == (3, 4, 6)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-12)


def test_double_conversions_are_clipped_to_units() -> None:
    # 100 units with a reward total of 150 (some converted twice) means every unit converted.
    a = p_best(
        {"a": binary(100, 150), "b": binary(100, 40)}, BanditSettings(), np.random.default_rng(8)
    )
    b = p_best(
        {"a": binary(100, 100), "b": binary(100, 40)}, BanditSettings(), np.random.default_rng(8)
    )
    assert a == b


def test_same_seed_same_answer() -> None:
    arms = {"a": binary(300, 20), "b": binary(300, 25), "c": binary(300, 22)}
    s = BanditSettings()
    first = update(arms, s, np.random.default_rng(9), None, T0)
    again = update(arms, s, np.random.default_rng(9), None, T0)
    assert first == again


def test_no_arms_is_an_error() -> None:
    with pytest.raises(ValueError):
        update({}, BanditSettings(), np.random.default_rng(0), None, T0)


# --- goals and reward types ------------------------------------------------------------------


def test_minimize_picks_the_smallest_rate() -> None:
    arms = {"a": binary(2000, 100), "b": binary(2000, 60), "c": binary(2000, 140)}
    state = update(arms, BanditSettings(goal="minimize"), np.random.default_rng(10), None, T0)
    assert state.top_variant == "b"
    assert state.p_best["b"] > 0.95
    assert max(state.weights, key=lambda k: state.weights[k]) == "b"


def test_minimize_continuous_picks_the_lowest_latency() -> None:
    rng = np.random.default_rng(11)
    latency = {"fast": 80.0, "mid": 95.0, "slow": 120.0}
    arms = {k: continuous(rng.gamma(4.0, mu / 4.0, 300)) for k, mu in latency.items()}
    s = BanditSettings(reward_type="continuous", goal="minimize")
    state = update(arms, s, np.random.default_rng(12), None, T0)
    assert state.top_variant == "fast"
    assert state.p_best["fast"] > 0.95


def test_continuous_maximize_picks_the_best_mean() -> None:
    rng = np.random.default_rng(13)
    means = {"a": 1.0, "b": 1.1, "c": 1.3, "d": 1.05}
    arms = {k: continuous(rng.normal(mu, 1.0, 1500)) for k, mu in means.items()}
    s = BanditSettings(reward_type="continuous")
    state = update(arms, s, np.random.default_rng(14), None, T0)
    assert state.top_variant == "c"
    assert state.p_best["c"] > 0.95
    assert state.converged and state.converged_variant == "c"


@pytest.mark.parametrize("n", [0, 1, 2])
def test_continuous_handles_tiny_samples(n: int) -> None:
    arms = {"a": continuous(np.full(n, 5.0)), "b": continuous(np.arange(n, dtype=float))}
    s = BanditSettings(reward_type="continuous", burn_in_units=0, min_units=0)
    state = update(arms, s, np.random.default_rng(15), None, T0)
    assert all(math.isfinite(p) for p in state.p_best.values())
    assert sum(state.weights.values()) == pytest.approx(1.0, abs=1e-12)


def test_continuous_with_no_spread_is_even() -> None:
    arms = {"a": continuous(np.zeros(50)), "b": continuous(np.zeros(50))}
    got = p_best(arms, BanditSettings(reward_type="continuous"), np.random.default_rng(16))
    assert abs(got["a"] - 0.5) < 0.03


# --- what a binary arm's successes are --------------------------------------------------------


def test_binary_arms_count_units_above_zero_not_units_with_reward_events() -> None:
    """With a 0 sent for every failure, every unit has a reward event: the successes are the
    units whose total is above 0, given apart from the metric's aggregate."""
    every_unit = MetricAgg(count=500, units=500, sum=60.0, sum_sq=60.0)
    arms = reward_arms(BanditSettings(), {"a": 500, "b": 10}, {"a": every_unit}, {"a": 60})
    assert arms == {"a": ArmStats(500, 60.0, 60.0), "b": ArmStats(10, 0.0, 0.0)}
    # Continuous rewards read the unit-level sums over every exposed unit.
    cont = reward_arms(BanditSettings(reward_type="continuous"), {"a": 800}, {"a": every_unit}, {})
    assert cont == {"a": ArmStats(800, 60.0, 60.0)}


def test_zero_one_rewards_and_success_only_rewards_give_the_same_p_best() -> None:
    """The same users folded once with a 0 or 1 reward each, once with only the 1s: the
    per-unit fold counts the same units above 0, the arms are the same, and P(best) on the same
    seed is identical, and right."""
    rng = np.random.default_rng(8)
    n, names = 4000, ["model_a", "model_b", "model_c", "model_d"]
    keys = np.arange(n, dtype=np.int64)
    arm = rng.integers(0, 4, n)
    success = rng.random(n) < np.array([0.04, 0.06, 0.08, 0.25])[arm]
    settings = BanditSettings(burn_in_units=50, min_units=100)
    seen = []
    for zeros in (True, False):
        st = ExperimentUnits()
        st.fold_exposures(keys, arm, np.zeros(n, np.int64), keys, None)
        sel = np.ones(n, np.bool_) if zeros else success
        st.fold_metrics("conversion", keys[sel], success[sel].astype(np.float64), None)
        t = st.arm_totals()
        exposed = {names[a]: units for a, (units, _) in t.exposures.items()}
        per = {names[a]: v for (a, _), v in t.metrics.items()}
        arms = reward_arms(settings, exposed,
                           {k: MetricAgg(int(v[1]), int(v[0]), v[2], v[3]) for k, v in per.items()},
                           {k: int(v[4]) for k, v in per.items()})
        seen.append((arms, update(arms, settings, np.random.default_rng(update_seed("s", 4)),
                                  None, T0)))
    assert seen[0] == seen[1]
    arms, state = seen[0]
    assert arms["model_d"].sum == success[arm == 3].sum()
    assert state.top_variant == "model_d" and state.p_best["model_d"] > 0.95


def test_update_seed_depends_on_the_salt_and_the_update_number_only() -> None:
    """Same salt and update number: the same draws, so the same weights; another update
    number or another experiment: other draws."""
    arms = {"a": binary(300, 30), "b": binary(300, 33)}
    s = BanditSettings(burn_in_units=10, min_units=10)

    def run(salt: str, n: int) -> BanditState:
        return update(arms, s, np.random.default_rng(update_seed(salt, n)), None, T0)

    assert update_seed("exp-1", 7) == update_seed("exp-1", 7)
    assert run("exp-1", 7) == run("exp-1", 7)
    assert run("exp-1", 7).p_best != run("exp-1", 8).p_best
    assert run("exp-1", 7).p_best != run("exp-2", 7).p_best


# --- weights, floor, burn-in -----------------------------------------------------------------


def test_burn_in_gives_equal_weights() -> None:
    # A huge difference, but arm "c" has not reached the burn-in yet.
    arms = {"a": binary(5000, 50), "b": binary(5000, 900), "c": binary(99, 5)}
    state = update(arms, BanditSettings(burn_in_units=100), np.random.default_rng(17), None, T0)
    assert state.burn_in
    assert state.weights == {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    assert not state.converged
    assert state.top_variant == "b"  # P(best) is still reported during burn-in


def test_after_burn_in_weights_follow_p_best_with_floor() -> None:
    arms = {"a": binary(5000, 50), "b": binary(5000, 900), "c": binary(100, 5)}
    s = BanditSettings(burn_in_units=100, floor=0.05)
    state = update(arms, s, np.random.default_rng(18), None, T0)
    assert not state.burn_in
    for key, w in state.weights.items():
        assert w == pytest.approx(0.05 + (1 - 3 * 0.05) * state.p_best[key], abs=1e-12)
    assert state.weights["a"] == pytest.approx(0.05, abs=1e-12)


def test_floor_too_large_is_clamped_to_equal_weights() -> None:
    w = floored_weights(np.array([0.9, 0.1, 0.0, 0.0]), 0.5)
    np.testing.assert_allclose(w, 0.25, atol=1e-15)


arm_stats = st.builds(
    lambda n, rate, sq: ArmStats(n, n * rate, n * rate * sq),
    st.integers(0, 1_000_000),
    st.floats(0.0, 3.0),
    st.floats(0.0, 50.0),
)


@settings(max_examples=60, deadline=None)
@given(
    arms=st.lists(arm_stats, min_size=1, max_size=8),
    floor=st.floats(0.0, 1.0),
    burn_in=st.integers(0, 2000),
    reward_type=st.sampled_from(["binary", "continuous"]),
    goal=st.sampled_from(["maximize", "minimize"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_weights_sum_to_one_and_respect_the_floor(
    arms: list[ArmStats],
    floor: float,
    burn_in: int,
    reward_type: RewardType,
    goal: Goal,
    seed: int,
) -> None:
    mapping = {f"v{i}": a for i, a in enumerate(arms)}
    s = BanditSettings(floor=floor, burn_in_units=burn_in, reward_type=reward_type, goal=goal)
    state = update(mapping, s, np.random.default_rng(seed), None, T0)
    k = len(arms)
    w = np.array(list(state.weights.values()))
    assert list(state.weights) == list(mapping)
    assert abs(math.fsum(w) - 1.0) <= 1e-12
    assert w.min() >= min(floor, 1.0 / k) - 1e-12
    assert abs(math.fsum(state.p_best.values()) - 1.0) <= 1e-12
    assert state.top_variant in mapping


@settings(max_examples=200, deadline=None)
@given(
    p=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12),
    floor=st.floats(-0.1, 1.0),
)
def test_floored_weights_property(p: list[float], floor: float) -> None:
    w = floored_weights(np.array(p), floor)
    f = min(max(floor, 0.0), 1.0 / len(p))
    assert abs(math.fsum(w) - 1.0) <= 1e-12
    assert w.min() >= f - 1e-12


# --- convergence -----------------------------------------------------------------------------


CLEAR = {"a": binary(3000, 120), "b": binary(3000, 150), "c": binary(3000, 300)}
EVEN = {"a": binary(6000, 300), "b": binary(6000, 300), "c": binary(6000, 300)}


def test_converges_when_p_best_crosses_the_threshold() -> None:
    state = update(CLEAR, BanditSettings(), np.random.default_rng(19), None, T0)
    assert state.converged
    assert state.converged_at == T0
    assert state.converged_variant == "c" == state.top_variant


def test_no_convergence_below_min_units() -> None:
    arms = {**CLEAR, "d": binary(150, 3)}
    state = update(arms, BanditSettings(min_units=200), np.random.default_rng(20), None, T0)
    assert not state.burn_in
    assert max(state.p_best.values()) >= 0.95
    assert not state.converged and state.converged_at is None


def test_converged_at_is_recorded_once_and_kept() -> None:
    s = BanditSettings()
    rng = np.random.default_rng(21)
    first = update(CLEAR, s, rng, None, T0)
    assert first.converged_at == T0
    # Still converged at a later tick: the time does not move.
    second = update(CLEAR, s, rng, first, T1)
    assert second.converged_at == T0
    # Even if the evidence later fades, convergence is not reset.
    third = update(EVEN, s, rng, second, "2026-01-02T00:00:00Z")
    assert max(third.p_best.values()) < 0.95
    assert third.converged and third.converged_at == T0 and third.converged_variant == "c"


def test_not_converged_previous_state_does_not_block_convergence() -> None:
    s = BanditSettings()
    rng = np.random.default_rng(22)
    before = update(EVEN, s, rng, None, T0)
    assert not before.converged
    after = update(CLEAR, s, rng, before, T1)
    assert after.converged and after.converged_at == T1


def test_state_is_frozen() -> None:
    state = update(CLEAR, BanditSettings(), np.random.default_rng(23), None, T0)
    assert isinstance(state, BanditState)
    with pytest.raises(AttributeError):
        state.converged = False  # type: ignore[misc]
