"""Guardrails that act: the trip decision for each treatment against control. Pure.

A guardrail names a metric, a margin and an action. The metric is read by its definition
(statistic and direction, litmus/core/models.py); the *harm* of a treatment is its relative
change against control in the bad direction (for `direction: decrease`, a rise; for `increase`,
a fall). The harm's standard error is the delta method's on the relative scale,
Var = se_t²/c² + t²·se_c²/c⁴, with each arm's se that of its statistic (s/√n for a unit mean,
the order-statistic se for a quantile). A guardrail trips when the lower end of the
normal-mixture confidence sequence of the harm (the anytime interval of the results, with n
the units, or the events for a quantile, of both arms) is above the margin, once both arms have
at least MIN_UNITS. The sequence is valid however often it is looked at, so checking at every
recompute does not inflate false trips the way a fixed-horizon test at every look would.

`harm_arrays` works elementwise on numpy arrays so a simulation can check the very decision
the server takes over many seeds and looks at once; `evaluate` is the scalar form over one
experiment's estimates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from litmus.core.models import DEFAULT_DEFINITION, Experiment, MetricDefinition, metric_definitions
from litmus.core.quantiles import QuantileEstimate
from litmus.core.stats import ALPHA, mixture_cs_arrays

Action = Literal["alert", "pause", "rollback"]
ACTIONS: tuple[str, ...] = ("alert", "pause", "rollback")
#: Units (events, for a quantile) each arm needs before a guardrail may trip.
MIN_UNITS = 100

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Guardrail:
    """A metric watched for harm: trips when the harm is surely above `margin` (relative)."""

    metric: str
    margin: float = 0.0
    action: Action = "alert"


def guardrails_of(metrics: Mapping[str, Any]) -> tuple[Guardrail, ...]:
    """The guardrails of an experiment's `metrics` JSON; a bare name is margin 0, alert."""
    out: list[Guardrail] = []
    for g in metrics.get("guardrails") or ():
        if isinstance(g, str):
            out.append(Guardrail(g))
        elif isinstance(g, Mapping) and isinstance(g.get("metric"), str):
            out.append(Guardrail(g["metric"], float(g.get("margin", 0.0) or 0.0),
                                 g.get("action", "alert")))
    return tuple(out)


def guardrail_names(metrics: Mapping[str, Any]) -> list[str]:
    """The metric names of an experiment's guardrails, in order."""
    return [g.metric for g in guardrails_of(metrics)]


def guardrail_to_dict(g: Guardrail) -> dict[str, Any]:
    """A guardrail as JSON (always the object form)."""
    return {"metric": g.metric, "margin": g.margin, "action": g.action}


@dataclass(frozen=True, slots=True)
class HarmArrays:
    """Elementwise harm, its anytime interval, and whether the guardrail trips."""

    harm: FloatArray
    se: FloatArray
    lo: FloatArray
    hi: FloatArray
    ready: BoolArray  # both arms have the minimum sample
    trips: BoolArray


def harm_arrays(
    value_c: ArrayLike, se_c: ArrayLike, n_c: ArrayLike,
    value_t: ArrayLike, se_t: ArrayLike, n_t: ArrayLike,
    *, decrease: bool, margin: float | ArrayLike = 0.0,
    min_units: int = MIN_UNITS, alpha: float = ALPHA,
) -> HarmArrays:
    """Harm = relative change in the bad direction: (t − c)/|c| when `decrease` is good, its
    negative otherwise; delta-method se; normal-mixture interval with n = n_c + n_t; trips when
    its lower end exceeds `margin` and both arms have `min_units`."""
    c, sc, kc = (np.asarray(x, dtype=np.float64) for x in (value_c, se_c, n_c))
    t, st, kt = (np.asarray(x, dtype=np.float64) for x in (value_t, se_t, n_t))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = (t - c) / np.abs(c)
        se = np.sqrt(st**2 / c**2 + t**2 * sc**2 / c**4)
    harm = rel if decrease else -rel
    defined = np.isfinite(harm) & np.isfinite(se) & (c != 0.0)
    half, _ = mixture_cs_arrays(np.where(defined, harm, np.nan), np.where(defined, se, np.nan),
                                kc + kt, alpha)
    lo, hi = harm - half, harm + half
    ready = (kc >= min_units) & (kt >= min_units)
    ok = defined & np.isfinite(half)
    trips = ready & ok & (lo > np.asarray(margin, dtype=np.float64))
    nan = np.float64(np.nan)
    return HarmArrays(
        harm=np.where(defined, harm, nan), se=np.where(defined, se, nan),
        lo=np.where(ok, lo, nan), hi=np.where(ok, hi, nan), ready=ready, trips=trips)


@dataclass(frozen=True, slots=True)
class Check:
    """One guardrail of one treatment against control at one recompute."""

    guardrail: Guardrail
    treatment: str
    control: str
    definition: MetricDefinition
    harm: float | None
    interval: tuple[float, float] | None
    n_control: int
    n_treatment: int
    ready: bool
    trips: bool


def _opt(x: Any) -> float | None:
    f = float(x)
    return f if math.isfinite(f) else None


def evaluate(experiment: Experiment,
             estimates: Mapping[str, Mapping[str, QuantileEstimate]],
             min_units: int = MIN_UNITS) -> list[Check]:
    """Every guardrail for every treatment against control, from each variant's estimate of
    the guardrail's metric by its definition's statistic (metric -> variant -> estimate)."""
    definitions = metric_definitions(experiment.metrics)
    control = experiment.control.key
    treatments = [v.key for v in experiment.variants if v.key != control]
    empty = QuantileEstimate(None, None, 0)
    out: list[Check] = []
    for g in guardrails_of(experiment.metrics):
        d = definitions.get(g.metric, DEFAULT_DEFINITION)
        per = estimates.get(g.metric, {})
        ec = per.get(control, empty)
        ets = [per.get(t, empty) for t in treatments]
        if not ets:
            continue

        def num(x: float | None) -> float:
            return math.nan if x is None else x

        h = harm_arrays(num(ec.value), num(ec.se), ec.n,
                        [num(e.value) for e in ets], [num(e.se) for e in ets],
                        [e.n for e in ets], decrease=d.minimize, margin=g.margin,
                        min_units=min_units)
        for i, (t, e) in enumerate(zip(treatments, ets, strict=True)):
            lo, hi = _opt(h.lo[i]), _opt(h.hi[i])
            out.append(Check(
                guardrail=g, treatment=t, control=control, definition=d,
                harm=_opt(h.harm[i]),
                interval=(lo, hi) if lo is not None and hi is not None else None,
                n_control=ec.n, n_treatment=e.n, ready=bool(h.ready[i]),
                trips=bool(h.trips[i])))
    return out


@dataclass(frozen=True, slots=True)
class Trip:
    """A recorded trip: the first time a guardrail tripped for one treatment."""

    metric: str
    treatment: str
    action: str
    margin: float
    harm: float | None
    interval: tuple[float, float] | None
    n_control: int
    n_treatment: int
    tripped_at: str


def trip_of(check: Check, at: str) -> Trip:
    """The trip a tripping check records."""
    return Trip(check.guardrail.metric, check.treatment, check.guardrail.action,
                check.guardrail.margin, check.harm, check.interval, check.n_control,
                check.n_treatment, at)


def _pair(ci: tuple[float, float] | None) -> list[float] | None:
    return [ci[0], ci[1]] if ci is not None else None


def trip_to_dict(t: Trip) -> dict[str, Any]:
    """A trip as JSON (the snapshot, the audit log and the webhook share it)."""
    return {"metric": t.metric, "treatment": t.treatment, "action": t.action,
            "margin": t.margin, "harm": t.harm, "interval": _pair(t.interval),
            "n_control": t.n_control, "n_treatment": t.n_treatment, "tripped_at": t.tripped_at}


def snapshot_block(checks: Sequence[Check], trips: Mapping[tuple[str, str], Trip],
                   min_units: int = MIN_UNITS) -> list[dict[str, Any]]:
    """The snapshot's `guardrails`: per guardrail and treatment its status (ok | tripped),
    the current harm and anytime interval, the units compared, and the recorded trip."""
    out = []
    for c in checks:
        trip = trips.get((c.guardrail.metric, c.treatment))
        out.append({
            "metric": c.guardrail.metric,
            "treatment": c.treatment,
            "control": c.control,
            "margin": c.guardrail.margin,
            "action": c.guardrail.action,
            "stat": c.definition.stat,
            "direction": c.definition.direction,
            "status": "tripped" if trip is not None else "ok",
            "harm": c.harm,
            "interval": _pair(c.interval),
            "n": {"control": c.n_control, "treatment": c.n_treatment},
            "min_units": min_units,
            "ready": c.ready,
            "tripped_at": trip.tripped_at if trip is not None else None,
            "trip": trip_to_dict(trip) if trip is not None else None,
            "message": describe(trip, c.definition.direction) if trip is not None else None,
        })
    return out


_VERBS = {"alert": "Guardrail alert", "pause": "Paused by guardrail",
          "rollback": "Rolled back to control by guardrail"}


def _pct(x: float, sign: bool) -> str:
    return f"{x * 100:+.0f}%" if sign else f"{x * 100:.0f}%"


def describe(trip: Trip, direction: str) -> str:
    """The trip in words: 'Paused by guardrail: error_rate of model_b is +120% above control
    [+85%, +160%] since 10:42:07 UTC' (for a metric where higher is good: '... 30% below')."""
    head = f"{_VERBS.get(trip.action, 'Guardrail')}: {trip.metric} of {trip.treatment}"
    since = trip.tripped_at[11:19] + " UTC" if len(trip.tripped_at) >= 19 else trip.tripped_at
    above = direction == "decrease"
    where = "above" if above else "below"
    if trip.harm is None:
        return f"{head} is worse than control since {since}"
    ci = (f" [{_pct(trip.interval[0], above)}, {_pct(trip.interval[1], above)}]"
          if trip.interval is not None else "")
    return f"{head} is {_pct(trip.harm, above)} {where} control{ci} since {since}"
