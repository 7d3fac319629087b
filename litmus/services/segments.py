"""Per-segment results (README, "Segments"): the experiment's results computed on the units of
each value of one exposure attribute, with the same statistics as the whole experiment, and a
test of whether the effect differs across segments. Exploratory: read from the raw events on
request, no correction across segments."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from litmus.core import stats
from litmus.core.models import Experiment, metric_definitions
from litmus.core.snapshot import MetricAgg, build_results, json_safe
from litmus.core.times import iso
from litmus.db import results as db
from litmus.db.results import SegmentRow
from litmus.db.types import Pool

#: Values of one attribute kept as their own segment, in the order their first unit arrived;
#: units with a later value are counted in `other`.
MAX_SEGMENT_VALUES = 50
WARNING = ("Segment results are exploratory: each segment is tested on its own, with no "
           "correction across segments, so with many segments some differences appear by "
           "chance. Confirm a segment's effect in an experiment of its own.")
REASON_QUANTILE = "quantile metrics are not broken down by segment"


def _segment_id(row: SegmentRow) -> tuple[int, str, str | None]:
    """(order, kind, value): values in the order their first unit arrived, other, unset."""
    if row.value is not None:
        return row.rank or 0, "value", row.value
    return (MAX_SEGMENT_VALUES + 1, "other", None) if row.other else (
        MAX_SEGMENT_VALUES + 2, "unset", None)


def _heterogeneity(segments: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cochran's Q per (metric, treatment) over the segments' absolute lifts."""
    by_row: dict[tuple[str, str], tuple[list[float | None], list[float | None]]] = {}
    for seg in segments:
        for row in seg["lift"]:
            est, ses = by_row.setdefault((row["metric"], row["treatment"]), ([], []))
            est.append(row["abs_lift"])
            ses.append(row["se"])
    out = []
    for (metric, treatment), (est, ses) in by_row.items():
        h = stats.cochran_q(est, ses)
        out.append({"metric": metric, "treatment": treatment, "segments": h.segments,
                    "q": h.q, "df": h.df, "p_value": h.p_value, "i2": h.i2,
                    "pooled_abs_lift": h.pooled, "reason": h.reason})
    return out


async def keys(pool: Pool, exp: Experiment) -> list[str]:
    """The attribute names the experiment's exposures carry."""
    return await db.segment_keys(pool, exp.id)


async def segment_results(pool: Pool, exp: Experiment, key: str,
                          snapshot: dict[str, Any]) -> dict[str, Any]:
    """The results of each segment of attribute `key`: value segments in the order their first
    unit arrived, then `other` (values past the tracked ones), then `unset` (no such attribute);
    and the heterogeneity test across the segments with an estimate."""
    definitions = metric_definitions(exp.metrics)
    caps = {m: d.cap for m, d in definitions.items() if d.cap is not None and d.quantile is None}
    quantile = {m for m, d in definitions.items() if d.quantile is not None}
    rows = await db.segment_aggregates(pool, exp.id, key, MAX_SEGMENT_VALUES, caps)
    variant_keys = [v.key for v in exp.variants]
    groups: dict[tuple[int, str, str | None], list[SegmentRow]] = {}
    for r in rows:
        if 0 <= r.variant < len(variant_keys):
            groups.setdefault(_segment_id(r), []).append(r)
    computed_at = str(snapshot.get("computed_at") or "")
    weights = snapshot.get("weights") or {v.key: v.weight for v in exp.variants}
    minimize = set(exp.metrics.get("minimize", []) or [])
    segments = []
    for (_, kind, value), members in sorted(groups.items(), key=lambda g: g[0][0]):
        exposures = {k: (0, 0) for k in variant_keys}
        metrics: dict[str, dict[str, MetricAgg]] = {}
        for r in members:
            k = variant_keys[r.variant]
            if r.metric is None:
                exposures[k] = (r.agg.units, r.agg.count)
            elif r.metric not in quantile:
                metrics.setdefault(r.metric, {})[k] = r.agg
        res = build_results(exp, computed_at=computed_at, exposures=exposures, metrics=metrics,
                            weights=weights, minimize_metrics=minimize)
        snap = res.snapshot
        # Per segment: no CUPED (the covariate sums are kept for the whole experiment only)
        # and no running interval (each breakdown is one look).
        lift = [{k: v for k, v in row.items() if k != "cuped"}
                for row in snap["lift"] if row["metric"] not in quantile]
        segments.append({
            "kind": kind, "value": value,
            "units": sum(u for u, _ in exposures.values()),
            # No timeline: the breakdown is of the totals.
            "exposures": {k: v for k, v in snap["exposures"].items() if k != "timeline"},
            "srm": snap["srm"],
            "metrics": {m: s for m, s in snap["metrics"].items() if m not in quantile},
            "lift": lift,
        })
    out: dict[str, Any] = json_safe({
        "experiment_id": exp.id, "experiment_key": exp.key, "segment": key,
        "computed_at": iso(datetime.now(UTC)), "snapshot_computed_at": computed_at,
        "exploratory": True, "warning": WARNING, "tracked_values": MAX_SEGMENT_VALUES,
        "not_segmented": {m: REASON_QUANTILE for m in sorted(quantile)},
        "segments": segments,
        "heterogeneity": _heterogeneity(segments),
    })
    return out
