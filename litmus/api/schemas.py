"""Pydantic request models and the checks that span fields."""

from __future__ import annotations

import math
import re
import secrets
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

from litmus.api.assign import MAX_UNIT_ID
from litmus.core.models import (
    MAX_CONSTRAINTS,
    BanditSettings,
    Constraint,
    Experiment,
    Objective,
    Rule,
    Variant,
    metric_definitions,
)
from litmus.core.targeting import validate_rules
from litmus.core.unitfold import MAX_COVARIATES
from litmus.errors import ValidationFailed

SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Slug = Annotated[str, StringConstraints(pattern=SLUG)]
NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]
WEIGHT_TOLERANCE = 1e-6

_JSON_KINDS = {str: "a string", bool: "a boolean", type(None): "null", list: "an array",
               dict: "an object"}


def json_number(value: Any) -> Any:
    """A JSON number passes as is; anything else is refused, never coerced ("0.5", true)."""
    # type(), not isinstance: a bool is an int to Python but not a number to JSON.
    if type(value) is float or type(value) is int:
        return value
    raise PydanticCustomError(
        "number_type", "must be a JSON number, not {kind}",
        {"kind": _JSON_KINDS.get(type(value), type(value).__name__)},
    )


# Request numbers are JSON numbers: a string such as "0.5" is refused with a 422 naming the
# field, not read as a number (pydantic's lax mode would). An integral float such as 10000.0
# is an integer to JSON Schema, so Integer takes it; 10000.5 is refused.
Number = Annotated[float, BeforeValidator(json_number)]
Integer = Annotated[int, BeforeValidator(json_number)]


class Strict(BaseModel):
    """Unknown fields are refused: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class VariantIn(Strict):
    key: Slug
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    weight: Number = Field(gt=0, le=1, allow_inf_nan=False)
    config: Any = None
    is_control: StrictBool = False


class RuleIn(Strict):
    attribute: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    op: Literal["eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "regex", "exists"]
    value: Any = None


class ConstraintIn(Strict):
    metric: Slug
    max: Number | None = Field(default=None, allow_inf_nan=False)
    min: Number | None = Field(default=None, allow_inf_nan=False)


class ObjectiveIn(Strict):
    metric: Slug
    constraints: list[ConstraintIn] = Field(default_factory=list, max_length=MAX_CONSTRAINTS)


class BanditIn(Strict):
    reward_metric: Slug | None = None
    objective: ObjectiveIn | None = None
    reward_type: Literal["binary", "continuous"] = "binary"
    goal: Literal["maximize", "minimize"] = "maximize"
    update_interval_s: Number = Field(default=10.0, ge=0.5, le=86_400, allow_inf_nan=False)
    floor: Number = Field(default=0.01, ge=0, le=0.2, allow_inf_nan=False)
    burn_in_units: Integer = Field(default=BanditSettings().burn_in_units, ge=0, le=10_000_000)
    convergence_threshold: Number = Field(default=0.95, gt=0.5, lt=1, allow_inf_nan=False)
    min_units: Integer = Field(default=BanditSettings().min_units, ge=0, le=10_000_000)
    auto_stop: StrictBool = False
    draws: Integer = Field(default=10_000, ge=10_000, le=200_000)


class MetricDefinitionIn(Strict):
    direction: Literal["increase", "decrease"] = "increase"
    stat: Literal["mean", "p50", "p90", "p95", "p99"] = "mean"
    cap: Annotated[float, Field(gt=0, allow_inf_nan=False),
                   BeforeValidator(json_number)] | None = None
    # A declared covariate (metrics.covariates): the lift table adds the CUPED comparison.
    cuped: Slug | None = None


def _bare_guardrail(value: Any) -> Any:
    """A bare metric name is a guardrail with margin 0 and action alert."""
    return {"metric": value} if isinstance(value, str) else value


class GuardrailIn(Strict):
    metric: Slug
    # Relative: 0.1 trips only when the harm is surely above 10%.
    margin: Number = Field(default=0.0, ge=0, le=1000, allow_inf_nan=False)
    action: Literal["alert", "pause", "rollback"] = "alert"


class MetricsIn(Strict):
    primary: Slug = "conversion"
    guardrails: list[Annotated[GuardrailIn, BeforeValidator(_bare_guardrail)]] = Field(
        default_factory=list, max_length=50)
    minimize: list[Slug] = Field(default_factory=list, max_length=50)
    definitions: dict[Slug, MetricDefinitionIn] = Field(default_factory=dict, max_length=50)
    # Pre-experiment covariates exposures may carry, by name; positions are kept for good.
    covariates: list[Slug] = Field(default_factory=list, max_length=MAX_COVARIATES)
    # Multiple-comparison correction: across treatments, or across every metric too.
    correction: Literal["holm", "bh"] = "holm"
    correct_across_metrics: StrictBool = False

    @field_validator("covariates")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            dup = next(c for c in v if v.count(c) > 1)
            raise PydanticCustomError("duplicate_covariate", "{name!r} is declared twice",
                                      {"name": dup})
        return v

    @field_validator("guardrails")
    @classmethod
    def _once_each(cls, v: list[GuardrailIn]) -> list[GuardrailIn]:
        seen: set[str] = set()
        for g in v:
            if g.metric in seen:
                raise PydanticCustomError("duplicate_guardrail",
                                          "{metric!r} has two guardrails", {"metric": g.metric})
            seen.add(g.metric)
        return v

    def dump(self) -> dict[str, Any]:
        """As stored: definitions list only what differs from the defaults."""
        out = self.model_dump(exclude={"definitions"})
        out["definitions"] = {k: d.model_dump(exclude_defaults=True)
                              for k, d in self.definitions.items()}
        # Settings at their defaults are left out, as before they existed.
        for name, default in (("covariates", []), ("correction", "holm"),
                              ("correct_across_metrics", False)):
            if out.get(name) == default:
                out.pop(name)
        return out


class ExperimentIn(Strict):
    """A whole experiment definition (create, and the result of a PATCH merge)."""

    key: Slug | None = None
    name: NonBlank
    description: LongText
    owner_team: NonBlank
    hypothesis: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    ramp: Number = Field(default=1.0, ge=0, le=1, allow_inf_nan=False)
    variants: list[VariantIn] = Field(min_length=2, max_length=20)
    allocation: Literal["fixed", "bandit"] = "fixed"
    bandit: BanditIn | None = None
    targeting: list[RuleIn] = Field(default_factory=list, max_length=100)
    overrides: dict[Annotated[str, StringConstraints(min_length=1, max_length=MAX_UNIT_ID)], str] = Field(
        default_factory=dict, max_length=10_000
    )
    metrics: MetricsIn = Field(default_factory=MetricsIn)
    analysis_mode: Literal["sequential", "fixed"] = "sequential"
    salt: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


PATCHABLE = frozenset(ExperimentIn.model_fields)


class LaunchIn(Strict):
    # The bounds before the validator: on `Number | None` pydantic would write them into the
    # JSON schema as raw `gt`/`le` keys instead of exclusiveMinimum/maximum.
    ramp: Annotated[
        float, Field(gt=0, le=1, allow_inf_nan=False), BeforeValidator(json_number)
    ] | None = None


class StopIn(Strict):
    winner: Slug | None = None


class ListQuery(Strict):
    status: Literal["draft", "running", "paused", "stopped"] | None = None
    owner_team: str | None = None
    limit: int = Field(default=200, ge=1, le=1000)
    # Bounded: asyncpg sends it as a bigint, which a larger number would overflow.
    offset: int = Field(default=0, ge=0, le=1_000_000_000)

    @field_validator("status", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


def slugify(name: str) -> str:
    """A key made from a name: lower-case, dashes, at most 64 characters."""
    s = re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-_")[:64].strip("-_")
    return s if s and re.fullmatch(SLUG, s) else f"exp-{secrets.token_hex(4)}"


def cross_check(data: ExperimentIn) -> None:
    """Checks that span fields: weight sum, unique keys, one control, overrides, targeting."""
    fields: dict[str, str] = {}
    total = math.fsum(v.weight for v in data.variants)
    messages: list[str] = []
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        fields["variants"] = f"weights must sum to 1.0; they sum to {total:.6g}"
        messages.append(fields["variants"])
    seen: dict[str, int] = {}
    for i, v in enumerate(data.variants):
        if v.key in seen:
            fields[f"variants[{i}].key"] = f"duplicate variant key {v.key!r} (also variants[{seen[v.key]}])"
        seen.setdefault(v.key, i)
    controls = [i for i, v in enumerate(data.variants) if v.is_control]
    if len(controls) > 1:
        fields[f"variants[{controls[1]}].is_control"] = "only one variant can be the control"
    for unit, key in data.overrides.items():
        if key not in seen:
            fields[f"overrides.{unit}"] = f"{key!r} is not a variant key"
    # The same validator the registry's compiler uses: what passes here always compiles.
    for err in validate_rules([r.model_dump() for r in data.targeting]):
        fields[f"targeting[{err.index}].{err.field}"] = err.message
    _check_objective(data, fields)
    for name, d in data.metrics.definitions.items():
        if d.cuped is not None and d.cuped not in data.metrics.covariates:
            fields[f"metrics.definitions.{name}.cuped"] = (
                f"{d.cuped!r} is not a declared covariate: add it to metrics.covariates "
                f"(declared: {', '.join(data.metrics.covariates) or 'none'})")
    if fields:
        first = messages[0] if messages else next(iter(fields.values()))
        raise ValidationFailed(f"invalid experiment: {first}", fields=fields)


def known_metrics(metrics: MetricsIn) -> set[str]:
    """The metrics an experiment names: primary, guardrails, and every defined one."""
    return {metrics.primary, *(g.metric for g in metrics.guardrails), *metrics.minimize,
            *metrics.definitions}


def _check_objective(data: ExperimentIn, fields: dict[str, str]) -> None:
    """A constrained objective: each constraint one bound, on a metric the experiment names."""
    if data.bandit is None or data.bandit.objective is None:
        return
    if data.allocation != "bandit":
        fields["bandit.objective"] = "an objective needs allocation \"bandit\""
        return
    obj = data.bandit.objective
    if data.bandit.reward_metric is not None and data.bandit.reward_metric != obj.metric:
        fields["bandit.objective.metric"] = (
            f"the objective's metric {obj.metric!r} is the reward metric; "
            f"bandit.reward_metric says {data.bandit.reward_metric!r}")
    known = known_metrics(data.metrics) | {obj.metric}
    seen: set[str] = set()
    for i, c in enumerate(obj.constraints):
        path = f"bandit.objective.constraints[{i}]"
        if (c.max is None) == (c.min is None):
            fields[path] = "give exactly one bound: \"max\" or \"min\""
        if c.metric not in known:
            fields[f"{path}.metric"] = (
                f"unknown metric {c.metric!r}: define it in metrics.definitions "
                "(its direction and statistic) first")
        elif c.metric == obj.metric:
            fields[f"{path}.metric"] = "the objective's own metric cannot be a constraint"
        elif c.metric in seen:
            fields[f"{path}.metric"] = f"{c.metric!r} is constrained twice"
        seen.add(c.metric)


def to_experiment(data: ExperimentIn, *, base: Experiment | None = None) -> Experiment:
    """The core Experiment for a validated definition (a new draft unless `base` is given)."""
    cross_check(data)
    variants = tuple(
        Variant(key=v.key, weight=v.weight, name=v.name, config=v.config, is_control=v.is_control)
        for v in data.variants
    )
    bandit = None
    if data.allocation == "bandit":
        b = data.bandit or BanditIn()
        objective = None
        if b.objective is not None:
            objective = Objective(b.objective.metric, tuple(
                Constraint(c.metric, max=c.max, min=c.min) for c in b.objective.constraints))
        reward_metric = (objective.metric if objective is not None
                         else b.reward_metric or data.metrics.primary)
        definition = metric_definitions(data.metrics.dump()).get(reward_metric)
        # The reward metric's definition says which way is good, unless the goal says so.
        goal = "minimize" if definition is not None and definition.minimize else b.goal
        bandit = BanditSettings(
            reward_metric=reward_metric,
            reward_type=b.reward_type,
            goal=goal,
            objective=objective,
            update_interval_s=b.update_interval_s,
            floor=b.floor,
            burn_in_units=b.burn_in_units,
            convergence_threshold=b.convergence_threshold,
            min_units=b.min_units,
            auto_stop=b.auto_stop,
            draws=b.draws,
        )
        if b.floor * len(variants) > 1:
            raise ValidationFailed(
                f"bandit floor {b.floor} times {len(variants)} variants exceeds 1",
                fields={"bandit.floor": "floor × number of variants must be at most 1"},
            )
    common: dict[str, Any] = {
        "key": data.key or slugify(data.name),
        "name": data.name,
        "description": data.description,
        "owner_team": data.owner_team,
        "hypothesis": data.hypothesis,
        "ramp": data.ramp,
        "variants": variants,
        "allocation": data.allocation,
        "bandit": bandit,
        "targeting": tuple(Rule(r.attribute, r.op, r.value) for r in data.targeting),
        "overrides": dict(data.overrides),
        "metrics": data.metrics.dump(),
        "analysis_mode": data.analysis_mode,
        "salt": data.salt,
    }
    if base is None:
        return Experiment(id=str(uuid.uuid4()), status="draft", **common)
    from dataclasses import replace

    return replace(base, **common)


def editable_dict(exp: Experiment) -> dict[str, Any]:
    """The fields of an experiment a PATCH may change, as JSON."""
    from litmus.core.models import experiment_to_dict

    d = experiment_to_dict(exp)
    out = {k: d[k] for k in PATCHABLE}
    if exp.bandit is None:
        out.pop("bandit")
    return out


class CounterfactualIn(Strict):
    """`POST /api/v1/experiments/{id}/counterfactual`: target policies for one metric."""

    metric: Slug
    policies: dict[Annotated[str, StringConstraints(min_length=1, max_length=100)],
                   dict[Slug, Annotated[float, Field(ge=0, le=1, allow_inf_nan=False),
                                        BeforeValidator(json_number)]]] = Field(
        min_length=1, max_length=20)


class UnitsQuery(Strict):
    metric: Slug


class ResultsQuery(BaseModel):
    # Other query parameters are ignored, as they were before `segment` existed (a cache
    # buster must not turn into a 422).
    model_config = ConfigDict(extra="ignore")
    segment: Slug | None = Field(default=None, description=(
        "An exposure attribute: add the results of each of its segments (exploratory)"))



_PLAN_MAX = 1e12
_Open01 = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False), BeforeValidator(json_number)]
_PlanReal = Annotated[float, Field(ge=-_PLAN_MAX, le=_PLAN_MAX, allow_inf_nan=False),
                      BeforeValidator(json_number)]
_PlanPositive = Annotated[float, Field(gt=0, le=_PLAN_MAX, allow_inf_nan=False),
                          BeforeValidator(json_number)]
_PlanDays = Annotated[float, Field(gt=0, le=3650, allow_inf_nan=False),
                      BeforeValidator(json_number)]
_PlanAlpha = Annotated[float, Field(ge=1e-6, le=0.5, allow_inf_nan=False),
                       BeforeValidator(json_number)]
_PlanUnits = Annotated[int, Field(ge=10, le=10**12), BeforeValidator(json_number)]
_PlanLook = Annotated[int, Field(ge=1, le=10**12), BeforeValidator(json_number)]


class PlanIn(Strict):
    """`POST /api/v1/plan`: an MDE in, units per arm out; or units (or days) in, the MDE out.

    Exactly one of `mde`, `units_per_arm`, `days` (with `traffic_per_day`)."""

    metric: Literal["rate", "mean"] = Field(
        description="`rate`: a proportion per unit (give `rate`); `mean`: a unit-level mean "
                    "(give `mean` and `sd`)")
    rate: _Open01 | None = Field(default=None, description="Control's rate, in (0, 1)")
    mean: _PlanReal | None = Field(default=None, description="Control's mean")
    sd: _PlanPositive | None = Field(default=None, description="Unit-level standard deviation")
    variants: Annotated[int, Field(ge=2, le=20), BeforeValidator(json_number)] = Field(
        default=2, description="Control and treatments")
    mde: _PlanReal | None = Field(default=None, description="Minimum detectable effect (not 0)")
    mde_type: Literal["relative", "absolute"] = Field(
        default="relative", description="`relative`: a lift (0.05 is +5%); `absolute`: a "
                                        "difference of means or rates")
    units_per_arm: _PlanUnits | None = Field(
        default=None, description="Units per arm: answer with the MDE")
    days: _PlanDays | None = Field(
        default=None, description="Days of traffic (needs traffic_per_day): answer with the MDE")
    power: _Open01 = Field(default=0.8, description="Chance to detect the MDE, at most 0.999")
    alpha: _PlanAlpha = Field(default=0.05, description="Two-sided, for the whole experiment")
    traffic_per_day: _PlanPositive | None = Field(
        default=None, description="Units entering the experiment per day, all variants")
    analysis: Literal["fixed", "sequential", "both"] = "both"
    look_every_units: _PlanLook | None = Field(
        default=None, description="Units (all variants) between two looks of the sequential "
                                  "test; default one recompute's traffic, else continuous")
