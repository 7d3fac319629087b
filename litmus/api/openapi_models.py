"""Pydantic models that exist for the OpenAPI document: the hand-validated hot-path bodies
(assign; tests/api/test_openapi.py proves they accept exactly what the handlers accept) and
the answers (schemathesis checks every real answer against them)."""

from __future__ import annotations

from copy import deepcopy
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StringConstraints,
)

from litmus.api import event_schemas as ev
from litmus.api.assign import MAX_BATCH, MAX_UNIT_ID
from litmus.api.schemas import (
    PATCHABLE,
    BanditIn,
    ExperimentIn,
    MetricsIn,
    RuleIn,
    Slug,
    VariantIn,
)
from litmus.core.targeting import MAX_ATTRIBUTE_LENGTH, MAX_ATTRIBUTES
from litmus.core.unitfold import MAX_COVARIATES

Ref = Annotated[str, StringConstraints(min_length=1)]
# No NUL: unit ids are stored in PostgreSQL text columns, which cannot hold it (assign.py).
UnitId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_UNIT_ID,
                                          pattern=r"^[^\x00]*$")]


def _bounded_strings(attrs: dict[str, Any]) -> dict[str, Any]:
    for key, value in attrs.items():
        for v in value if isinstance(value, list) else (value,):
            if isinstance(v, str) and len(v) > MAX_ATTRIBUTE_LENGTH:
                raise ValueError(f"{key}: string values are at most {MAX_ATTRIBUTE_LENGTH} characters")
    return attrs


# What a targeting check may be asked to evaluate is bounded (assign.py, _check_attributes).
Attributes = Annotated[
    dict[str, Any], Field(max_length=MAX_ATTRIBUTES), AfterValidator(_bounded_strings),
    Field(description=f"Attributes the targeting rules are evaluated on: at most {MAX_ATTRIBUTES}, "
                      f"each string (or string in a list) at most {MAX_ATTRIBUTE_LENGTH} characters"),
]
Status = Literal["draft", "running", "paused", "stopped"]
Reason = Literal["draft", "paused", "stopped", "override", "targeting", "winner", "ramp", "assigned"]


class Closed(BaseModel):
    """Unknown fields are refused, as the handlers refuse them."""

    model_config = ConfigDict(extra="forbid")


# -- requests of the hand-validated routes ------------------------------------------------------


class AssignIn(Closed):
    """`POST /api/v1/assign`: which variant does this unit get?"""

    experiment: Ref = Field(description="The experiment's key or id")
    unit_id: UnitId = Field(description="The user, session or request being assigned")
    attributes: Attributes | None = None
    log_exposure: StrictBool = Field(
        default=False, description="Record the exposure server-side when a variant is served"
    )
    covariates: ev.Covariates | None = Field(
        default=None, max_length=MAX_COVARIATES,
        description=ev.COVARIATES_DOC + " Stored with the exposure that log_exposure records.")


class AssignBatchRequestsIn(Closed):
    """Up to 1000 assign requests, answered in order."""

    requests: list[AssignIn] = Field(max_length=MAX_BATCH)


class AssignBatchUnitsIn(Closed):
    """Shorthand: many units of one experiment with the same attributes."""

    experiment: Ref
    unit_ids: list[UnitId] = Field(max_length=MAX_BATCH)
    attributes: Attributes | None = None
    log_exposure: StrictBool = False


class AssignBatchIn(RootModel[AssignBatchRequestsIn | AssignBatchUnitsIn]):
    """`POST /api/v1/assign/batch`: either form; more than 1000 assignments get 413."""


class AssignmentsIn(Closed):
    """`POST /api/v1/assignments`: one unit in every running experiment."""

    unit_id: UnitId
    attributes: Attributes | None = None
    log_exposure: StrictBool = False


def _patch_model() -> type[BaseModel]:
    """ExperimentIn with every field optional: PATCH merges the body into the stored experiment
    and validates the result with ExperimentIn itself."""
    fields: dict[str, Any] = {}
    for name, info in ExperimentIn.model_fields.items():
        assert name in PATCHABLE
        copy = deepcopy(info)  # keep type and constraints, drop "required"
        copy.default = None
        copy.default_factory = None
        fields[name] = (info.annotation, copy)
    from pydantic import create_model

    model: type[BaseModel] = create_model(
        "ExperimentPatch",
        __config__=ConfigDict(extra="forbid", json_schema_extra=_no_null_defaults),
        __doc__="Any subset of the experiment's editable fields; variants are replaced whole.",
        **fields,
    )
    return model


def _no_null_defaults(schema: dict[str, Any]) -> None:
    # The None defaults only mean "may be omitted": a null is not a valid value.
    for prop in schema.get("properties", {}).values():
        if prop.get("default", 0) is None:
            del prop["default"]


ExperimentPatch = _patch_model()


# -- answers ----------------------------------------------------------------------------------


class VariantOut(VariantIn):
    """A variant as stored; `is_control` is true for exactly one."""

    name: str | None
    config: Any
    is_control: bool


class BanditOut(BanditIn):
    """The bandit settings in force."""

    reward_metric: Slug


class ExperimentOut(Closed):
    """An experiment as the API shows it."""

    id: str
    key: Slug
    name: str
    description: str
    owner_team: str
    hypothesis: str | None
    status: Status
    ramp: float
    variants: list[VariantOut]
    allocation: Literal["fixed", "bandit"]
    bandit: BanditOut | None
    targeting: list[RuleIn]
    overrides: dict[str, str]
    metrics: MetricsIn
    analysis_mode: Literal["sequential", "fixed"]
    salt: str | None
    winner: str | None
    version: int
    created_at: str | None
    updated_at: str | None
    launched_at: str | None
    stopped_at: str | None


class ExperimentList(Closed):
    """Experiments, newest first."""

    experiments: list[ExperimentOut]


class AuditEntry(Closed):
    """One change: when, which token's name, what it did and what changed."""

    at: str
    actor: str
    action: str
    changes: Any
    before: Any
    after: Any


class History(Closed):
    """The audit log of one experiment, newest first."""

    experiment_id: str
    history: list[AuditEntry]


class AssignOut(Closed):
    """A unit's assignment; `variant` null means "not in the experiment", `reason` says why."""

    experiment: str
    unit_id: str
    variant: str | None
    config: Any
    reason: Reason
    probability: float | None = Field(description="The served variant's weight at that moment")
    version: int


class AssignItemError(Closed):
    """A batch item naming an unknown experiment."""

    experiment: str
    unit_id: str
    error: dict[str, str]


class AssignBatchOut(Closed):
    """One answer per request, in order."""

    assignments: list[AssignOut | AssignItemError]


class UnitAssignment(Closed):
    """The unit's assignment in one experiment."""

    variant: str | None
    config: Any
    reason: Reason
    probability: float | None
    version: int


class AssignmentsOut(Closed):
    """The unit's assignment in every running experiment, by experiment key."""

    unit_id: str
    assignments: dict[str, UnitAssignment]


class ConfigVariant(Closed):
    """A variant with its live weight."""

    key: str
    weight: float
    config: Any


class ConfigRule(Closed):
    """A targeting rule."""

    attribute: str
    op: str
    value: Any


class ConfigExperiment(Closed):
    """One experiment compiled for local evaluation (litmus.client)."""

    id: str
    key: str
    status: Status
    version: int
    salt: str
    ramp: float
    variants: list[ConfigVariant]
    targeting: list[ConfigRule]
    overrides: dict[str, str]
    winner: str | None


class ConfigOut(Closed):
    """Every served experiment; `version` is also the ETag."""

    version: str
    experiments: list[ConfigExperiment]


class Results(BaseModel):
    """The latest results snapshot (README, "How it works, briefly"); more fields than these may appear."""

    model_config = ConfigDict(extra="allow")
    experiment_id: str
    computed_at: str
    status: Status
    exposures: dict[str, Any]
    srm: dict[str, Any]
    metrics: dict[str, Any]
    lift: list[dict[str, Any]]
    bandit: dict[str, Any] | None = None


class SegmentKeys(Closed):
    """The exposure attributes seen in this experiment's exposures."""

    experiment_id: str
    keys: list[str]


class LiftPoint(BaseModel):
    """One recompute's lift rows: metric, control, treatment, units, abs and relative lift with
    their intervals, the anytime interval and its running intersection, significance."""

    t: str
    rows: list[dict[str, Any]]


class LiftHistory(Closed):
    """Lift over time, oldest point first (one per timeline bucket, at most 500)."""

    experiment_id: str
    experiment_key: str
    points: list[LiftPoint]


class EstimateOut(BaseModel):
    """One estimator's value with its standard error, 95% interval and anytime interval."""

    value: float | None
    se: float | None
    ci: list[float] | None
    anytime_ci: list[float] | None


class PolicyOut(BaseModel):
    """A target policy's estimates; `support` false (estimates null) when it weights a
    variant no unit was served."""

    ips: EstimateOut
    snips: EstimateOut
    dr: EstimateOut
    ess: float | None
    support: bool


class CounterfactualOut(BaseModel):
    """What each target policy would have scored on the logged traffic."""

    metric: str
    computed_at: str
    units: int
    forced_units: int
    server_filled_units: int
    logged_value: float | None
    policies: dict[str, PolicyOut]


class Health(Closed):
    """The process is up."""

    status: Literal["ok"]


class Ready(Closed):
    """The database answers."""

    status: Literal["ready"]


class EventsQuery(Closed):
    """`?wait=false` answers once the events are in the buffer, before they are durable."""

    wait: bool = True


class ExposureBatchIn(Closed):
    """Up to 10,000 exposures, all or nothing."""

    events: list[ev.ExposureEventIn] = Field(min_length=1, max_length=ev.MAX_EVENTS)


class MetricBatchIn(Closed):
    """Up to 10,000 metric events, all or nothing."""

    events: list[ev.MetricEventIn] = Field(min_length=1, max_length=ev.MAX_EVENTS)


class TypedBatchIn(Closed):
    """Up to 10,000 events of any type, all or nothing."""

    events: list[ev.TypedEventIn] = Field(min_length=1, max_length=ev.MAX_EVENTS)


class ExposureBody(RootModel[ev.ExposureEventIn | ExposureBatchIn]):
    """`POST /api/v1/events/exposure`: one exposure or `{"events": [...]}`."""


class MetricBody(RootModel[ev.MetricEventIn | MetricBatchIn]):
    """`POST /api/v1/events/metric`: one metric event or `{"events": [...]}`."""


class TypedBody(RootModel[ev.TypedEventIn | TypedBatchIn]):
    """`POST /api/v1/events`: one event or `{"events": [...]}`; `type` picks its kind."""


class ErrorDetail(BaseModel):
    """What went wrong; `fields` names each bad field by its path (`variants[1].weight`)."""

    model_config = ConfigDict(extra="allow")
    code: str
    message: str
    fields: dict[str, str] | None = None


class ErrorBody(Closed):
    """Every error answer."""

    error: ErrorDetail


class PlanMde(BaseModel):
    """The effect the units detect with the power."""

    absolute: float
    relative: float | None


class PlanModeOut(BaseModel):
    """One analysis: units per arm, and the effect they detect with the power asked for."""

    units_per_arm: int
    total_units: int
    days: float | None
    mde: PlanMde
    control: float
    treatment: float
    effect_size: float = Field(description="θ = |δ| / √(σ_c² + σ_t²), per unit per arm")
    ratio_to_fixed: float | None = None


class PlanOut(BaseModel):
    """`POST /api/v1/plan`: per analysis asked for, the units (or the MDE); the inputs echoed."""

    direction: Literal["units", "mde"]
    inputs: dict[str, Any]
    comparisons: int
    alpha_per_comparison: float
    correction: Literal["bonferroni", "none"]
    look_every_units: float | None
    notes: list[str]
    fixed: PlanModeOut | None = None
    sequential: PlanModeOut | None = None
