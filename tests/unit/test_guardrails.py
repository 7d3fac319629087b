"""The guardrail trip decision (litmus/core/guardrails.py): against closed forms, and in
simulation over many seeds and looks — false trips under A/A watched every 5 s for two hours,
and how fast a real harm (error rate 1% -> 3%, p99 latency 800 -> 1200 ms) trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from litmus.core.guardrails import (
    MIN_UNITS,
    Guardrail,
    HarmArrays,
    Trip,
    describe,
    evaluate,
    guardrail_names,
    guardrails_of,
    harm_arrays,
    snapshot_block,
    trip_of,
)
from litmus.core.models import Experiment, Variant
from litmus.core.quantiles import QuantileEstimate, order_statistic_ranks
from litmus.core.stats import mixture_cs_arrays

Z95 = 1.959963984540054
LOOK_S = 5  # a recompute every 5 s
RATE = 100  # units (or events) per second per arm
PER_LOOK = RATE * LOOK_S


def exp(guardrails: list[object], definitions: dict[str, object] | None = None,
        n_variants: int = 2) -> Experiment:
    return Experiment(
        id="e", key="e", name="e", description="", owner_team="t", status="running",
        variants=tuple(Variant(f"model_{'abc'[i]}", 1 / n_variants) for i in range(n_variants)),
        metrics={"primary": "conversion", "guardrails": guardrails,
                 "definitions": definitions or {}})


def test_bare_names_and_objects_read_alike() -> None:
    gs = guardrails_of({"guardrails": ["errors", {"metric": "latency_ms", "margin": 0.1,
                                                  "action": "pause"}]})
    assert gs == (Guardrail("errors", 0.0, "alert"), Guardrail("latency_ms", 0.1, "pause"))
    assert guardrail_names({"guardrails": ["a", {"metric": "b"}]}) == ["a", "b"]
    assert guardrails_of({}) == ()


def test_harm_matches_the_delta_method_and_the_mixture_interval() -> None:
    c, sc, t, st, n = 0.01, 0.001, 0.015, 0.0012, 5000
    h = harm_arrays(c, sc, n, t, st, n, decrease=True)
    rel = t / c - 1
    se = math.sqrt(st**2 / c**2 + t**2 * sc**2 / c**4)
    half = float(mixture_cs_arrays(rel, se, 2 * n)[0])
    assert float(h.harm) == pytest.approx(rel)
    assert float(h.se) == pytest.approx(se)
    assert (float(h.lo), float(h.hi)) == pytest.approx((rel - half, rel + half))
    assert bool(h.trips) == (rel - half > 0)
    # Where higher is good, the harm is the fall: the same numbers mirrored.
    up = harm_arrays(c, sc, n, t, st, n, decrease=False)
    assert float(up.harm) == pytest.approx(-rel) and not bool(up.trips)


def test_margin_is_on_the_relative_scale() -> None:
    # Error rate tripled, surely: harm +200%, lower end far above 0 but not above 5 (500%).
    args = (0.01, 0.0002, 20_000, 0.03, 0.0004, 20_000)
    assert bool(harm_arrays(*args, decrease=True, margin=0.0).trips)
    assert bool(harm_arrays(*args, decrease=True, margin=1.0).trips)
    assert not bool(harm_arrays(*args, decrease=True, margin=5.0).trips)


def test_never_trips_below_the_minimum_sample() -> None:
    # An enormous, certain harm with 99 units in one arm: no trip; with 100 in both: trip.
    for n_c, n_t, want in ((99, 10_000, False), (10_000, 99, False), (MIN_UNITS, MIN_UNITS, True)):
        h = harm_arrays(1.0, 0.001, n_c, 10.0, 0.001, n_t, decrease=True)
        assert bool(h.trips) is want, (n_c, n_t)
        assert bool(h.ready) is want
    # Undefined inputs (no control value, a zero control, no se) never trip.
    for c, sc in ((math.nan, 0.1), (0.0, 0.1), (1.0, math.nan)):
        assert not bool(harm_arrays(c, sc, 1000, 5.0, 0.1, 1000, decrease=True).trips)


def test_evaluate_reads_each_metric_by_its_definition() -> None:
    e = exp([{"metric": "errors", "action": "pause"}, "latency_ms", "quality"],
            {"errors": {"direction": "decrease"},
             "latency_ms": {"direction": "decrease", "stat": "p99"}}, n_variants=3)
    est = {
        "errors": {"model_a": QuantileEstimate(0.01, 0.0005, 5000),
                   "model_b": QuantileEstimate(0.03, 0.001, 5000),
                   "model_c": QuantileEstimate(0.01, 0.0005, 5000)},
        "latency_ms": {"model_a": QuantileEstimate(800, 10, 99),
                       "model_b": QuantileEstimate(1600, 10, 5000)},
        # No definition: higher is good, so a fall is the harm.
        "quality": {"model_a": QuantileEstimate(0.8, 0.005, 5000),
                    "model_b": QuantileEstimate(0.6, 0.005, 5000),
                    "model_c": QuantileEstimate(0.9, 0.005, 5000)},
    }
    checks = {(c.guardrail.metric, c.treatment): c for c in evaluate(e, est)}
    assert checks[("errors", "model_b")].trips and not checks[("errors", "model_c")].trips
    assert checks[("errors", "model_b")].harm == pytest.approx(2.0)
    lat = checks[("latency_ms", "model_b")]
    assert not lat.trips and not lat.ready and lat.n_control == 99  # events, below the minimum
    assert checks[("latency_ms", "model_c")].harm is None  # no data at all
    assert checks[("quality", "model_b")].trips and checks[("quality", "model_b")].harm == (
        pytest.approx(0.25))
    assert not checks[("quality", "model_c")].trips

    trip = trip_of(checks[("errors", "model_b")], "2026-12-02T10:42:07.5Z")
    block = snapshot_block(list(checks.values()), {("errors", "model_b"): trip})
    rows = {(r["metric"], r["treatment"]): r for r in block}
    assert rows[("errors", "model_b")]["status"] == "tripped"
    assert rows[("errors", "model_b")]["tripped_at"] == "2026-12-02T10:42:07.5Z"
    assert rows[("errors", "model_b")]["message"].startswith(
        "Paused by guardrail: errors of model_b is +200% above control [+")
    assert rows[("errors", "model_c")]["status"] == "ok"
    assert rows[("latency_ms", "model_b")]["ready"] is False


def test_describe_in_words() -> None:
    t = Trip("error_rate", "model_b", "pause", 0.0, 1.2, (0.85, 1.6), 4000, 4000,
             "2026-12-02T10:42:07.123Z")
    assert describe(t, "decrease") == (
        "Paused by guardrail: error_rate of model_b is +120% above control [+85%, +160%] "
        "since 10:42:07 UTC")
    q = Trip("quality", "model_b", "rollback", 0.0, 0.3, (0.2, 0.4), 4000, 4000,
             "2026-12-02T10:42:07Z")
    assert describe(q, "increase") == (
        "Rolled back to control by guardrail: quality of model_b is 30% below control "
        "[20%, 40%] since 10:42:07 UTC")


# -- simulations through the same decision function ------------------------------------------


def binary_estimates(errors: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-level mean and its se s/√n for a 0/1 metric from cumulative counts."""
    m = errors / n
    var = (errors - errors * m) / (n - 1)
    return m, np.sqrt(var / n)


def naive_trips(h: HarmArrays, z: float) -> np.ndarray:
    """A fixed-horizon test read at every look: the harm's z-interval lower end above 0."""
    return np.asarray(h.ready & (h.harm - z * h.se > 0.0))


def test_aa_false_trips_stay_rare_where_a_naive_test_at_every_look_does_not() -> None:
    # 500 A/A runs, 1% errors in both arms, 100 units/s per arm, a look every 5 s for 2 hours.
    rng = np.random.default_rng(20261202)
    runs, looks = 500, 2 * 3600 // LOOK_S
    n = (PER_LOOK * np.arange(1, looks + 1, dtype=np.float64))[None, :]
    e_c = rng.binomial(PER_LOOK, 0.01, size=(runs, looks)).cumsum(axis=1)
    e_t = rng.binomial(PER_LOOK, 0.01, size=(runs, looks)).cumsum(axis=1)
    h = harm_arrays(*binary_estimates(e_c, n), n, *binary_estimates(e_t, n), n, decrease=True)
    anytime = float(h.trips.any(axis=1).mean())
    # The naive test a person would run at each look: "treatment worse, one-sided p < 0.05".
    naive = float(naive_trips(h, float(special.ndtri(0.95))).any(axis=1).mean())
    naive_two_sided = float(naive_trips(h, Z95).any(axis=1).mean())
    print(f"A/A {runs} runs x {looks} looks: guardrail trips in {anytime:.1%} of runs; naive "
          f"one-sided 5% test at every look {naive:.1%}; naive two-sided 95% interval "
          f"{naive_two_sided:.1%}")
    assert anytime <= 0.05
    assert naive >= 0.30


def first_trip_s(trips: np.ndarray) -> np.ndarray:
    """Seconds to the first tripping look per row (inf when none)."""
    hit = trips.any(axis=1)
    return np.where(hit, (trips.argmax(axis=1) + 1) * LOOK_S, np.inf)


def test_an_error_rate_from_1_to_3_percent_trips_within_a_minute() -> None:
    rng = np.random.default_rng(17)
    seeds, looks = 200, 600 // LOOK_S
    n = (PER_LOOK * np.arange(1, looks + 1, dtype=np.float64))[None, :]
    e_c = rng.binomial(PER_LOOK, 0.01, size=(seeds, looks)).cumsum(axis=1)
    e_t = rng.binomial(PER_LOOK, 0.03, size=(seeds, looks)).cumsum(axis=1)
    h = harm_arrays(*binary_estimates(e_c, n), n, *binary_estimates(e_t, n), n, decrease=True)
    t = first_trip_s(h.trips)
    print(f"error rate 1% -> 3%: median trip {np.median(t):.0f} s, p90 "
          f"{np.quantile(t, 0.9):.0f} s, max {t.max():.0f} s over {seeds} seeds")
    assert np.median(t) <= 60
    assert np.isfinite(t).all()


def p99_estimates(x: np.ndarray, m: int) -> tuple[float, float, int]:
    """The p99 of the first m values (linear interpolation) and its order-statistic se."""
    q = 0.99
    h = (m - 1) * q
    lo_r, hi_r = order_statistic_ranks(m, q)
    ranks = sorted({math.floor(h), math.ceil(h), int(lo_r), int(hi_r)})
    part = np.partition(x[:m], ranks)
    value = part[math.floor(h)] + (h - math.floor(h)) * (part[math.ceil(h)] - part[math.floor(h)])
    return float(value), float(part[int(hi_r)] - part[int(lo_r)]) / (2 * Z95), m


def test_a_p99_latency_from_800_to_1200_ms_trips_within_two_minutes() -> None:
    # Latency per request lognormal (σ = 0.6) with its p99 at 800 ms, then 1200 ms on the
    # treatment; 100 requests/s per arm; the p99 read from the events seen so far at each look.
    sigma, z99 = 0.6, float(special.ndtri(0.99))
    mu_c, mu_t = math.log(800) - sigma * z99, math.log(1200) - sigma * z99
    seeds, looks = 200, 300 // LOOK_S
    times = []
    for seed in range(seeds):
        rng = np.random.default_rng(5000 + seed)
        xc = rng.lognormal(mu_c, sigma, looks * PER_LOOK)
        xt = rng.lognormal(mu_t, sigma, looks * PER_LOOK)
        t = math.inf
        for k in range(1, looks + 1):
            c, tt = p99_estimates(xc, k * PER_LOOK), p99_estimates(xt, k * PER_LOOK)
            if bool(harm_arrays(*c, *tt, decrease=True).trips):
                t = k * LOOK_S
                break
        times.append(t)
    arr = np.array(times)
    print(f"p99 latency 800 -> 1200 ms: median trip {np.median(arr):.0f} s, p90 "
          f"{np.quantile(arr, 0.9):.0f} s over {seeds} seeds")
    assert np.median(arr) <= 120


def test_the_minimum_holds_in_simulation_too() -> None:
    # A treatment three times slower on every request (mean latency, small spread), looked at
    # after every unit: no trip before both arms have MIN_UNITS units, one as soon as they do,
    # and without the minimum the same numbers would have tripped long before.
    rng = np.random.default_rng(3)
    n = np.arange(2, 400, dtype=np.float64)

    def running(mean: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(mean, 10.0, len(n) + 1)
        s, ss = np.cumsum(x)[1:], np.cumsum(x * x)[1:]
        m = s / n
        return m, np.sqrt((ss - s * m) / (n - 1) / n)

    c, t = running(100.0), running(300.0)
    h = harm_arrays(*c, n, *t, n, decrease=True)
    assert not h.trips[n < MIN_UNITS].any()
    assert h.trips[n >= MIN_UNITS].all()
    assert harm_arrays(*c, n, *t, n, decrease=True, min_units=0).trips[n < MIN_UNITS].any()
