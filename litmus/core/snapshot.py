"""Build the results snapshot (SPEC section 5 JSON shape) and its CSV lift table. Pure."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

import numpy as np

from litmus.core import stats
from litmus.core.models import ArmStats, Experiment

DEFAULT_PRIMARY = "conversion"
REASON_BANDIT_SRM = "bandit allocation moves the weights over time: no fixed split to test"


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


class Exposure(NamedTuple):
    """Exposed units (first exposure) and exposure events of one variant."""

    units: int
    events: int


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
    guardrails = [str(g) for g in experiment.metrics.get("guardrails") or ()]
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
) -> Results:
    """Results snapshot in the SPEC section 5 shape from aggregates; Holm across treatments."""
    weights = weights if weights is not None else {v.key: v.weight for v in experiment.variants}
    prev = prev_anytime_p or {}
    minimize = set(minimize_metrics)
    if experiment.bandit is not None and experiment.bandit.goal == "minimize":
        minimize.add(experiment.bandit.reward_metric)

    keys = [v.key for v in experiment.variants]
    control = experiment.control.key
    treatments = [k for k in keys if k != control]
    exposed = {k: int(exposures.get(k, (0, 0))[0]) for k in keys}

    with_events = [m for m, per in metrics.items() if any(a.count > 0 for a in per.values())]
    order = metric_order(experiment, with_events)

    summaries: dict[str, Any] = {}
    lift: list[dict[str, Any]] = []
    # Carry every stored minimum forward, so a tick that cannot compute one loses nothing.
    anytime_out: dict[tuple[str, str], float] = dict(prev)
    for m in order:
        per = metrics.get(m, {})
        arms = {k: unit_arm(per.get(k), exposed[k]) for k in keys}
        summaries[m] = {k: _summary(per.get(k), arms[k]) for k in keys}

        rows: list[dict[str, Any]] = []
        comparisons = stats.compare_many(
            arms[control],
            [arms[t] for t in treatments],
            prev_anytime_p=[prev.get((m, t)) for t in treatments],
            minimize=m in minimize,
        )
        for t, c in zip(treatments, comparisons, strict=True):
            if c.anytime.p_value is not None:
                anytime_out[(m, t)] = c.anytime.p_value
            rows.append({
                "metric": m,
                "control": control,
                "treatment": t,
                "control_mean": _num(c.control_mean) if arms[control].n else None,
                "treatment_mean": _num(c.treatment_mean) if arms[t].n else None,
                "abs_lift": c.welch.abs_lift,
                "abs_ci": _pair(c.welch.ci),
                "rel_lift": c.relative.rel_lift,
                "rel_ci": _pair(c.relative.ci),
                "p_value": c.welch.p_value,
                "p_value_holm": None,
                "anytime_abs_ci": _pair(c.anytime.ci),
                "anytime_p_value": c.anytime.p_value,
                "anytime_p_value_holm": None,
                "anytime_p_value_now": c.anytime.p_value_now,
                "chance_to_beat": c.chance_to_beat,
                "significant": False,
                "goal": "minimize" if m in minimize else "maximize",
                "control_units": arms[control].n,
                "treatment_units": arms[t].n,
                "se": c.welch.se,
                "df": c.welch.df,
                "reason": c.reason,
            })
        # Holm within a metric: the family is "does any treatment beat control on this metric".
        for row, ph, ah in zip(
            rows,
            stats.holm([r["p_value"] for r in rows]),
            stats.holm([r["anytime_p_value"] for r in rows]),
            strict=True,
        ):
            row["p_value_holm"] = ph
            row["anytime_p_value_holm"] = ah
            row["significant"] = stats.is_significant(ph, ah, experiment.analysis_mode)
        lift.extend(rows)

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
    }
    return Results(snapshot=snapshot, anytime_p=anytime_out)


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


def lift_csv(snapshot: Mapping[str, Any]) -> str:
    """The snapshot's lift table as CSV: one row per (metric, treatment), intervals as _lo/_hi."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LIFT_CSV_COLUMNS)
    for row in snapshot.get("lift", ()):
        flat = dict(row)
        for name in ("abs_ci", "rel_ci", "anytime_abs_ci"):
            ci = row.get(name)
            flat[name + "_lo"], flat[name + "_hi"] = (ci[0], ci[1]) if ci else (None, None)
        w.writerow([_csv_cell(flat.get(col)) for col in LIFT_CSV_COLUMNS])
    return buf.getvalue()
