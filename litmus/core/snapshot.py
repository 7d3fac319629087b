"""Build the results snapshot (the JSON of GET /api/v1/experiments/{id}/results) and its CSV
lift table. Pure."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np

from litmus.core import stats
from litmus.core.counterfactual import PropensitySums, weighted_means
from litmus.core.cuped import CupedSums, cuped_compare
from litmus.core.guardrails import guardrail_names
from litmus.core.models import (
    DEFAULT_DEFINITION,
    QUANTILES,
    ArmStats,
    Correction,
    Experiment,
    MetricDefinition,
    correction_settings,
    metric_definitions,
)
from litmus.core.quantiles import Z95, QuantileEstimate, Sketch
from litmus.core.stats import Interval

DEFAULT_PRIMARY = "conversion"
REASON_BANDIT_SRM = "bandit allocation moves the weights over time: no fixed split to test"
REASON_CUPED_QUANTILE = "CUPED adjusts means: the metric is read by a quantile"
REASON_CUPED_NO_SUMS = "no covariate sums for this metric yet"
#: The risks are expected losses in relative lift (gbstats' default `risk_type`).
RISK_TYPE = "relative"
#: The quantiles the metric summaries show for a metric read by a quantile.
SUMMARY_QUANTILES: tuple[str, ...] = ("p50", "p95", "p99")


@dataclass(frozen=True, slots=True)
class MetricAgg:
    """One metric in one variant, attributed to exposed units.

    `count` events, `units` distinct units with at least one event, `sum` of event values, and
    `sum_sq` the sum over those units of the square of each unit's total (Σ_u (Σ_e value)²).
    Exposed units without events are the zeros that `unit_arm` adds.
    """

    count: int
    units: int
    sum: float
    sum_sq: float


@dataclass(frozen=True, slots=True)
class Results:
    """A snapshot ready for JSON, plus the anytime p-values to persist for the next tick."""

    snapshot: dict[str, Any]
    # (metric, treatment) -> running minimum anytime p; pass it back as `prev_anytime_p`.
    anytime_p: dict[tuple[str, str], float] = field(default_factory=dict)


LIFT_CSV_COLUMNS: tuple[str, ...] = (
    "metric", "control", "treatment", "control_mean", "treatment_mean", "abs_lift",
    "abs_ci_lo", "abs_ci_hi", "rel_lift", "rel_ci_lo", "rel_ci_hi", "p_value", "p_value_holm",
    "anytime_abs_ci_lo", "anytime_abs_ci_hi", "anytime_p_value", "chance_to_beat", "significant",
    "p_value_adjusted", "anytime_p_value_adjusted", "correction", "anytime_abs_ci_running_lo",
    "anytime_abs_ci_running_hi", "risk_control", "risk_treatment",
)


def unit_arm(agg: MetricAgg | None, exposed_units: int) -> ArmStats:
    """Unit-level ArmStats over all exposed units: units without events add n but 0 to sums."""
    if agg is None:
        return ArmStats(max(exposed_units, 0), 0.0, 0.0)
    # Events can reach units whose exposure is not in the same aggregate yet; never let n fall
    # below the units actually seen, or the variance could go negative.
    return ArmStats(max(exposed_units, agg.units, 0), float(agg.sum), float(agg.sum_sq))


def metric_order(experiment: Experiment, with_events: Collection[str]) -> list[str]:
    """Metrics to report: primary first, then guardrails, then the rest alphabetically."""
    primary = str(experiment.metrics.get("primary") or DEFAULT_PRIMARY)
    guardrails = guardrail_names(experiment.metrics)
    order: list[str] = []
    # Declared metrics are shown even before their first event: a zero is news too.
    for m in [primary, *guardrails, *sorted(with_events)]:
        if m not in order:
            order.append(m)
    return order


def json_safe(value: Any) -> Any:
    """A deep copy with numpy scalars made plain and non-finite floats made None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    return str(value)


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _pair(ci: tuple[float, float] | None) -> list[float] | None:
    return [ci[0], ci[1]] if ci is not None else None


def _exposures(
    experiment: Experiment,
    exposures: Mapping[str, tuple[int, int]],
    weights: Mapping[str, float],
    timeline: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    keys = [v.key for v in experiment.variants]
    units = {k: int(exposures.get(k, (0, 0))[0]) for k in keys}
    total = sum(units.values())
    variants = {
        k: {
            "units": units[k],
            "events": int(exposures.get(k, (0, 0))[1]),
            "share": units[k] / total if total else None,
            "weight": _num(float(weights[k])) if k in weights else None,
        }
        for k in keys
    }
    return {"total_units": total, "variants": variants, "timeline": json_safe(list(timeline))}


def _srm(experiment: Experiment, units: Sequence[int], weights: Sequence[float]) -> dict[str, Any]:
    if experiment.allocation == "bandit":
        return {"p_value": None, "flagged": False, "chi2": None, "reason": REASON_BANDIT_SRM}
    s = stats.srm(units, weights)
    return {"p_value": s.p_value, "flagged": s.flagged, "chi2": s.chi2, "reason": s.reason}


def _summary(agg: MetricAgg | None, arm: ArmStats) -> dict[str, Any]:
    count = int(agg.count) if agg else 0
    total = float(agg.sum) if agg else 0.0
    return {
        "count": count,
        "units": int(agg.units) if agg else 0,
        "sum": _num(total),
        "mean": _num(total / count) if count else None,
        "exposed_units": arm.n,
        "unit_mean": _num(arm.mean) if arm.n else None,
        "unit_variance": _num(stats.variance(arm)) if arm.n >= 2 else None,
    }


def metric_estimate(definition: MetricDefinition, agg: MetricAgg | None, exposed_units: int,
                    sketch: Sketch | None) -> QuantileEstimate:
    """One variant's value of a metric by its definition's statistic, with its se: the
    quantile of its events (order-statistic se), or the unit-level mean (se = s/√n)."""
    q = definition.quantile
    if q is not None:
        return sketch.estimate(q) if sketch is not None else QuantileEstimate(None, None, 0)
    arm = unit_arm(agg, exposed_units)
    if arm.n == 0:
        return QuantileEstimate(None, None, 0)
    se = math.sqrt(stats.variance(arm) / arm.n) if arm.n >= 2 else None
    return QuantileEstimate(float(arm.mean), se, arm.n)


def _quantile_summary(sketch: Sketch | None) -> dict[str, Any]:
    if sketch is None or sketch.count == 0:
        return {"events": 0, **dict.fromkeys(SUMMARY_QUANTILES)}
    return {"events": sketch.count,
            **{name: _num(sketch.quantile(QUANTILES[name])) for name in SUMMARY_QUANTILES}}


def build_results(
    experiment: Experiment,
    *,
    computed_at: str,
    exposures: Mapping[str, tuple[int, int]],
    metrics: Mapping[str, Mapping[str, MetricAgg]],
    weights: Mapping[str, float] | None = None,
    timeline: Sequence[Mapping[str, Any]] = (),
    unattributed: Mapping[str, tuple[int, float]] | None = None,
    prev_anytime_p: Mapping[tuple[str, str], float] | None = None,
    minimize_metrics: Collection[str] = (),
    bandit: Mapping[str, Any] | None = None,
    sketches: Mapping[str, Mapping[str, Sketch]] | None = None,
    propensity: Mapping[str, Mapping[str, PropensitySums]] | None = None,
    propensity_counts: Mapping[str, int] | None = None,
    cuped: Mapping[str, Mapping[str, CupedSums]] | None = None,
    prev_snapshot: Mapping[str, Any] | None = None,
) -> Results:
    """The results snapshot from aggregates; Holm (or Benjamini–Hochberg) across treatments.

    A metric follows its definition (`experiment.metrics["definitions"]`): its direction
    sets which way is better, and a quantile statistic compares the quantiles of the events'
    values in `sketches` (metric -> variant -> sketch) instead of unit means. A capped
    metric's aggregates are expected capped already (the caller has the per-unit values).

    The correction is `metrics.correction` ("holm" or "bh") over each metric's treatments, or
    over every row with `metrics.correct_across_metrics`. A metric whose definition names a
    `cuped` covariate gets, in each lift row, the regression-adjusted comparison from
    `cuped` (metric -> variant -> CupedSums, the covariate's sums; capped like the metric).
    `prev_snapshot`, the snapshot stored by the previous tick, carries each row's running
    anytime interval and, in sequential mode, its significance (docs/STATISTICS.md)."""
    weights = weights if weights is not None else {v.key: v.weight for v in experiment.variants}
    prev = prev_anytime_p or {}
    definitions = metric_definitions(experiment.metrics)
    sketches = sketches or {}
    minimize = set(minimize_metrics) | {m for m, d in definitions.items() if d.minimize}
    if experiment.bandit is not None and experiment.bandit.goal == "minimize":
        minimize.add(experiment.bandit.reward_metric)

    correction = correction_settings(experiment.metrics)
    carried = _carried(prev_snapshot, experiment, definitions, correction.method,
                       correction.across_metrics)
    cuped = cuped or {}

    keys = [v.key for v in experiment.variants]
    control = experiment.control.key
    treatments = [k for k in keys if k != control]
    exposed = {k: int(exposures.get(k, (0, 0))[0]) for k in keys}

    with_events = [m for m, per in metrics.items() if any(a.count > 0 for a in per.values())]
    order = metric_order(experiment, with_events)

    summaries: dict[str, Any] = {}
    # Per metric and variant: the value its definition's statistic reads, with se and 95% CI.
    estimates: dict[str, dict[str, Any]] = {}
    lift: list[dict[str, Any]] = []
    families: list[list[dict[str, Any]]] = []
    # Carry every stored minimum forward, so a tick that cannot compute one loses nothing.
    anytime_out: dict[tuple[str, str], float] = dict(prev)
    for m in order:
        per = metrics.get(m, {})
        definition = definitions.get(m, DEFAULT_DEFINITION)
        arms = {k: unit_arm(per.get(k), exposed[k]) for k in keys}
        summaries[m] = {k: _summary(per.get(k), arms[k]) for k in keys}
        q = definition.quantile
        per_sketch = sketches.get(m, {})
        if q is not None:
            for k in keys:
                summaries[m][k]["quantiles"] = _quantile_summary(per_sketch.get(k))
        if definition.cap is not None:
            for k in keys:
                summaries[m][k]["cap"] = definition.cap

        estimates[m] = {}
        for k in keys:
            e = metric_estimate(definition, per.get(k), exposed[k], per_sketch.get(k))
            ci = None
            if e.value is not None and e.se is not None:
                ci = [e.value - Z95 * e.se, e.value + Z95 * e.se]
            estimates[m][k] = {"stat": definition.stat, "value": _num(e.value),
                               "se": _num(e.se), "ci": json_safe(ci), "n": e.n}

        rows: list[dict[str, Any]] = []
        if q is not None:
            est = {k: metric_estimate(definition, None, 0, per_sketch.get(k)) for k in keys}
            comparisons = stats.compare_quantiles(
                est[control], [est[t] for t in treatments],
                prev_anytime_p=[prev.get((m, t)) for t in treatments], minimize=m in minimize)
            has = {k: est[k].n > 0 for k in keys}
            size = {k: est[k].n for k in keys}
        else:
            comparisons = stats.compare_many(
                arms[control],
                [arms[t] for t in treatments],
                prev_anytime_p=[prev.get((m, t)) for t in treatments],
                minimize=m in minimize,
            )
            has = {k: arms[k].n > 0 for k in keys}
            size = {k: arms[k].n for k in keys}
        cuped_rows = _cuped_rows(definition, cuped.get(m), control, treatments)
        for t, c in zip(treatments, comparisons, strict=True):
            if c.anytime.p_value is not None:
                anytime_out[(m, t)] = c.anytime.p_value
            running = stats.running_interval(c.anytime.ci, carried.get((m, t), (None, False))[0])
            rows.append({
                "metric": m,
                "stat": definition.stat,
                "control": control,
                "treatment": t,
                "control_mean": _num(c.control_mean) if has[control] else None,
                "treatment_mean": _num(c.treatment_mean) if has[t] else None,
                "abs_lift": c.welch.abs_lift,
                "abs_ci": _pair(c.welch.ci),
                "rel_lift": c.relative.rel_lift,
                "rel_ci": _pair(c.relative.ci),
                "p_value": c.welch.p_value,
                "p_value_holm": None,
                "p_value_adjusted": None,
                "correction": correction.method,
                "anytime_abs_ci": _pair(c.anytime.ci),
                "anytime_abs_ci_running": _pair(running),
                "anytime_p_value": c.anytime.p_value,
                "anytime_p_value_holm": None,
                "anytime_p_value_adjusted": None,
                "anytime_p_value_now": c.anytime.p_value_now,
                "chance_to_beat": c.chance_to_beat,
                "risk_control": c.risk_control,
                "risk_treatment": c.risk_treatment,
                "risk_type": RISK_TYPE,
                "significant": False,
                "goal": "minimize" if m in minimize else "maximize",
                "control_units": size[control],
                "treatment_units": size[t],
                "se": c.welch.se,
                "df": c.welch.df,
                "reason": c.reason,
                "cuped": cuped_rows.get(t),
            })
        families.append(rows)
        lift.extend(rows)
    # Within a metric the family is "does any treatment beat control on this metric"; across
    # metrics it is every row of the table.
    # A caller that carries the anytime p but not the snapshot it came with has no running
    # interval to follow: significance is then the adjusted anytime p's alone, as before.
    follow = prev_snapshot is not None or not prev
    for family in ([lift] if correction.across_metrics else families):
        _correct(family, correction.method, experiment.analysis_mode, carried, follow)

    snapshot: dict[str, Any] = {
        "experiment_id": experiment.id,
        "experiment_key": experiment.key,
        "computed_at": computed_at,
        "status": experiment.status,
        "analysis_mode": experiment.analysis_mode,
        "primary_metric": order[0],
        "control": control,
        "alpha": stats.ALPHA,
        "exposures": _exposures(experiment, exposures, weights, timeline),
        "srm": _srm(
            experiment,
            [exposed[k] for k in keys],
            [float(weights.get(k, 0.0)) for k in keys],
        ),
        "metrics": summaries,
        "lift": lift,
        "unattributed": {
            str(m): {"count": int(cs[0]), "sum": _num(float(cs[1]))}
            for m, cs in (unattributed or {}).items()
        },
        "bandit": json_safe(dict(bandit)) if bandit is not None else None,
        "estimates": estimates,
        "propensity": _propensity(propensity or {}, propensity_counts or {}, keys),
        # A definition's covariate only when it names one: the block reads as before otherwise.
        "definitions": {m: {"direction": d.direction, "stat": d.stat, "cap": d.cap,
                            **({"cuped": d.cuped} if d.cuped is not None else {})}
                        for m, d in definitions.items()},
        "correction": {"method": correction.method,
                       "across_metrics": correction.across_metrics},
    }
    return Results(snapshot=snapshot, anytime_p=anytime_out)


def _correct(rows: Sequence[dict[str, Any]], method: Correction, mode: str,
             carried: Mapping[tuple[str, str], tuple[Interval | None, bool]],
             follow: bool = True) -> None:
    """Adjust one family's p-values and decide each row's significance.

    Fixed mode: the adjusted Welch p < α. Sequential mode: the row's running anytime interval
    excludes 0 and the adjusted running-minimum anytime p < α — the interval shown never
    contradicts the flag — or the row was significant at the previous tick (the running
    interval only narrows, so it still excludes 0). Without `follow`, the adjusted anytime
    p < α alone."""
    adj = stats.adjust([r["p_value"] for r in rows], method)
    adj_any = stats.adjust([r["anytime_p_value"] for r in rows], method)
    for row, ph, ah in zip(rows, adj, adj_any, strict=True):
        row["p_value_holm"] = row["p_value_adjusted"] = ph
        row["anytime_p_value_holm"] = row["anytime_p_value_adjusted"] = ah
        if mode == "sequential" and not follow:
            row["significant"] = stats.is_significant(ph, ah, "sequential")
        elif mode == "sequential":
            running = row["anytime_abs_ci_running"]
            shown = stats.excludes_zero((running[0], running[1]) if running else None)
            before = carried.get((row["metric"], row["treatment"]), (None, False))[1]
            row["significant"] = shown and (before or (ah is not None and ah < stats.ALPHA))
        else:
            row["significant"] = stats.is_significant(ph, ah, "fixed")


def _carried(prev: Mapping[str, Any] | None, experiment: Experiment,
             definitions: Mapping[str, MetricDefinition], method: str, across: bool,
             ) -> dict[tuple[str, str], tuple[Interval | None, bool]]:
    """Per (metric, treatment) of the previous snapshot: its running anytime interval, and
    whether it was significant in sequential mode under the same correction. A row is carried
    only while it measures the same thing (same statistic and cap) as now."""
    if not prev:
        return {}
    prev_defs = prev.get("definitions") or {}
    prev_corr = prev.get("correction") or {"method": "holm", "across_metrics": False}
    same_rule = (prev.get("analysis_mode") == "sequential" == experiment.analysis_mode
                 and prev_corr.get("method") == method
                 and bool(prev_corr.get("across_metrics")) == across)
    out: dict[tuple[str, str], tuple[Interval | None, bool]] = {}
    for row in prev.get("lift") or ():
        m, t = row.get("metric"), row.get("treatment")
        d = definitions.get(m, DEFAULT_DEFINITION)
        p = prev_defs.get(m) or {}
        if row.get("stat", "mean") != d.stat or p.get("cap") != d.cap:
            continue
        interval = _stored_interval(row.get("anytime_abs_ci_running"))
        # Significance is carried only with the interval that showed it.
        out[(m, t)] = (interval, interval is not None and same_rule
                       and bool(row.get("significant")))
    return out


def _stored_interval(ci: Any) -> Interval | None:
    """A stored [lo, hi] of finite numbers, else None."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return None
    lo, hi = ci
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (lo, hi)) or lo > hi:
        return None
    return (float(lo), float(hi))


def _cuped_rows(definition: MetricDefinition, sums: Mapping[str, CupedSums] | None,
                control: str, treatments: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """Each treatment's `cuped` object for a metric whose definition names a covariate."""
    if definition.cuped is None:
        return {}
    out: dict[str, dict[str, Any] | None] = {}
    for t in treatments:
        head: dict[str, Any] = {"covariate": definition.cuped}
        if definition.quantile is not None:
            out[t] = {**head, "reason": REASON_CUPED_QUANTILE}
        elif sums is None or control not in sums or t not in sums:
            out[t] = {**head, "reason": REASON_CUPED_NO_SUMS}
        else:
            out[t] = json_safe({**head, **cuped_compare(sums[control], sums[t]).to_dict()})
    return out


def _propensity(sums: Mapping[str, Mapping[str, PropensitySums]], counts: Mapping[str, int],
                keys: Sequence[str]) -> dict[str, Any]:
    """Per metric and variant the inverse-propensity-weighted mean (with its se) beside the
    plain mean over the same units, and the sums the counterfactual route estimates from."""
    metrics: dict[str, Any] = {}
    for m, per in sums.items():
        wm = weighted_means(per)
        metrics[m] = {}
        for k in keys:
            s = per.get(k, PropensitySums())
            mean, se = wm.get(k, (None, None))
            metrics[m][k] = {
                "units": int(s.n), "weighted_mean": _num(mean) if mean is not None else None,
                "weighted_se": _num(se) if se is not None else None,
                "mean": _num(s.r / s.n) if s.n else None,
                "sums": {f: int(s.n) if f == "n" else _num(float(getattr(s, f)))
                         for f in PropensitySums.__slots__},
            }
    return {**{k: int(v) for k, v in counts.items()}, "metrics": metrics}


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    s = str(value)
    # Spreadsheets execute cells starting with these characters (CSV injection).
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


HISTORY_FIELDS = ("metric", "control", "treatment", "control_units", "treatment_units",
                  "abs_lift", "abs_ci", "rel_lift", "rel_ci", "anytime_abs_ci",
                  "anytime_abs_ci_running", "significant")


def lift_point(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What the lift history keeps of a snapshot: per lift row its estimate and intervals
    (README, "Reading the results": lift over time). Empty while no row has an estimate."""
    rows = [{k: row.get(k) for k in HISTORY_FIELDS} for row in snapshot.get("lift") or ()]
    if all(r["abs_lift"] is None and r["rel_lift"] is None for r in rows):
        return []
    return rows


def lift_csv(snapshot: Mapping[str, Any]) -> str:
    """The snapshot's lift table as CSV: one row per (metric, treatment), intervals as _lo/_hi."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LIFT_CSV_COLUMNS)
    for row in snapshot.get("lift", ()):
        flat = dict(row)
        for name in ("abs_ci", "rel_ci", "anytime_abs_ci", "anytime_abs_ci_running"):
            ci = row.get(name)
            flat[name + "_lo"], flat[name + "_hi"] = (ci[0], ci[1]) if ci else (None, None)
        w.writerow([_csv_cell(flat.get(col)) for col in LIFT_CSV_COLUMNS])
    return buf.getvalue()
