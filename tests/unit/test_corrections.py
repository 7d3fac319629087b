"""Multiple-comparison corrections (Holm, Benjamini–Hochberg) and the running anytime interval
that sequential significance follows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from litmus.core import stats
from litmus.core.errors import ValidationFailed
from litmus.core.models import (
    CorrectionSettings,
    Experiment,
    Variant,
    check_metrics,
    correction_settings,
    metric_definitions,
)
from litmus.core.snapshot import MetricAgg, build_results

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

multitest = pytest.importorskip("statsmodels.stats.multitest")

NOW = "2026-01-02T03:04:05Z"


# ------------------------------------------------------------------ the adjustments


def test_bh_and_holm_equal_statsmodels() -> None:
    rng = np.random.default_rng(2)
    for i, m in enumerate([1, 2, 3, 5, 8, 13, 30] * 30):
        ps = rng.random(m) ** rng.uniform(1, 6)  # many small ones, as in real tables
        if m > 2:
            ps[1] = ps[0]  # a tie
        # statsmodels' holm takes ~0.1 s a call: the first 21 cases only.
        for method, name in (("bh", "fdr_bh"), ("holm", "holm"))[: 2 if i < 21 else 1]:
            ours = stats.adjust(ps.tolist(), method)  # type: ignore[arg-type]
            ref = multitest.multipletests(ps, method=name)[1]
            assert ours == pytest.approx(list(ref), rel=1e-12, abs=1e-15)


def test_bh_hand_case_and_undefined_p_values() -> None:
    # m = 4 defined: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.04, 0.04, 0.5.
    out = stats.benjamini_hochberg([0.03, None, 0.01, 0.5, 0.02])
    assert out == pytest.approx([0.04, None, 0.04, 0.5, 0.04])
    assert out[1] is None
    assert stats.adjust([None, None], "bh") == [None, None]
    # BH never exceeds Holm (FDR is the weaker guarantee).
    rng = np.random.default_rng(3)
    for _ in range(100):
        p = rng.random(8).tolist()
        assert all(b <= h + 1e-15 for b, h in zip(stats.adjust(p, "bh"), stats.adjust(p, "holm"),
                                                  strict=True))  # type: ignore[operator]


# ------------------------------------------------------------------ settings and validation


def test_correction_settings_default_and_read() -> None:
    assert correction_settings({}) == CorrectionSettings("holm", False)
    assert correction_settings({"correction": "bh", "correct_across_metrics": True}) == \
        CorrectionSettings("bh", True)
    assert correction_settings({"correction": None, "correct_across_metrics": None}) == \
        CorrectionSettings("holm", False)


@pytest.mark.parametrize(("metrics", "field", "words"), [
    ({"correction": "bonferroni"}, "metrics.correction", "use one of holm, bh"),
    ({"correction": 3}, "metrics.correction", "not a correction"),
    ({"correct_across_metrics": "yes"}, "metrics.correct_across_metrics", "not true or false"),
    ({"correct_across_metrics": 1}, "metrics.correct_across_metrics", "not true or false"),
    ({"definitions": {"revenue": {"cuped": "pre revenue"}}}, "metrics.definitions.revenue.cuped",
     "not a covariate name"),
    ({"definitions": {"revenue": {"cuped": "-x"}}}, "metrics.definitions.revenue.cuped",
     "not a covariate name"),
    ({"definitions": {"revenue": {"cuped": ""}}}, "metrics.definitions.revenue.cuped",
     "not a covariate name"),
    ({"definitions": {"revenue": {"cuped": "x" * 65}}}, "metrics.definitions.revenue.cuped",
     "not a covariate name"),
    ({"definitions": {"revenue": {"cuped": 7}}}, "metrics.definitions.revenue.cuped",
     "not a covariate name"),
])
def test_bad_settings_name_the_field(metrics: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationFailed) as e:
        check_metrics(metrics)
    assert e.value.fields is not None and set(e.value.fields) == {field}
    assert words in e.value.fields[field] and field in e.value.message
    assert e.value.status == 422


def test_cuped_covariate_names_accepted() -> None:
    # The brief's [A-Za-z_][A-Za-z0-9_]{0,63}, widened to the API's slugs (- and a leading digit).
    for name in ("pre_revenue", "_x", "X", "a" * 64, "Sessions_30d", "ltv-90d", "9lives"):
        d = metric_definitions({"definitions": {"m": {"cuped": name}}})
        assert d["m"].cuped == name
    assert metric_definitions({"definitions": {"m": {"cap": 5}}})["m"].cuped is None


# ------------------------------------------------------------------ in the snapshot


def experiment(keys: tuple[str, ...] = ("a", "b", "c", "d"), **kw: Any) -> Experiment:
    base: dict[str, Any] = {
        "id": "7f0c0c9e-0000-4000-8000-000000000002", "key": "k", "name": "n",
        "description": "", "owner_team": "t", "status": "running",
        "variants": tuple(Variant(k, 1.0 / len(keys)) for k in keys),
        "metrics": {"primary": "conversion"},
    }
    base.update(kw)
    return Experiment(**base)


def conversions(n: int, rates: dict[str, float]) -> dict[str, MetricAgg]:
    return {k: MetricAgg(round(n * r), round(n * r), float(round(n * r)), float(round(n * r)))
            for k, r in rates.items()}


def build(exp: Experiment, metrics: dict[str, dict[str, MetricAgg]], n: int,
          **kw: Any) -> Any:
    exposures = {v.key: (n, n) for v in exp.variants}
    return build_results(exp, computed_at=NOW, exposures=exposures, metrics=metrics, **kw)


METRICS = {
    "conversion": conversions(3000, {"a": 0.10, "b": 0.118, "c": 0.112, "d": 0.10}),
    "click": conversions(3000, {"a": 0.30, "b": 0.325, "c": 0.30, "d": 0.31}),
}


@pytest.mark.parametrize("mode", ["fixed", "sequential"])
@pytest.mark.parametrize("method", ["holm", "bh"])
@pytest.mark.parametrize("across", [False, True])
def test_snapshot_applies_the_chosen_correction(mode: str, method: str, across: bool) -> None:
    exp = experiment(analysis_mode=mode, metrics={
        "primary": "conversion", "correction": method, "correct_across_metrics": across})
    snap = build(exp, METRICS, 3000).snapshot
    assert snap["correction"] == {"method": method, "across_metrics": across}
    lift = snap["lift"]
    families = [lift] if across else [[r for r in lift if r["metric"] == m]
                                      for m in ("conversion", "click")]
    for fam in families:
        want = stats.adjust([r["p_value"] for r in fam], method)  # type: ignore[arg-type]
        want_any = stats.adjust([r["anytime_p_value"] for r in fam], method)  # type: ignore[arg-type]
        for r, w, wa in zip(fam, want, want_any, strict=True):
            assert r["correction"] == method
            assert r["p_value_adjusted"] == pytest.approx(w) and r["p_value_holm"] == r["p_value_adjusted"]
            assert r["anytime_p_value_adjusted"] == pytest.approx(wa)
            assert r["anytime_p_value_holm"] == r["anytime_p_value_adjusted"]
            if mode == "fixed":
                assert r["significant"] == (w < 0.05)
            else:
                assert r["significant"] == (wa < 0.05 and stats.excludes_zero(
                    tuple(r["anytime_abs_ci_running"])))  # type: ignore[arg-type]


def test_bh_finds_more_than_holm_across_metrics() -> None:
    # Six rows with p 0.0098, 0.0211, 0.0145, 0.0336, 1, 0.33: Holm's first step needs
    # p < 0.05/6 and stops; BH's largest k with p_(k) <= 0.05·k/6 is 3.
    metrics = {
        "conversion": conversions(4000, {"a": 0.10, "b": 0.118, "c": 0.116, "d": 0.117}),
        "click": conversions(4000, {"a": 0.30, "b": 0.322, "c": 0.30, "d": 0.31}),
    }
    found = {}
    for method in ("holm", "bh"):
        exp = experiment(analysis_mode="fixed", metrics={
            "primary": "conversion", "correction": method, "correct_across_metrics": True})
        found[method] = sum(r["significant"] for r in build(exp, metrics, 4000).snapshot["lift"])
    within = sum(r["significant"] for r in build(
        experiment(analysis_mode="fixed", metrics={"primary": "conversion", "correction": "bh"}),
        metrics, 4000).snapshot["lift"])
    print(f"\nsignificant rows of 6: across metrics Holm {found['holm']}, BH {found['bh']}; "
          f"BH within each metric {within}")
    assert (found["holm"], found["bh"]) == (0, 3)
    assert within >= found["bh"]


# ------------------------------------------------------------------ the running interval


def test_running_interval_rules() -> None:
    assert stats.running_interval((0.0, 2.0), None) == (0.0, 2.0)
    assert stats.running_interval(None, (0.0, 2.0)) == (0.0, 2.0)
    assert stats.running_interval((1.0, 3.0), (0.0, 2.0)) == (1.0, 2.0)
    # Disjoint: the previous interval's end nearest the new one.
    assert stats.running_interval((3.0, 4.0), (0.0, 2.0)) == (2.0, 2.0)
    assert stats.running_interval((-4.0, -3.0), (0.0, 2.0)) == (0.0, 0.0)
    assert not stats.excludes_zero((0.0, 0.0)) and stats.excludes_zero((0.5, 1.0))
    assert stats.excludes_zero((-1.0, -0.5)) and not stats.excludes_zero(None)


def test_running_interval_excludes_zero_iff_running_min_p_below_alpha() -> None:
    """The equivalence, proved in docs/STATISTICS.md (at one look |d| > half-width iff
    p < α for the mixture boundary; intervals that all contain 0 meet in 0), checked on random
    paths of (lift, se, n) through the kernels, 20,000 paths of 30 looks."""
    rng = np.random.default_rng(11)
    paths, looks = 20_000, 30
    n = np.cumsum(rng.integers(50, 500, (paths, looks)), axis=1).astype(float)
    se = 3.0 / np.sqrt(n) * rng.uniform(0.8, 1.2, (paths, looks))
    d = rng.normal(rng.normal(0, 0.05, (paths, 1)), se)
    half, p = stats.mixture_cs_arrays(d, se, n)
    lo, hi = d - half, d + half
    run_lo = np.maximum.accumulate(lo, axis=1)
    run_hi = np.minimum.accumulate(hi, axis=1)
    run_p = np.minimum.accumulate(p, axis=1)
    excludes = (run_lo > 0) | (run_hi < 0)
    agree = excludes == (run_p < stats.ALPHA)
    print(f"\nrunning interval excludes 0 vs running-min p < 0.05: {agree.mean():.6f} agree "
          f"over {agree.size} looks, {excludes.mean():.3f} significant")
    assert agree.all()


def _tick(exp: Experiment, aggs: dict[str, MetricAgg], n: int, prev: Any) -> Any:
    return build(exp, {"conversion": aggs}, n,
                 prev_anytime_p=prev.anytime_p if prev else None,
                 prev_snapshot=prev.snapshot if prev else None)


@pytest.mark.parametrize("keys", [("a", "b"), ("a", "b", "c")])
def test_sequential_significance_follows_the_shown_interval_and_stays(
    keys: tuple[str, ...],
) -> None:
    """Random walks of ticks through build_results, carrying the previous snapshot: the running
    interval never widens; significant implies it excludes 0 (and with one treatment, the
    family of one, iff it does, iff the running-min anytime p < α); once significant, always."""
    exp = experiment(keys)
    rng = np.random.default_rng(5)
    flips = seen = 0
    for walk in range(40):
        rates = {k: 0.10 + (0.012 * (i == 1) if walk % 2 else 0.0) for i, k in enumerate(keys)}
        n = 0
        counts = dict.fromkeys(keys, 0)
        prev = None
        was: dict[str, bool] = {}
        widths: dict[str, float] = {}
        for _ in range(25):
            step = int(rng.integers(200, 800))
            n += step
            for k in keys:
                counts[k] += int(rng.binomial(step, rates[k]))
            aggs = {k: MetricAgg(counts[k], counts[k], float(counts[k]), float(counts[k]))
                    for k in keys}
            res = _tick(exp, aggs, n, prev)
            for r in res.snapshot["lift"]:
                t, ci = r["treatment"], r["anytime_abs_ci_running"]
                assert ci is not None
                width = ci[1] - ci[0]
                assert width <= widths.get(t, math.inf) + 1e-12
                widths[t] = width
                shown = stats.excludes_zero((ci[0], ci[1]))
                assert not r["significant"] or shown
                if len(keys) == 2:
                    assert r["significant"] == shown == (r["anytime_p_value"] < stats.ALPHA)
                if was.get(t):
                    assert r["significant"]
                flips += was.get(t, False) != r["significant"]
                was[t] = r["significant"]
                seen += r["significant"]
            prev = res
    print(f"\n{len(keys) - 1} treatment(s): {seen} significant row-ticks, {flips} turned on")
    assert seen > 0


def test_without_the_previous_snapshot_significance_is_the_anytime_p_as_before() -> None:
    exp = experiment(("a", "b"))
    aggs = {"a": MetricAgg(300, 300, 300.0, 300.0), "b": MetricAgg(310, 310, 310.0, 310.0)}
    res = build(exp, {"conversion": aggs}, 3000, prev_anytime_p={("conversion", "b"): 0.001})
    r = res.snapshot["lift"][0]
    # The history's minimum is below α though this tick's interval holds 0: a caller that does
    # not pass the snapshot keeps the old rule rather than losing the result.
    assert r["anytime_p_value"] == 0.001 and not stats.excludes_zero(tuple(r["anytime_abs_ci_running"]))
    assert r["significant"]
    res2 = build(exp, {"conversion": aggs}, 3000, prev_anytime_p={("conversion", "b"): 0.001},
                 prev_snapshot=res.snapshot)
    assert not res2.snapshot["lift"][0]["significant"]


def test_running_interval_resets_when_the_statistic_changes() -> None:
    exp = experiment(("a", "b"))
    aggs = {"a": MetricAgg(300, 300, 300.0, 300.0), "b": MetricAgg(360, 360, 360.0, 360.0)}
    first = build(exp, {"conversion": aggs}, 3000)
    prev = dict(first.snapshot)
    prev["lift"] = [{**first.snapshot["lift"][0], "anytime_abs_ci_running": [0.5, 0.6]}]
    carried = build(exp, {"conversion": aggs}, 3000, prev_snapshot=prev).snapshot["lift"][0]
    assert carried["anytime_abs_ci_running"][0] >= 0.5
    prev["lift"] = [{**prev["lift"][0], "stat": "p50"}]
    reset = build(exp, {"conversion": aggs}, 3000, prev_snapshot=prev).snapshot["lift"][0]
    assert reset["anytime_abs_ci_running"] == reset["anytime_abs_ci"]


def test_a_malformed_stored_interval_is_not_carried() -> None:
    exp = experiment(("a", "b"))
    aggs = {"a": MetricAgg(300, 300, 300.0, 300.0), "b": MetricAgg(360, 360, 360.0, 360.0)}
    first = build(exp, {"conversion": aggs}, 3000)
    for bad in (None, [None, 1.0], [2.0, 1.0], "x", [0.1], [True, 2.0]):
        prev = dict(first.snapshot)
        prev["lift"] = [{**first.snapshot["lift"][0], "anytime_abs_ci_running": bad,
                         "significant": True}]
        r = build(exp, {"conversion": aggs}, 3000, prev_snapshot=prev).snapshot["lift"][0]
        assert r["anytime_abs_ci_running"] == r["anytime_abs_ci"]
