"""Constrained Thompson sampling: the best objective among the variants meeting every bound,
checked against closed forms, a per-draw brute force over `Constraint.violation`, and Φ."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from litmus.core.bandit import (
    MIN_DRAWS,
    ConstraintStat,
    constrained_p_best_arrays,
    constraint_arrays,
    p_best_arrays,
    posterior_draws,
    update,
)
from litmus.core.models import ArmStats, BanditSettings, Constraint
from tests.unit.test_bandit import beta_p_greater, binary

T0 = "2026-01-01T00:00:00Z"
INF = math.inf
COST = Constraint("cost_usd", max=1.5)
LATENCY = Constraint("latency_ms", max=1500.0)


def mc_tol(p: float, draws: int = MIN_DRAWS) -> float:
    """Four standard errors of a Monte Carlo proportion (with a floor for p near 0 or 1)."""
    return 4 * math.sqrt(max(p * (1 - p), 1e-4) / draws)


def cons(values: list[list[float]], ses: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(values, dtype=np.float64), np.array(ses, dtype=np.float64)


# --- deterministic feasible sets (se = 0) ------------------------------------------------------


def test_no_constraints_is_plain_thompson_sampling_draw_for_draw() -> None:
    n, s = np.array([300, 300, 300]), np.array([20.0, 25.0, 22.0])
    plain = p_best_arrays(n, s, s, "binary", "maximize", 5000, np.random.default_rng(1))
    got, feas = constrained_p_best_arrays(n, s, s, "binary", "maximize", np.zeros((0, 3)),
                                          np.zeros((0, 3)), np.zeros(0), np.zeros(0), 5000,
                                          np.random.default_rng(1))
    np.testing.assert_array_equal(got, plain)
    assert feas.shape == (0, 3)
    arms = {k: binary(300, c) for k, c in zip("abc", s, strict=True)}
    assert update(arms, BanditSettings(), np.random.default_rng(2), None, T0, ()) == update(
        arms, BanditSettings(), np.random.default_rng(2), None, T0)


def test_infeasible_best_arm_drops_out_and_the_rest_match_the_closed_form() -> None:
    """With se = 0 the feasible set is fixed: the best arm "c" costs too much, so P(best) of the
    other two is the two-arm Beta closed form, and "c" never wins."""
    n, wins = np.array([400, 400, 400]), np.array([40.0, 52.0, 200.0])
    value, se = cons([[1.0, 1.2, 3.0]], [[0.0, 0.0, 0.0]])
    p, feas = constrained_p_best_arrays(n, wins, wins, "binary", "maximize", value, se,
                                        [1.5], [np.nan], MIN_DRAWS, np.random.default_rng(3))
    exact = beta_p_greater(1 + 40, 1 + 360, 1 + 52, 1 + 348)
    assert p[2] == 0.0
    assert p[1] == pytest.approx(exact, abs=mc_tol(exact))
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(feas, [[1.0, 1.0, 0.0]])


def test_a_single_feasible_variant_wins_every_draw() -> None:
    n, wins = np.array([500, 500, 500, 500]), np.array([350.0, 380.0, 400.0, 410.0])
    # Cost feasible for a, b, c; latency for c and d: only c meets both.
    value, se = cons([[0.2, 0.5, 1.0, 3.0], [2000.0, 1600.0, 1300.0, 1400.0]], [[0.0] * 4] * 2)
    p, feas = constrained_p_best_arrays(n, wins, wins, "binary", "maximize", value, se,
                                        [1.5, 1500.0], [np.nan, np.nan], 2000,
                                        np.random.default_rng(4))
    np.testing.assert_array_equal(p, [0.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(feas, [[1, 1, 1, 0], [0, 0, 1, 1]])


def test_all_infeasible_the_smallest_violation_scaled_by_its_bound_wins() -> None:
    """a: cost 2.4 (0.6 over, scaled), latency 1510 (0.0067): 0.607 in all. b: cost fine,
    latency 1800 (0.2). Scaled, b is least infeasible; unscaled (0.9 + 10 against 300) it would
    be a. The better objective (a) must not matter."""
    n, wins = np.array([1000, 1000]), np.array([900.0, 100.0])
    value, se = cons([[2.4, 1.5], [1510.0, 1800.0]], [[0.0, 0.0], [0.0, 0.0]])
    p, feas = constrained_p_best_arrays(n, wins, wins, "binary", "maximize", value, se,
                                        [1.5, 1500.0], [np.nan, np.nan], 1000,
                                        np.random.default_rng(5))
    assert COST.violation(2.4) + LATENCY.violation(1510.0) > LATENCY.violation(1800.0)
    np.testing.assert_array_equal(p, [0.0, 1.0])
    np.testing.assert_array_equal(feas, [[0.0, 1.0], [0.0, 0.0]])


def test_equal_violations_go_to_the_better_objective() -> None:
    n, wins = np.array([2000, 2000]), np.array([200.0, 1000.0])
    value, se = cons([[2.0, 2.0]], [[0.0, 0.0]])
    p, _ = constrained_p_best_arrays(n, wins, wins, "binary", "maximize", value, se, [1.5],
                                     [np.nan], 1000, np.random.default_rng(6))
    np.testing.assert_array_equal(p, [0.0, 1.0])


def test_min_bounds_and_minimize_goal() -> None:
    """A `min` bound (quality at least 0.75) with a cost objective to minimise: the cheapest arm
    is below the quality floor, so the cheapest of the rest wins."""
    rng = np.random.default_rng(7)
    costs = {"a": 0.2, "b": 0.5, "c": 1.0}
    samples = {k: rng.normal(mu, 0.05, 2000) for k, mu in costs.items()}
    n = np.array([2000] * 3)
    s = np.array([v.sum() for v in samples.values()])
    ss = np.array([(v**2).sum() for v in samples.values()])
    value, se = cons([[0.70, 0.76, 0.80]], [[0.0, 0.0, 0.0]])
    p, feas = constrained_p_best_arrays(n, s, ss, "continuous", "minimize", value, se, [np.nan],
                                        [0.75], 2000, np.random.default_rng(8))
    np.testing.assert_array_equal(p, [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(feas, [[0.0, 1.0, 1.0]])


# --- against a per-draw brute force and closed forms ---------------------------------------------


def test_matches_a_per_draw_brute_force_over_constraint_violation() -> None:
    """Same draws (same seed, same order: the objective's posterior, then the statistics'
    standard normals), winners decided one draw at a time with `Constraint.violation`."""
    draws = 400
    n, wins = np.array([300, 320, 280, 310]), np.array([210.0, 240.0, 225.0, 250.0])
    constraints = [Constraint("cost_usd", max=1.5), Constraint("latency_ms", max=1500.0),
                   Constraint("quality_floor", min=0.5)]
    value = np.array([[1.2, 1.45, 1.6, 1.4], [1400.0, 1520.0, 1450.0, 1700.0],
                      [0.55, 0.45, 0.6, 0.52]])
    se = np.array([[0.1, 0.1, 0.1, 0.2], [80.0, 90.0, 60.0, 150.0], [0.05, 0.05, 0.05, 0.05]])
    hi = np.array([1.5, 1500.0, np.nan])
    lo = np.array([np.nan, np.nan, 0.5])
    p, feas = constrained_p_best_arrays(n, wins, wins, "binary", "maximize", value, se, hi, lo,
                                        draws, np.random.default_rng(9))

    rng = np.random.default_rng(9)
    obj = posterior_draws(n, wins, wins, "binary", draws, rng)
    stat = value + se * rng.standard_normal((draws, 3, 4))
    won = np.zeros(4)
    met = np.zeros((3, 4))
    for d in range(draws):
        ok = [[(c.max is None or stat[d, i, j] <= c.max) and (c.min is None or stat[d, i, j] >= c.min)
               for j in range(4)] for i, c in enumerate(constraints)]
        met += np.array(ok)
        feasible = [j for j in range(4) if all(ok[i][j] for i in range(3))]
        if feasible:
            winner = max(feasible, key=lambda j: obj[d, j])
        else:
            winner = min(range(4), key=lambda j: sum(c.violation(stat[d, i, j])
                                                      for i, c in enumerate(constraints)))
        won[winner] += 1
    np.testing.assert_allclose(p, won / draws, atol=1e-12)
    np.testing.assert_allclose(feas, met / draws, atol=1e-12)
    assert 0 < p.max() < 1  # the draws really were mixed


def test_p_feasible_is_phi_of_the_standardised_distance_to_the_bound() -> None:
    n, wins = np.array([100, 100, 100]), np.array([50.0, 50.0, 50.0])
    value = np.array([[1.3, 1.5, 1.7], [0.9, 1.0, 1.2]])
    se = np.array([[0.2, 0.1, 0.4], [0.05, 0.3, 0.1]])
    _, feas = constrained_p_best_arrays(n, wins, wins, "binary", "maximize", value, se,
                                        [1.5, np.nan], [np.nan, 1.0], MIN_DRAWS,
                                        np.random.default_rng(10))
    expected = np.vstack([norm.cdf((1.5 - value[0]) / se[0]), norm.cdf((value[1] - 1.0) / se[1])])
    for got, want in zip(feas.ravel(), expected.ravel(), strict=True):
        assert got == pytest.approx(want, abs=mc_tol(want))


def test_uncertain_feasibility_splits_p_best_as_the_product_says() -> None:
    """b is clearly better than a but feasible with probability Φ(1) ≈ 0.84, a surely feasible:
    b wins exactly when its sampled cost is within the bound."""
    n, wins = np.array([5000, 5000]), np.array([1000.0, 2500.0])
    value, se = cons([[1.0, 1.4]], [[0.0, 0.1]])
    p, _ = constrained_p_best_arrays(n, wins, wins, "binary", "maximize", value, se, [1.5],
                                     [np.nan], MIN_DRAWS, np.random.default_rng(11))
    want = float(norm.cdf(1.0))
    assert p[1] == pytest.approx(want, abs=mc_tol(want))


def test_no_data_is_uncertain_not_infeasible() -> None:
    """A variant without a value or se for a constraint is an even chance either side of it."""
    n, wins = np.array([500, 500]), np.array([300.0, 400.0])
    value, se = cons([[1.0, np.nan]], [[0.0, np.nan]])
    p, feas = constrained_p_best_arrays(n, wins, wins, "binary", "maximize", value, se, [1.5],
                                        [np.nan], MIN_DRAWS, np.random.default_rng(12))
    assert feas[0, 0] == 1.0
    assert feas[0, 1] == pytest.approx(0.5, abs=mc_tol(0.5))
    assert p[1] == pytest.approx(0.5, abs=mc_tol(0.5))
    # An infinite se (a quantile over too few events) reads the same way.
    _, feas_inf = constrained_p_best_arrays(n, wins, wins, "binary", "maximize", value,
                                            np.array([[0.0, np.inf]]), [1.5], [np.nan],
                                            MIN_DRAWS, np.random.default_rng(12))
    assert feas_inf[0, 1] == pytest.approx(0.5, abs=mc_tol(0.5))


# --- shapes, batches, seeds --------------------------------------------------------------------


def test_batches_have_the_right_shapes_and_rows_match_single_runs() -> None:
    rng = np.random.default_rng(13)
    k, c = 4, 2
    n = rng.integers(200, 2000, (3, 5, k))
    wins = rng.binomial(n, 0.3).astype(np.float64)
    value = rng.normal(1.4, 0.2, (3, 5, c, k))
    se = rng.uniform(0.0, 0.1, (3, 5, c, k))
    hi, lo = np.array([1.5, 1.5]), np.array([np.nan, np.nan])
    p, feas = constrained_p_best_arrays(n, wins, wins, "binary", "maximize", value, se, hi, lo,
                                        MIN_DRAWS, np.random.default_rng(14))
    assert p.shape == (3, 5, k) and feas.shape == (3, 5, c, k)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-12)
    for i in range(3):
        for j in range(5):
            one, one_feas = constrained_p_best_arrays(n[i, j], wins[i, j], wins[i, j], "binary",
                                                      "maximize", value[i, j], se[i, j], hi, lo,
                                                      MIN_DRAWS, np.random.default_rng(100 + i))
            for a, b in zip(p[i, j], one, strict=True):
                assert a == pytest.approx(b, abs=2 * mc_tol((a + b) / 2))
            for a, b in zip(feas[i, j].ravel(), one_feas.ravel(), strict=True):
                assert a == pytest.approx(b, abs=2 * mc_tol((a + b) / 2))
    # A leading axis of one is the unbatched computation, draw for draw.
    single = constrained_p_best_arrays(n[0, 0], wins[0, 0], wins[0, 0], "binary", "maximize",
                                       value[0, 0], se[0, 0], hi, lo, 500,
                                       np.random.default_rng(15))
    batched = constrained_p_best_arrays(n[:1, 0], wins[:1, 0], wins[:1, 0], "binary",
                                        "maximize", value[:1, 0], se[:1, 0], hi, lo, 500,
                                        np.random.default_rng(15))
    np.testing.assert_array_equal(batched[0][0], single[0])
    np.testing.assert_array_equal(batched[1][0], single[1])


def test_per_batch_row_bounds_broadcast() -> None:
    n, wins = np.array([[400, 400], [400, 400]]), np.array([[100.0, 300.0], [100.0, 300.0]])
    value = np.array([[[1.0, 2.0]], [[1.0, 2.0]]])
    se = np.zeros_like(value)
    p, _ = constrained_p_best_arrays(n, wins, wins, "binary", "maximize", value, se,
                                     [[1.5], [2.5]], [[np.nan], [np.nan]], 500,
                                     np.random.default_rng(16))
    np.testing.assert_array_equal(p, [[1.0, 0.0], [0.0, 1.0]])


def test_bad_shapes_and_unbounded_constraints_are_errors() -> None:
    n = np.array([10, 10])
    with pytest.raises(ValueError):
        constrained_p_best_arrays(n, n, n, "binary", "maximize", np.zeros((1, 3)),
                                  np.zeros((1, 3)), [1.0], [np.nan], 10, np.random.default_rng(0))
    with pytest.raises(ValueError):
        constrained_p_best_arrays(n, n, n, "binary", "maximize", np.zeros((1, 2)),
                                  np.zeros((1, 2)), [np.nan], [np.nan], 10, np.random.default_rng(0))
    with pytest.raises(ValueError):
        constraint_arrays(["a"], [(Constraint("x"), {})])


# --- the mapping-level update ------------------------------------------------------------------


ARMS = {"small": binary(3000, 2100), "mid": binary(3000, 2280), "large": binary(3000, 2400),
        "huge": binary(3000, 2460)}
STATS: list[ConstraintStat] = [
    (COST, {"small": (0.2, 0.001), "mid": (0.5, 0.002), "large": (1.0, 0.004),
            "huge": (3.0, 0.01)}),
    (LATENCY, {"small": (400.0, 8.0), "mid": (700.0, 12.0), "large": (1300.0, 25.0),
               "huge": (2600.0, 50.0)}),
]


def test_update_picks_the_best_feasible_variant_and_reports_p_feasible() -> None:
    state = update(ARMS, BanditSettings(), np.random.default_rng(17), None, T0, STATS)
    assert state.top_variant == "large"
    assert state.converged and state.converged_variant == "large"
    assert state.p_best["huge"] == 0.0
    assert state.weights["huge"] == pytest.approx(BanditSettings().floor, abs=1e-12)
    assert list(state.p_feasible) == list(ARMS)
    assert state.p_feasible["large"] == {"cost_usd": 1.0, "latency_ms": 1.0}
    assert state.p_feasible["huge"] == {"cost_usd": 0.0, "latency_ms": 0.0}
    # Without the constraints the plain bandit prefers the best quality.
    plain = update(ARMS, BanditSettings(), np.random.default_rng(17), None, T0)
    assert plain.top_variant == "huge" and plain.p_feasible == {}


def test_update_is_the_array_function_on_the_same_draws() -> None:
    keys = list(ARMS)
    metrics, value, se, hi, lo = constraint_arrays(keys, STATS)
    assert metrics == ["cost_usd", "latency_ms"]
    n = np.array([a.n for a in ARMS.values()])
    s = np.array([a.sum for a in ARMS.values()])
    p, feas = constrained_p_best_arrays(n, s, s, "binary", "maximize", value, se, hi, lo,
                                        MIN_DRAWS, np.random.default_rng(18))
    state = update(ARMS, BanditSettings(draws=10), np.random.default_rng(18), None, T0, STATS)
    assert state.p_best == {k: float(v) for k, v in zip(keys, p, strict=True)}
    assert state.p_feasible["mid"]["latency_ms"] == float(feas[1, 1])
    assert update(ARMS, BanditSettings(), np.random.default_rng(18), None, T0, STATS) == update(
        ARMS, BanditSettings(), np.random.default_rng(18), None, T0, STATS)


def test_update_with_a_variant_missing_from_a_constraint_treats_it_as_unknown() -> None:
    arms = {"a": binary(1000, 500), "b": binary(1000, 700)}
    stats: list[ConstraintStat] = [(COST, {"a": (1.0, 0.0), "b": (None, None)})]
    state = update(arms, BanditSettings(), np.random.default_rng(19), None, T0, stats)
    assert state.p_feasible["b"]["cost_usd"] == pytest.approx(0.5, abs=mc_tol(0.5))
    missing: list[ConstraintStat] = [(COST, {"a": (1.0, 0.0)})]
    again = update(arms, BanditSettings(), np.random.default_rng(19), None, T0, missing)
    assert again == state


def test_a_max_and_a_min_on_one_metric_share_one_row() -> None:
    """A band 0.5 ≤ cost ≤ 1.5: one p_feasible entry per metric, met only inside the band."""
    stats: list[ConstraintStat] = [
        (Constraint("cost_usd", max=1.5), {"a": (0.2, 0.0), "b": (1.0, 0.0), "c": (2.0, 0.0)}),
        (Constraint("cost_usd", min=0.5), {"a": (0.2, 0.0), "b": (1.0, 0.0), "c": (2.0, 0.0)}),
    ]
    metrics, _, _, hi, lo = constraint_arrays(["a", "b", "c"], stats)
    assert metrics == ["cost_usd"] and hi.tolist() == [1.5] and lo.tolist() == [0.5]
    arms = {"a": binary(800, 700), "b": binary(800, 400), "c": binary(800, 750)}
    state = update(arms, BanditSettings(), np.random.default_rng(20), None, T0, stats)
    assert state.p_feasible == {"a": {"cost_usd": 0.0}, "b": {"cost_usd": 1.0},
                                "c": {"cost_usd": 0.0}}
    assert state.top_variant == "b" and state.p_best["b"] == 1.0


def test_burn_in_keeps_equal_weights_with_constraints() -> None:
    arms = {**ARMS, "huge": ArmStats(50, 45.0, 45.0)}
    state = update(arms, BanditSettings(), np.random.default_rng(21), None, T0, STATS)
    assert state.burn_in and not state.converged
    assert set(state.weights.values()) == {0.25}
    assert state.p_feasible["huge"]["cost_usd"] == 0.0
