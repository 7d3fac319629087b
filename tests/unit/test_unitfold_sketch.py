"""The fold's quantile sketches: each arm's event values, whatever order exposures and metric
events arrive in, through checkpoints, and equal to numpy's quantiles of the raw values."""

from __future__ import annotations

import numpy as np
import pytest

from litmus.core.unitfold import Deltas, ExperimentUnits


def _fold_in_batches(seed: int) -> tuple[ExperimentUnits, dict[int, list[float]], ExperimentUnits]:
    rng = np.random.default_rng(seed)
    n = 3000
    keys = rng.choice(2**62, n, replace=False).astype(np.int64)
    arms = rng.integers(0, 3, n)
    # Events: 0-3 per unit; each batch holds some exposures and some metric events, in any
    # order, so many metric events arrive before their unit's exposure.
    ev_unit = np.repeat(np.arange(n), rng.integers(0, 4, n))
    ev_val = rng.lognormal(5.0 + 0.2 * arms[ev_unit], 0.7)
    expected: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for u, v in zip(ev_unit.tolist(), ev_val.tolist(), strict=True):
        expected[int(arms[u])].append(v)
    st = ExperimentUnits()
    exp_order = rng.permutation(n)
    met_order = rng.permutation(len(ev_unit))
    batches = 10
    for b in range(batches):
        e = exp_order[b * n // batches:(b + 1) * n // batches]
        m = met_order[b * len(ev_unit) // batches:(b + 1) * len(ev_unit) // batches]
        st.fold_exposures(keys[e], arms[e].astype(np.int64), np.full(len(e), 1_000_000 * b),
                          keys[e] % 997, Deltas())
        st.fold_metrics("latency_ms", keys[ev_unit[m]], ev_val[m], Deltas())
        if b == 4:  # a checkpoint mid-way: what is stored and what is pending both survive
            st = ExperimentUnits.from_arrays(st.arrays())
    # A replay from nothing (one batch, exposures first) reaches the same sketches.
    replay = ExperimentUnits()
    replay.fold_exposures(keys, arms.astype(np.int64), np.zeros(n, np.int64), keys % 997, None)
    replay.fold_metrics("latency_ms", keys[ev_unit], ev_val, None)
    return st, expected, replay


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sketches_hold_each_arms_event_values(seed: int) -> None:
    st, expected, replay = _fold_in_batches(seed)
    assert not st.pending, "every unit was exposed in the end"
    for arm, values in expected.items():
        sk = st.sketches[(arm, "latency_ms")]
        assert sk.count == len(values)
        assert replay.sketches[(arm, "latency_ms")].count == len(values)
        for q in (0.5, 0.95, 0.99):
            exact = float(np.quantile(values, q))
            assert sk.quantile(q) == pytest.approx(exact, rel=0.005)
            assert replay.sketches[(arm, "latency_ms")].quantile(q) == sk.quantile(q)


def test_events_of_units_never_exposed_wait_and_survive_a_checkpoint() -> None:
    st = ExperimentUnits()
    keys = np.array([5, 9], np.int64)
    st.fold_metrics("latency_ms", keys, np.array([100.0, 200.0]), Deltas())
    assert not st.sketches and len(st.pending["latency_ms"][0]) == 2
    st = ExperimentUnits.from_arrays(st.arrays())
    st.fold_exposures(np.array([9], np.int64), np.array([1], np.int64), np.array([0], np.int64),
                      np.array([0], np.int64), Deltas())
    assert st.sketches[(1, "latency_ms")].count == 1
    assert st.sketches[(1, "latency_ms")].quantile(0.5) == pytest.approx(200.0, rel=0.005)
    assert st.pending["latency_ms"][0].tolist() == [5]


def test_a_placeholder_metric_is_renamed_with_its_sketches_and_waiting_events() -> None:
    st = ExperimentUnits()
    st.fold_exposures(np.array([1], np.int64), np.array([0], np.int64), np.array([0], np.int64),
                      np.array([0], np.int64), None)
    st.fold_metrics("\x00new:7", np.array([1, 2], np.int64), np.array([3.0, 4.0]), None)
    st.rename_metric("\x00new:7", "cost_usd")
    assert set(st.metrics) == {"cost_usd"}
    assert set(st.sketches) == {(0, "cost_usd")} and set(st.pending) == {"cost_usd"}


def test_capped_sums_equal_numpy() -> None:
    rng = np.random.default_rng(9)
    keys = np.arange(1000, dtype=np.int64)
    arms = rng.integers(0, 2, 1000)
    st = ExperimentUnits()
    st.fold_exposures(keys, arms.astype(np.int64), np.zeros(1000, np.int64), keys, None)
    ev = rng.integers(0, 1000, 3000)
    vals = rng.exponential(20, 3000)
    st.fold_metrics("revenue", keys[ev], vals, None)
    totals = np.bincount(ev, weights=vals, minlength=1000)
    has = np.bincount(ev, minlength=1000) > 0
    for arm, (units, events, s, ss) in st.capped("revenue", 30.0).items():
        sel = (arms == arm) & has
        c = np.minimum(totals[sel], 30.0)
        assert units == sel.sum() and events == np.isin(ev, np.flatnonzero(arms == arm)).sum()
        assert s == pytest.approx(c.sum(), rel=1e-12) and ss == pytest.approx((c * c).sum(), rel=1e-12)
