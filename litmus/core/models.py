"""Plain, immutable domain types shared by every layer. Pure: stdlib and core's errors only."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from litmus.core.errors import ValidationFailed
from litmus.core.times import iso

Status = Literal["draft", "running", "paused", "stopped"]
Allocation = Literal["fixed", "bandit"]
AnalysisMode = Literal["sequential", "fixed"]
RewardType = Literal["binary", "continuous"]
Goal = Literal["maximize", "minimize"]
Direction = Literal["increase", "decrease"]
Stat = Literal["mean", "p50", "p90", "p95", "p99"]
Correction = Literal["holm", "bh"]
#: Multiple-comparison corrections: Holm (family-wise error) or Benjamini–Hochberg (FDR).
CORRECTIONS: tuple[str, ...] = ("holm", "bh")

#: The quantile each quantile statistic names.
QUANTILES: dict[str, float] = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
STATS: tuple[str, ...] = ("mean", *QUANTILES)
MAX_CONSTRAINTS = 5

STATUSES: tuple[str, ...] = ("draft", "running", "paused", "stopped")
TARGETING_OPS: tuple[str, ...] = (
    "eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "regex", "exists",
)


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of an experiment: usually one ML model and its serving config."""

    key: str
    weight: float
    name: str | None = None
    config: Any = None
    is_control: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """A targeting rule: `attribute op value`; every rule must hold."""

    attribute: str
    op: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    """How one metric is read: which way is good, the statistic compared, a per-unit cap."""

    direction: Direction = "increase"
    stat: Stat = "mean"
    cap: float | None = None
    # A covariate's name: the lift rows add the CUPED (regression-adjusted) comparison.
    cuped: str | None = None

    @property
    def quantile(self) -> float | None:
        """The quantile a `pNN` statistic names (None for the mean)."""
        return QUANTILES.get(self.stat)

    @property
    def minimize(self) -> bool:
        """Lower is better."""
        return self.direction == "decrease"


DEFAULT_DEFINITION = MetricDefinition()


#: A covariate's name, as a metric definition's `cuped` names it: the API's names
#: (lower-case letters, digits, _ or -) pass, and stored ones read before that check too.
COVARIATE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")


def _refuse(field_path: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"invalid metrics: {field_path}: {message}",
                            fields={field_path: message})


def _covariate(name: str, value: Any) -> str | None:
    """A definition's `cuped` covariate name, checked: None, or COVARIATE_NAME."""
    if value is None:
        return None
    if not isinstance(value, str) or COVARIATE_NAME.fullmatch(value) is None:
        raise _refuse(f"metrics.definitions.{name}.cuped",
                      f"{value!r} is not a covariate name: a letter, digit or _, then up "
                      "to 63 letters, digits, _ or -")
    return value


def metric_definitions(metrics: Mapping[str, Any]) -> dict[str, MetricDefinition]:
    """Every defined metric's definition, from an experiment's `metrics` JSON.

    The older `minimize` list is kept as a shorthand: a metric listed there without a
    definition reads as `direction: decrease`. A `cuped` that is not a covariate name raises
    ValidationFailed naming `metrics.definitions.<metric>.cuped`."""
    out: dict[str, MetricDefinition] = {}
    for name, d in (metrics.get("definitions") or {}).items():
        cap = d.get("cap")
        out[name] = MetricDefinition(direction=d.get("direction", "increase"),
                                     stat=d.get("stat", "mean"),
                                     cap=None if cap is None else float(cap),
                                     cuped=_covariate(name, d.get("cuped")))
    for name in metrics.get("minimize") or ():
        out.setdefault(name, MetricDefinition(direction="decrease"))
    return out


@dataclass(frozen=True, slots=True)
class CorrectionSettings:
    """How the lift table's p-values are corrected for multiple comparisons: `method` within
    each metric's treatments, or over every (metric, treatment) row when `across_metrics`."""

    method: Correction = "holm"
    across_metrics: bool = False


def correction_settings(metrics: Mapping[str, Any]) -> CorrectionSettings:
    """`metrics.correction` ("holm", the default, or "bh") and `metrics.correct_across_metrics`
    (false by default), checked: a wrong value raises ValidationFailed naming the field."""
    method = metrics.get("correction", "holm")
    if method is None:
        method = "holm"
    if method not in CORRECTIONS:
        raise _refuse("metrics.correction",
                      f"{method!r} is not a correction: use one of {', '.join(CORRECTIONS)}")
    across = metrics.get("correct_across_metrics", False)
    if across is None:
        across = False
    if not isinstance(across, bool):
        raise _refuse("metrics.correct_across_metrics", f"{across!r} is not true or false")
    return CorrectionSettings("bh" if method == "bh" else "holm", across)


def check_metrics(metrics: Mapping[str, Any]) -> None:
    """The checks core makes of an experiment's `metrics` JSON (every definition's `cuped`,
    the correction settings); raises ValidationFailed naming the field."""
    metric_definitions(metrics)
    correction_settings(metrics)


@dataclass(frozen=True, slots=True)
class Constraint:
    """A bound a variant's statistic of one metric must meet: at most `max`, at least `min`."""

    metric: str
    max: float | None = None
    min: float | None = None

    @property
    def bound(self) -> float:
        """The bound, whichever side it is on."""
        b = self.max if self.max is not None else self.min
        assert b is not None
        return b

    def violation(self, value: float) -> float:
        """How far `value` is outside the bound, scaled by the bound's size (0 inside)."""
        over = value - self.max if self.max is not None else (self.min or 0.0) - value
        return max(over, 0.0) / max(abs(self.bound), 1e-12)


@dataclass(frozen=True, slots=True)
class Objective:
    """What a constrained bandit optimises: its reward metric, subject to the constraints."""

    metric: str
    constraints: tuple[Constraint, ...] = ()


def objective_to_dict(o: Objective) -> dict[str, Any]:
    """An objective as JSON (a constraint shows only its bound's side)."""
    cons = []
    for c in o.constraints:
        d: dict[str, Any] = {"metric": c.metric}
        if c.max is not None:
            d["max"] = c.max
        if c.min is not None:
            d["min"] = c.min
        cons.append(d)
    return {"metric": o.metric, "constraints": cons}


def objective_from_dict(d: Mapping[str, Any]) -> Objective:
    """An objective from its JSON form."""
    return Objective(metric=d["metric"], constraints=tuple(
        Constraint(metric=c["metric"], max=c.get("max"), min=c.get("min"))
        for c in d.get("constraints") or ()))


@dataclass(frozen=True, slots=True)
class BanditSettings:
    """How a bandit experiment learns its weights."""

    reward_metric: str = "conversion"
    reward_type: RewardType = "binary"
    goal: Goal = "maximize"
    update_interval_s: float = 10.0
    floor: float = 0.01
    burn_in_units: int = 100
    convergence_threshold: float = 0.95
    min_units: int = 200
    auto_stop: bool = False
    draws: int = 10_000
    objective: Objective | None = None


@dataclass(frozen=True, slots=True)
class Experiment:
    """An experiment as stored; `variants` weights are the configured ones."""

    id: str
    key: str
    name: str
    description: str
    owner_team: str
    status: Status
    variants: tuple[Variant, ...]
    ramp: float = 0.0
    hypothesis: str | None = None
    allocation: Allocation = "fixed"
    bandit: BanditSettings | None = None
    targeting: tuple[Rule, ...] = ()
    overrides: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(
        default_factory=lambda: {"primary": "conversion", "guardrails": []}
    )
    analysis_mode: AnalysisMode = "sequential"
    salt: str | None = None
    winner: str | None = None
    version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None
    launched_at: datetime | None = None
    stopped_at: datetime | None = None

    @property
    def control(self) -> Variant:
        """The control variant: the one marked `is_control`, else the first."""
        for v in self.variants:
            if v.is_control:
                return v
        return self.variants[0]

    @property
    def effective_salt(self) -> str:
        """The hashing salt: explicit salt, else the experiment id."""
        return self.salt or self.id


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Sufficient statistics of one arm for one metric: n, sum and sum of squares."""

    n: int = 0
    sum: float = 0.0
    sum_sq: float = 0.0

    def __add__(self, other: ArmStats) -> ArmStats:
        return ArmStats(self.n + other.n, self.sum + other.sum, self.sum_sq + other.sum_sq)

    @property
    def mean(self) -> float:
        """Sample mean (0 when empty)."""
        return self.sum / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Unbiased sample variance with n - 1 (0 when n < 2), never negative."""
        if self.n < 2:
            return 0.0
        v = (self.sum_sq - self.sum * self.sum / self.n) / (self.n - 1)
        return v if v > 0.0 and math.isfinite(v) else 0.0


def variant_to_dict(v: Variant) -> dict[str, Any]:
    """A variant as JSON."""
    return {
        "key": v.key,
        "name": v.name,
        "weight": v.weight,
        "config": v.config,
        "is_control": v.is_control,
    }


def variant_from_dict(d: Mapping[str, Any]) -> Variant:
    """A variant from its JSON form."""
    return Variant(
        key=d["key"],
        weight=float(d["weight"]),
        name=d.get("name"),
        config=d.get("config"),
        is_control=bool(d.get("is_control", False)),
    )


def bandit_to_dict(b: BanditSettings) -> dict[str, Any]:
    """Bandit settings as JSON."""
    out = {name: getattr(b, name) for name in BanditSettings.__slots__}
    out["objective"] = objective_to_dict(b.objective) if b.objective is not None else None
    return out


def bandit_from_dict(d: Mapping[str, Any]) -> BanditSettings:
    """Bandit settings from JSON, ignoring unknown keys."""
    known = set(BanditSettings.__slots__)
    kw = {k: v for k, v in d.items() if k in known}
    if kw.get("objective") is not None:
        kw["objective"] = objective_from_dict(kw["objective"])
    return BanditSettings(**kw)


def rule_to_dict(r: Rule) -> dict[str, Any]:
    """A targeting rule as JSON."""
    return {"attribute": r.attribute, "op": r.op, "value": r.value}


def metrics_out(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """`metrics` as the API shows it: every guardrail in its object form (one stored before
    guardrails had settings is a bare name: margin 0, action alert)."""
    out = dict(metrics)
    if "guardrails" in out:
        out["guardrails"] = [{"metric": g, "margin": 0.0, "action": "alert"}
                             if isinstance(g, str) else g for g in out["guardrails"] or ()]
    return out


def experiment_to_dict(exp: Experiment) -> dict[str, Any]:
    """The experiment as the API shows it (JSON-safe; the control is marked)."""
    control = exp.control.key
    variants = []
    for v in exp.variants:
        d = variant_to_dict(v)
        d["is_control"] = v.key == control
        variants.append(d)
    return {
        "id": exp.id,
        "key": exp.key,
        "name": exp.name,
        "description": exp.description,
        "owner_team": exp.owner_team,
        "hypothesis": exp.hypothesis,
        "status": exp.status,
        "ramp": exp.ramp,
        "variants": variants,
        "allocation": exp.allocation,
        "bandit": bandit_to_dict(exp.bandit) if exp.bandit is not None else None,
        "targeting": [rule_to_dict(r) for r in exp.targeting],
        "overrides": dict(exp.overrides),
        "metrics": metrics_out(exp.metrics),
        "analysis_mode": exp.analysis_mode,
        "salt": exp.salt,
        "winner": exp.winner,
        "version": exp.version,
        "created_at": iso(exp.created_at),
        "updated_at": iso(exp.updated_at),
        "launched_at": iso(exp.launched_at),
        "stopped_at": iso(exp.stopped_at),
    }
