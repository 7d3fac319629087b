"""The fold's kept sums (propensity, and CUPED's covariate sums), kept up to date by every fold
once asked for: after any sequence of exposures (late, earlier ones that move a unit's arm,
probability and covariates included), metric events (before and after their unit's exposure),
renames and checkpoints, they equal a recount over the raw events, with and without a cap."""

from __future__ import annotations

import numpy as np
import pytest

from litmus.core.counterfactual import PropensitySums
from litmus.core.unitfold import Deltas, ExperimentUnits

# Stored probabilities: given, server-filled (negative), forced (1), unknown (0).
PROBS = np.array([0.2, 0.5, 0.8, -0.25, -0.6, 1.0, -1.0, 0.0])
METRICS = ("conversion", "revenue")


def recount(exposures: list[tuple[int, int, int, int, float]],
            events: dict[str, list[tuple[int, float]]], metric: str,
            cap: float | None) -> dict[int, PropensitySums]:
    """From the raw events: each unit's first exposure (time, then tie) and its total."""
    first: dict[int, tuple[int, int, int, float]] = {}
    for k, arm, ts, tie, p in exposures:
        if k not in first or (ts, tie) < first[k][:2]:
            first[k] = (ts, tie, arm, p)
    totals: dict[int, float] = {}
    for k, v in events.get(metric, []):
        totals[k] = totals.get(k, 0.0) + v
    by_arm: dict[int, tuple[list[float], list[float]]] = {}
    for k, (_, _, arm, p) in first.items():
        q = abs(p)
        if 0 < q < 1:
            r = totals.get(k, 0.0)
            by_arm.setdefault(arm, ([], []))[0].append(min(r, cap) if cap is not None else r)
            by_arm[arm][1].append(q)
    return {a: PropensitySums.of(np.array(rs), np.array(ps)) for a, (rs, ps) in by_arm.items()}


def recount_cuped(exposures: list[tuple[int, int, int, int, float]],
                  covs: dict[tuple[int, int, int], list[float]],
                  events: dict[str, list[tuple[int, float]]], metric: str, position: int,
                  ) -> dict[int, tuple[float, ...]]:
    """(n, Σx, Σx², Σy, Σy², Σxy) per arm: x the first exposure's covariate (0 if not sent)."""
    first: dict[int, tuple[int, int, int]] = {}
    for k, arm, ts, tie, _ in exposures:
        if k not in first or (ts, tie) < first[k][:2]:
            first[k] = (ts, tie, arm)
    totals: dict[int, float] = {}
    for k, v in events.get(metric, []):
        totals[k] = totals.get(k, 0.0) + v
    out: dict[int, list[float]] = {}
    for k, (ts, tie, arm) in first.items():
        c = covs.get((k, ts, tie), [])
        x = c[position] if position < len(c) and not np.isnan(c[position]) else 0.0
        y = totals.get(k, 0.0)
        acc = out.setdefault(arm, [0.0] * 6)
        for i, val in enumerate((1.0, x, x * x, y, y * y, x * y)):
            acc[i] += val
    return {a: tuple(v) for a, v in out.items()}


def assert_close(got: dict[int, tuple[float, ...]], want: dict[int, tuple[float, ...]]) -> None:
    assert set(got) == set(want)
    for a, w in want.items():
        assert got[a] == pytest.approx(w, rel=1e-9, abs=1e-9), a


def scratch(st: ExperimentUnits, metric: str) -> dict[int, PropensitySums]:
    """The propensity sums counted over every unit, leaving the kept ones alone."""
    return {a: PropensitySums(int(c[0] + 0.5), *c[1:])
            for a, c in st.kept_sums(("propensity", metric, None), scratch=True).items()}


def assert_equal(got: dict[int, PropensitySums], want: dict[int, PropensitySums]) -> None:
    assert set(got) == set(want)
    for a, w in want.items():
        assert got[a].n == w.n
        for f in PropensitySums.__slots__:
            assert getattr(got[a], f) == pytest.approx(getattr(w, f), rel=1e-9, abs=1e-9), (a, f)


@pytest.mark.parametrize("seed", range(6))
def test_kept_sums_equal_a_recount_after_every_fold(seed: int) -> None:
    rng = np.random.default_rng(seed)
    st = ExperimentUnits()
    exposures: list[tuple[int, int, int, int, float]] = []
    events: dict[str, list[tuple[int, float]]] = {}
    names = {m: m for m in METRICS}  # the name each metric has now (renames move it)
    covs: dict[tuple[int, int, int], list[float]] = {}
    pool = rng.choice(2**62, 400, replace=False).astype(np.int64)
    for step in range(60):
        action = rng.integers(0, 10)
        if action < 4:
            n = int(rng.integers(1, 40))
            k = rng.choice(pool, n)
            arm = rng.integers(0, 3, n)
            # Times spread both ways: some exposures are earlier than the stored first one.
            ts = rng.integers(0, 50, n) * 1_000_000 + step
            tie = rng.integers(0, 1000, n)
            p = PROBS[rng.integers(0, len(PROBS), n)]
            # Covariates: none at first, then some exposures send the first two positions.
            cov = np.full((n, 5), np.nan)
            if step > 10:
                sent = rng.random(n) < 0.6
                cov[sent, 0] = rng.normal(10, 3, sent.sum())
                cov[sent, 1] = rng.integers(0, 5, sent.sum())
            st.fold_exposures(k, arm, ts, tie, Deltas(), p, cov if step > 10 else None)
            for j in range(n):
                covs[(int(k[j]), int(ts[j]), int(tie[j]))] = cov[j].tolist()
            exposures += list(zip(k.tolist(), arm.tolist(), ts.tolist(), tie.tolist(),
                                  p.tolist(), strict=True))
        elif action < 8:
            metric = names[METRICS[int(rng.integers(0, 2))]]
            n = int(rng.integers(1, 40))
            k = rng.choice(pool, n)
            v = rng.integers(-2, 7, n).astype(np.float64)
            st.fold_metrics(metric, k, v, Deltas())
            events.setdefault(metric, []).extend(zip(k.tolist(), v.tolist(), strict=True))
        elif action == 8 and names["revenue"] == "revenue" and "revenue" in st.metrics:
            st.rename_metric("revenue", "revenue_usd")
            names["revenue"] = "revenue_usd"
            events["revenue_usd"] = events.pop("revenue", [])
        else:
            st = ExperimentUnits.from_arrays(st.arrays())  # a checkpoint: the cache starts over
        for metric in names.values():
            want = recount(exposures, events, metric, None)
            assert_equal(st.propensity(metric), want)
            assert_equal(scratch(st, metric), want)
            for pos in (0, 1):
                want_c = recount_cuped(exposures, covs, events, metric, pos)
                assert_close(st.cuped(metric, pos), want_c)
                assert_close(st.kept_sums(("cuped", metric, None, pos), scratch=True), want_c)
        # A capped metric: its own cached sums, kept as well.
        assert_equal(st.propensity(names["conversion"], 3.0),
                     recount(exposures, events, names["conversion"], 3.0))


def test_a_snapshot_without_new_events_costs_no_pass_over_the_units() -> None:
    """The sums come from the cache: a fold of nothing changes nothing, and a state whose
    arrays were changed behind the fold's back still answers the cached sums (proving no
    recount happened), while a count from scratch sees the change."""
    rng = np.random.default_rng(1)
    k = rng.choice(2**62, 1000, replace=False).astype(np.int64)
    st = ExperimentUnits()
    st.fold_exposures(k, rng.integers(0, 2, 1000), np.zeros(1000, np.int64),
                      np.arange(1000), None, np.full(1000, 0.5))
    st.fold_metrics("conversion", k[:300], np.ones(300), None)
    before = st.propensity("conversion")
    st.prob[:] = 0.25  # not through a fold
    assert st.propensity("conversion") == before
    assert scratch(st, "conversion") != before
