"""The quantile sketch against numpy's exact quantiles, and the order-statistic interval's coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from litmus.core.quantiles import (
    MAX_BUCKETS,
    Sketch,
    order_statistic_ranks,
    order_statistic_se,
)

QS = (0.5, 0.95, 0.99)


def sketch_of(values: np.ndarray, chunks: int = 7) -> Sketch:
    s = Sketch()
    for part in np.array_split(values, chunks):
        s.add(part)
    return s


@pytest.mark.parametrize("n", [10_000, 100_000, 1_000_000, 10_000_000])
def test_quantiles_are_within_1_percent_of_numpy_and_memory_stays_flat(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.lognormal(6.0, 0.6, n)  # latencies around 400 ms
    s = sketch_of(x)
    assert s.count == n
    for q in QS:
        exact = float(np.quantile(x, q))
        assert abs(s.quantile(q) / exact - 1.0) < 0.01 * 0.5, (n, q)  # well inside 1%
    # Flat in the event count: the counts cover the values' range, not the events.
    assert s.nbytes <= 2 * MAX_BUCKETS * 8
    assert s.nbytes < 20_000


def test_memory_is_bounded_even_over_an_absurd_range() -> None:
    s = Sketch()
    s.add(np.geomspace(1e-8, 1e15, 200_000))
    assert len(s.pos.counts) <= MAX_BUCKETS
    # The collapse costs only the far low end: the upper quantiles stay exact to the bucket.
    x = np.geomspace(1e-8, 1e15, 200_000)
    assert abs(s.quantile(0.99) / np.quantile(x, 0.99) - 1.0) < 0.005


def test_negative_zero_and_mixed_values() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.0, 5.0, 20_000), np.zeros(500), [1e-12, -1e-12]])
    s = sketch_of(rng.permutation(x))
    for q in (0.01, 0.25, 0.5, 0.75, 0.99):
        exact = float(np.quantile(x, q))
        got = s.quantile(q)
        assert got is not None
        assert abs(got - exact) <= 0.005 * abs(exact) + 1e-9, (q, got, exact)
    assert s.quantile(0.5) == pytest.approx(float(np.quantile(x, 0.5)), abs=0.02)


def test_merging_equals_adding_everything_to_one() -> None:
    rng = np.random.default_rng(4)
    a_vals, b_vals = rng.lognormal(0, 2, 5000), -rng.lognormal(3, 1, 3000)
    a, b, one = Sketch(), Sketch(), Sketch()
    a.add(a_vals)
    b.add(b_vals)
    one.add(np.concatenate([a_vals, b_vals]))
    a.merge(b)
    assert a.count == one.count
    for q in (0.1, 0.5, 0.9, 0.99):
        assert a.quantile(q) == one.quantile(q)
    back = Sketch.from_arrays(a.to_arrays())
    assert back.quantile(0.9) == a.quantile(0.9) and back.count == a.count


def test_empty_and_single() -> None:
    s = Sketch()
    assert s.quantile(0.5) is None and s.estimate(0.5).value is None
    s.add([42.0])
    assert s.quantile(0.99) == pytest.approx(42.0, rel=0.005)
    s.add([math.nan, math.inf])  # ignored
    assert s.count == 1


def test_order_statistic_se_from_the_sketch_equals_the_exact_one() -> None:
    rng = np.random.default_rng(5)
    x = np.sort(rng.lognormal(6.0, 0.6, 50_000))
    s = sketch_of(x)
    for q in QS:
        est = s.estimate(q)
        assert est.se == pytest.approx(order_statistic_se(x, q), rel=0.05)
    lo, hi = order_statistic_ranks(1000, 0.95)
    assert (lo, hi) == pytest.approx((950 - 1.959964 * math.sqrt(47.5), 950 + 1.959964 * math.sqrt(47.5)))


@pytest.mark.parametrize("q", [0.5, 0.95])
def test_the_quantile_interval_covers_the_true_quantile_93_to_97_percent(q: float) -> None:
    # Lognormal latencies, 1,000 seeds: value ± 1.96·se from the sketch covers the true quantile.
    mu, sigma, n, seeds = 6.0, 0.6, 2000, 1000
    true = math.exp(mu + sigma * float(sps.norm.ppf(q)))
    rng = np.random.default_rng(20261202)
    covered = 0
    for _ in range(seeds):
        s = Sketch()
        s.add(rng.lognormal(mu, sigma, n))
        est = s.estimate(q)
        assert est.value is not None and est.se is not None
        covered += abs(est.value - true) <= 1.959964 * est.se
    assert 0.93 <= covered / seeds <= 0.97, covered
