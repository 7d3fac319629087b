"""litmus.core.snapshot: the snapshot shape, numbers from raw events, JSON safety, CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from litmus.core import stats
from litmus.core.models import BanditSettings, Experiment, Variant
from litmus.core.snapshot import (
    LIFT_CSV_COLUMNS,
    MetricAgg,
    build_results,
    json_safe,
    lift_csv,
)

# The kernels promise never to warn: any numpy RuntimeWarning is a bug.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

NOW = "2026-01-02T03:04:05Z"
KEYS = ("model_a", "model_b", "model_c")
WEIGHTS = (0.5, 0.25, 0.25)


def experiment(**kw: Any) -> Experiment:
    base: dict[str, Any] = {
        "id": "7f0c0c9e-0000-4000-8000-000000000001",
        "key": "ranker",
        "name": "Ranker",
        "description": "d",
        "owner_team": "ml",
        "status": "running",
        "variants": tuple(Variant(k, w) for k, w in zip(KEYS, WEIGHTS, strict=True)),
        "metrics": {"primary": "conversion", "guardrails": ["latency_ms"]},
    }
    base.update(kw)
    return Experiment(**base)


class RawData:
    """Raw per-unit data and the aggregates SQL would return for it."""

    def __init__(self, seed: int = 1, units: int = 6000) -> None:
        rng = np.random.default_rng(seed)
        self.variant = rng.choice(len(KEYS), units, p=WEIGHTS)
        # (metric, unit index, value) events; some units convert twice, most never.
        conv_p = np.array([0.10, 0.13, 0.10])[self.variant]
        conv = rng.random(units) < conv_p
        twice = conv & (rng.random(units) < 0.1)
        conv_units = np.concatenate([np.flatnonzero(conv), np.flatnonzero(twice)])
        rev_units = np.flatnonzero(conv & (rng.random(units) < 0.5))
        lat_units = np.repeat(np.arange(units), rng.integers(1, 4, units))
        lat_scale = np.array([100.0, 90.0, 120.0])[self.variant[lat_units]]
        self.events: dict[str, tuple[np.ndarray, np.ndarray]] = {
            "conversion": (conv_units, np.ones(conv_units.size)),
            "revenue": (rev_units, rng.lognormal(3.0, 1.0, rev_units.size)),
            "latency_ms": (lat_units, rng.gamma(4.0, lat_scale / 4.0)),
        }
        self.units = units

    def unit_values(self, metric: str, v: int) -> np.ndarray:
        """Each exposed unit's total for the metric, zeros included."""
        idx, val = self.events[metric]
        totals = np.bincount(idx, weights=val, minlength=self.units)
        return totals[self.variant == v]

    def exposures(self) -> dict[str, tuple[int, int]]:
        counts = np.bincount(self.variant, minlength=len(KEYS))
        return {k: (int(counts[i]), int(counts[i]) + 7) for i, k in enumerate(KEYS)}

    def aggregates(self) -> dict[str, dict[str, MetricAgg]]:
        out: dict[str, dict[str, MetricAgg]] = {}
        for m, (idx, val) in self.events.items():
            totals = np.bincount(idx, weights=val, minlength=self.units)
            counts = np.bincount(idx, minlength=self.units)
            out[m] = {}
            for i, k in enumerate(KEYS):
                sel = (self.variant == i) & (counts > 0)
                out[m][k] = MetricAgg(
                    count=int(counts[sel].sum()),
                    units=int(sel.sum()),
                    sum=float(totals[sel].sum()),
                    sum_sq=float((totals[sel] ** 2).sum()),
                )
        return out


@pytest.fixture(scope="module")
def raw() -> RawData:
    return RawData()


def build(raw: RawData, exp: Experiment | None = None, **kw: Any) -> dict[str, Any]:
    return build_results(
        exp or experiment(), computed_at=NOW, exposures=raw.exposures(),
        metrics=raw.aggregates(), **kw,
    ).snapshot


def row(snap: Mapping[str, Any], metric: str, treatment: str) -> dict[str, Any]:
    [r] = [r for r in snap["lift"] if r["metric"] == metric and r["treatment"] == treatment]
    return r


def strict_json(snap: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(snap, allow_nan=False))


# ------------------------------------------------------------------ shape


def test_shape_is_the_spec_contract(raw: RawData) -> None:
    snap = strict_json(build(raw, timeline=[{"t": "2026-01-02T03:00:00Z", "model_a": 3}]))
    assert {"experiment_id", "computed_at", "status", "exposures", "srm", "metrics", "lift",
            "bandit"} <= snap.keys()
    assert snap["experiment_id"] == experiment().id
    assert snap["computed_at"] == NOW and snap["status"] == "running"
    assert {"total_units", "variants", "timeline"} <= snap["exposures"].keys()
    assert snap["exposures"]["timeline"] == [{"t": "2026-01-02T03:00:00Z", "model_a": 3}]
    for v in KEYS:
        assert {"units", "events", "share", "weight"} <= snap["exposures"]["variants"][v].keys()
    assert {"p_value", "flagged"} <= snap["srm"].keys()
    for per in snap["metrics"].values():
        for v in KEYS:
            assert {"count", "units", "sum", "mean", "unit_mean", "unit_variance"} <= per[v].keys()
    spec_row = {"metric", "control", "treatment", "control_mean", "treatment_mean", "abs_lift",
                "abs_ci", "rel_lift", "rel_ci", "p_value", "p_value_holm", "anytime_abs_ci",
                "anytime_p_value", "chance_to_beat", "significant"}
    for r in snap["lift"]:
        assert spec_row <= r.keys()
        for ci in ("abs_ci", "rel_ci", "anytime_abs_ci"):
            assert len(r[ci]) == 2 and r[ci][0] <= r[ci][1]
        assert isinstance(r["significant"], bool)
    assert snap["bandit"] is None


def test_metric_order_primary_first_then_guardrails_then_rest(raw: RawData) -> None:
    snap = build(raw, experiment(metrics={"primary": "revenue", "guardrails": ["latency_ms"]}))
    assert list(snap["metrics"]) == ["revenue", "latency_ms", "conversion"]
    assert [r["metric"] for r in snap["lift"]] == [
        m for m in ("revenue", "latency_ms", "conversion") for _ in range(2)
    ]
    assert [r["treatment"] for r in snap["lift"][:2]] == ["model_b", "model_c"]
    assert snap["primary_metric"] == "revenue"


def test_declared_metrics_without_events_still_appear(raw: RawData) -> None:
    exp = experiment(metrics={"primary": "conversion", "guardrails": ["errors"]})
    snap = strict_json(build(raw, exp))
    assert list(snap["metrics"])[:2] == ["conversion", "errors"]
    r = row(snap, "errors", "model_b")
    assert r["abs_lift"] == 0.0 and r["p_value"] == 1.0 and not r["significant"]
    assert r["rel_lift"] is None  # control mean 0
    assert snap["metrics"]["errors"]["model_a"]["mean"] is None  # no events: no per-event mean


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize("metric", ["conversion", "revenue", "latency_ms"])
def test_numbers_match_scipy_on_raw_units(raw: RawData, metric: str) -> None:
    snap = strict_json(build(raw))
    idx, val = raw.events[metric]
    c = raw.unit_values(metric, 0)
    for i, k in enumerate(KEYS):
        x = raw.unit_values(metric, i)
        s = snap["metrics"][metric][k]
        in_arm = raw.variant[idx] == i
        assert s["count"] == int(in_arm.sum())
        assert s["units"] == int(np.unique(idx[in_arm]).size)
        assert s["sum"] == pytest.approx(val[in_arm].sum(), rel=1e-12)
        assert s["mean"] == pytest.approx(val[in_arm].mean(), rel=1e-12)
        assert s["unit_mean"] == pytest.approx(x.mean(), rel=1e-12)
        assert s["unit_variance"] == pytest.approx(x.var(ddof=1), rel=1e-9)
        if i == 0:
            continue
        r = row(snap, metric, k)
        ref = sps.ttest_ind(x, c, equal_var=False)
        assert r["control"] == "model_a" and r["treatment"] == k
        assert r["control_mean"] == pytest.approx(c.mean(), rel=1e-12)
        assert r["treatment_mean"] == pytest.approx(x.mean(), rel=1e-12)
        assert r["abs_lift"] == pytest.approx(x.mean() - c.mean(), rel=1e-9)
        assert r["abs_ci"] == pytest.approx(list(ref.confidence_interval(0.95)), rel=1e-8)
        assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-6)
        assert r["rel_lift"] == pytest.approx(x.mean() / c.mean() - 1, rel=1e-9)
        var_rel = (x.var(ddof=1) / (x.size * c.mean() ** 2)
                   + c.var(ddof=1) * x.mean() ** 2 / (c.size * c.mean() ** 4))
        h = sps.t.ppf(0.975, ref.df) * math.sqrt(var_rel)  # Student t, Welch df
        assert r["rel_ci"] == pytest.approx([r["rel_lift"] - h, r["rel_lift"] + h], rel=1e-8)
        se = math.sqrt(x.var(ddof=1) / x.size + c.var(ddof=1) / c.size)
        rr = (x.size + c.size) * stats.mixture_rho2()
        ah = se * math.sqrt((1 + rr) / rr * math.log((1 + rr) / 0.05**2))
        assert r["anytime_abs_ci"] == pytest.approx(
            [r["abs_lift"] - ah, r["abs_lift"] + ah], rel=1e-8
        )
        z = r["abs_lift"] / se
        assert r["anytime_p_value"] == pytest.approx(
            min(1.0, math.sqrt(1 + rr) * math.exp(-rr / (1 + rr) * z * z / 2)), rel=1e-8
        )
        expected_ctb = sps.norm.cdf(z)
        if metric == "latency_ms":  # a declared guardrail is not assumed to be minimised
            assert r["goal"] == "maximize"
        assert r["chance_to_beat"] == pytest.approx(expected_ctb, rel=1e-9, abs=1e-15)


def test_holm_across_treatments_and_significance_by_mode(raw: RawData) -> None:
    for mode in ("sequential", "fixed"):
        snap = build(raw, experiment(analysis_mode=mode))
        for m in snap["metrics"]:
            rows = [r for r in snap["lift"] if r["metric"] == m]
            assert [r["p_value_holm"] for r in rows] == pytest.approx(
                stats.holm([r["p_value"] for r in rows])
            )
            assert [r["anytime_p_value_holm"] for r in rows] == pytest.approx(
                stats.holm([r["anytime_p_value"] for r in rows])
            )
            for r in rows:
                key = "anytime_p_value_holm" if mode == "sequential" else "p_value_holm"
                assert r["significant"] == (r[key] < 0.05)
    # The data have a real latency difference, found under both modes.
    assert row(build(raw), "latency_ms", "model_c")["significant"]
    assert row(build(raw, experiment(analysis_mode="fixed")), "latency_ms", "model_c")["significant"]


def test_significance_differs_between_modes_in_the_grey_zone() -> None:
    # Welch p ≈ 0.01 but the anytime p is far larger: fixed says yes, sequential says no.
    n = 2000
    aggs = {"conversion": {
        "model_a": MetricAgg(200, 200, 200.0, 200.0),
        "model_b": MetricAgg(248, 248, 248.0, 248.0),
    }}
    exp2 = experiment(variants=(Variant("model_a", 0.5), Variant("model_b", 0.5)))
    args: dict[str, Any] = {"computed_at": NOW, "exposures": {"model_a": (n, n), "model_b": (n, n)},
                            "metrics": aggs}
    fixed = build_results(
        experiment(variants=exp2.variants, analysis_mode="fixed"), **args
    ).snapshot["lift"][0]
    seq = build_results(exp2, **args).snapshot["lift"][0]
    assert fixed["p_value"] < 0.05 < fixed["anytime_p_value"]
    assert fixed["significant"] and not seq["significant"]


def test_running_minimum_of_anytime_p(raw: RawData) -> None:
    fresh = build_results(
        experiment(), computed_at=NOW, exposures=raw.exposures(), metrics=raw.aggregates()
    )
    assert set(fresh.anytime_p) == {(m, t) for m in fresh.snapshot["metrics"]
                                    for t in ("model_b", "model_c")}
    key = ("conversion", "model_b")
    now = fresh.anytime_p[key]
    lower = {key: now / 10, ("revenue", "model_c"): 1.0}
    again = build_results(
        experiment(), computed_at=NOW, exposures=raw.exposures(), metrics=raw.aggregates(),
        prev_anytime_p=lower,
    )
    assert again.anytime_p[key] == now / 10
    assert row(again.snapshot, *key)["anytime_p_value"] == now / 10
    assert again.anytime_p[("revenue", "model_c")] == fresh.anytime_p[("revenue", "model_c")]
    assert row(again.snapshot, *key)["anytime_p_value_now"] == pytest.approx(now)


def test_minimize_metrics_mirror_chance_to_beat(raw: RawData) -> None:
    up = build(raw)
    down = build(raw, minimize_metrics={"latency_ms"})
    for t in ("model_b", "model_c"):
        a, b = row(up, "latency_ms", t), row(down, "latency_ms", t)
        assert b["chance_to_beat"] == pytest.approx(1 - a["chance_to_beat"])
        assert b["goal"] == "minimize" and a["goal"] == "maximize"
        assert b["p_value"] == a["p_value"]
    # model_b is faster (lower latency): it beats control when minimising.
    assert row(down, "latency_ms", "model_b")["chance_to_beat"] > 0.99
    bandit_exp = experiment(
        allocation="bandit", bandit=BanditSettings(reward_metric="latency_ms", goal="minimize")
    )
    assert row(build(raw, bandit_exp), "latency_ms", "model_b")["goal"] == "minimize"


# ------------------------------------------------------------------ exposures and SRM


def test_exposures_and_srm(raw: RawData) -> None:
    snap = build(raw, timeline=[{"t": "x", "model_a": np.int64(4), "model_b": float("nan")}])
    units = [raw.exposures()[k][0] for k in KEYS]
    total = sum(units)
    e = snap["exposures"]
    assert e["total_units"] == total == raw.units
    for k, u, w in zip(KEYS, units, WEIGHTS, strict=True):
        assert e["variants"][k] == {"units": u, "events": u + 7, "share": u / total, "weight": w}
    assert e["timeline"] == [{"t": "x", "model_a": 4, "model_b": None}]
    ref = sps.chisquare(units, [w * total for w in WEIGHTS])
    assert snap["srm"]["p_value"] == pytest.approx(ref.pvalue)
    assert snap["srm"]["flagged"] is False


def test_srm_flags_a_broken_split() -> None:
    snap = build_results(
        experiment(), computed_at=NOW, metrics={},
        exposures={"model_a": (5000, 5000), "model_b": (2800, 2800), "model_c": (2200, 2200)},
    ).snapshot
    assert snap["srm"]["flagged"] is True and snap["srm"]["p_value"] < 0.001


def test_bandit_snapshot_uses_current_weights_and_skips_srm(raw: RawData) -> None:
    exp = experiment(allocation="bandit", bandit=BanditSettings())
    bandit = {"weights": {"model_a": np.float64(0.2)}, "p_best": {"model_b": float("inf")},
              "top_variant": "model_b", "converged": np.bool_(False), "converged_at": None,
              "history": [{"t": "x", "weights": {"model_a": 0.2}, "p_best": {}}]}
    snap = strict_json(build(raw, exp, weights={"model_a": 0.2, "model_b": 0.7, "model_c": 0.1},
                             bandit=bandit))
    assert [snap["exposures"]["variants"][k]["weight"] for k in KEYS] == [0.2, 0.7, 0.1]
    assert snap["srm"]["p_value"] is None and snap["srm"]["flagged"] is False
    assert snap["srm"]["reason"]
    assert snap["bandit"]["weights"] == {"model_a": 0.2}
    assert snap["bandit"]["p_best"] == {"model_b": None}
    assert snap["bandit"]["converged"] is False


# ------------------------------------------------------------------ edge cases


def edge_snapshot(
    exposures: dict[str, tuple[int, int]], aggs: dict[str, dict[str, MetricAgg]]
) -> dict[str, Any]:
    snap = build_results(
        experiment(), computed_at=NOW, exposures=exposures, metrics=aggs,
        unattributed={"conversion": (3, 3.0)},
    ).snapshot
    return strict_json(snap)  # raises on NaN or Infinity


def test_no_exposures_at_all() -> None:
    snap = edge_snapshot({}, {})
    assert snap["exposures"]["total_units"] == 0
    assert all(v["share"] is None for v in snap["exposures"]["variants"].values())
    assert snap["srm"]["p_value"] is None and snap["srm"]["flagged"] is False
    assert list(snap["metrics"]) == ["conversion", "latency_ms"]
    for r in snap["lift"]:
        assert r["abs_lift"] is None and r["p_value"] is None and r["significant"] is False
        assert r["reason"] == stats.REASON_EMPTY_ARM
    assert snap["unattributed"] == {"conversion": {"count": 3, "sum": 3.0}}


def test_single_exposed_arm() -> None:
    snap = edge_snapshot(
        {"model_b": (500, 510)},
        {"conversion": {"model_b": MetricAgg(60, 50, 60.0, 80.0)}},
    )
    assert snap["srm"]["flagged"] is True
    r = row(snap, "conversion", "model_b")
    assert r["control_mean"] is None and r["treatment_mean"] == pytest.approx(0.12)
    assert r["abs_lift"] is None and r["chance_to_beat"] is None
    assert snap["metrics"]["conversion"]["model_a"]["unit_mean"] is None


def test_one_unit_per_arm() -> None:
    snap = edge_snapshot(
        {"model_a": (1, 1), "model_b": (1, 1), "model_c": (1, 1)},
        {"conversion": {"model_b": MetricAgg(1, 1, 1.0, 1.0)}},
    )
    r = row(snap, "conversion", "model_b")
    assert r["abs_lift"] == 1.0 and r["p_value"] is None and r["abs_ci"] is None
    assert r["reason"] == stats.REASON_FEW_UNITS
    assert snap["metrics"]["conversion"]["model_b"]["unit_variance"] is None


def test_zero_variance_and_zero_control_mean() -> None:
    exposures = {"model_a": (100, 100), "model_b": (100, 100), "model_c": (100, 100)}
    snap = edge_snapshot(exposures, {
        # Every unit converts in b and c, none in a: deterministic, control mean 0.
        "conversion": {"model_b": MetricAgg(100, 100, 100.0, 100.0),
                       "model_c": MetricAgg(100, 100, 100.0, 100.0)},
        # Every unit 0.1 everywhere: a tie despite rounding.
        "score": {k: MetricAgg(100, 100, 0.1 * 100, 0.01 * 100) for k in KEYS},
    })
    r = row(snap, "conversion", "model_b")
    assert r["abs_lift"] == 1.0 and r["p_value"] == 0.0 and r["abs_ci"] == [1.0, 1.0]
    assert r["rel_lift"] is None and r["rel_ci"] is None
    assert r["reason"] == stats.REASON_ZERO_CONTROL
    assert r["chance_to_beat"] == 1.0 and r["significant"] is True
    s = row(snap, "score", "model_c")
    assert s["abs_lift"] == 0.0 and s["p_value"] == 1.0 and s["rel_lift"] == 0.0
    assert s["chance_to_beat"] == 0.5 and s["significant"] is False


def test_more_units_with_events_than_exposed_is_absorbed() -> None:
    snap = edge_snapshot(
        {"model_a": (10, 10), "model_b": (10, 10), "model_c": (10, 10)},
        {"conversion": {"model_a": MetricAgg(30, 30, 30.0, 30.0)}},
    )
    assert snap["metrics"]["conversion"]["model_a"]["exposed_units"] == 30
    assert snap["metrics"]["conversion"]["model_a"]["unit_variance"] == 0.0


agg_strategy = st.builds(
    MetricAgg,
    count=st.integers(0, 10**6),
    units=st.integers(0, 10**5),
    sum=st.floats(-1e300, 1e300),
    sum_sq=st.floats(0, 1e308),
)


@settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(
    exposures=st.dictionaries(
        st.sampled_from(KEYS), st.tuples(st.integers(0, 10**5), st.integers(0, 10**6))
    ),
    aggs=st.dictionaries(
        st.sampled_from(["conversion", "revenue", "zz"]),
        st.dictionaries(st.sampled_from(KEYS), agg_strategy),
    ),
    prev=st.dictionaries(
        st.tuples(st.sampled_from(["conversion", "revenue"]), st.sampled_from(KEYS[1:])),
        st.floats(0, 1),
    ),
    mode=st.sampled_from(["sequential", "fixed"]),
)
def test_any_aggregates_give_strict_json(
    exposures: dict[str, tuple[int, int]], aggs: dict[str, dict[str, MetricAgg]],
    prev: dict[tuple[str, str], float], mode: str,
) -> None:
    res = build_results(
        experiment(analysis_mode=mode), computed_at=NOW, exposures=exposures, metrics=aggs,
        prev_anytime_p=prev,
    )
    snap = strict_json(res.snapshot)
    assert next(iter(snap["metrics"])) == "conversion"
    assert all(math.isfinite(p) for p in res.anytime_p.values())
    for k, p in prev.items():
        assert res.anytime_p[k] <= p
    lift_csv(res.snapshot)


def test_json_safe() -> None:
    assert json_safe({"a": [np.float32(1.5), float("-inf"), (np.int64(2), None)]}) == {
        "a": [1.5, None, [2, None]]
    }


# ------------------------------------------------------------------ CSV


def test_lift_csv_round_trips_the_lift_table(raw: RawData) -> None:
    snap = build(raw)
    text = lift_csv(snap)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(next(csv.reader(io.StringIO(text)))) == LIFT_CSV_COLUMNS
    assert len(rows) == len(snap["lift"]) == 6
    for got, want in zip(rows, snap["lift"], strict=True):
        for col in ("metric", "control", "treatment"):
            assert got[col] == want[col]
        for col in ("abs_lift", "rel_lift", "p_value", "p_value_holm", "anytime_p_value",
                    "chance_to_beat", "control_mean", "treatment_mean"):
            assert float(got[col]) == want[col]  # repr keeps every digit
        for ci in ("abs_ci", "rel_ci", "anytime_abs_ci"):
            assert [float(got[ci + "_lo"]), float(got[ci + "_hi"])] == want[ci]
        assert got["significant"] == ("true" if want["significant"] else "false")


def test_lift_csv_nulls_and_injection() -> None:
    snap = build_results(
        experiment(metrics={"primary": "=HYPERLINK(1)"}), computed_at=NOW, exposures={},
        metrics={},
    ).snapshot
    rows = list(csv.DictReader(io.StringIO(lift_csv(snap))))
    assert rows[0]["metric"] == "'=HYPERLINK(1)"
    assert rows[0]["abs_ci_lo"] == "" and rows[0]["p_value"] == ""
    assert lift_csv({"lift": []}).strip() == ",".join(LIFT_CSV_COLUMNS)
