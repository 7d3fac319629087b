"""Pydantic request models and the checks that span fields."""

from __future__ import annotations

import math
import re
import secrets
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from litmus.core.models import (
    BanditSettings,
    Experiment,
    Rule,
    Variant,
)
from litmus.core.targeting import validate_rules
from litmus.errors import ValidationFailed

SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Slug = Annotated[str, StringConstraints(pattern=SLUG)]
NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]
WEIGHT_TOLERANCE = 1e-6


class Strict(BaseModel):
    """Unknown fields are refused: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class VariantIn(Strict):
    key: Slug
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    weight: float = Field(gt=0, le=1, allow_inf_nan=False)
    config: Any = None
    is_control: bool = False


class RuleIn(Strict):
    attribute: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    op: Literal["eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "regex", "exists"]
    value: Any = None


class BanditIn(Strict):
    reward_metric: Slug | None = None
    reward_type: Literal["binary", "continuous"] = "binary"
    goal: Literal["maximize", "minimize"] = "maximize"
    update_interval_s: float = Field(default=10.0, ge=0.5, le=86_400, allow_inf_nan=False)
    floor: float = Field(default=0.01, ge=0, le=0.2, allow_inf_nan=False)
    burn_in_units: int = Field(default=BanditSettings().burn_in_units, ge=0, le=10_000_000)
    convergence_threshold: float = Field(default=0.95, gt=0.5, lt=1, allow_inf_nan=False)
    min_units: int = Field(default=BanditSettings().min_units, ge=0, le=10_000_000)
    auto_stop: bool = False
    draws: int = Field(default=10_000, ge=10_000, le=200_000)


class MetricsIn(Strict):
    primary: Slug = "conversion"
    guardrails: list[Slug] = Field(default_factory=list, max_length=50)
    minimize: list[Slug] = Field(default_factory=list, max_length=50)


class ExperimentIn(Strict):
    """A whole experiment definition (create, and the result of a PATCH merge)."""

    key: Slug | None = None
    name: NonBlank
    description: LongText
    owner_team: NonBlank
    hypothesis: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    ramp: float = Field(default=1.0, ge=0, le=1, allow_inf_nan=False)
    variants: list[VariantIn] = Field(min_length=2, max_length=20)
    allocation: Literal["fixed", "bandit"] = "fixed"
    bandit: BanditIn | None = None
    targeting: list[RuleIn] = Field(default_factory=list, max_length=100)
    overrides: dict[Annotated[str, StringConstraints(min_length=1, max_length=256)], str] = Field(
        default_factory=dict, max_length=10_000
    )
    metrics: MetricsIn = Field(default_factory=MetricsIn)
    analysis_mode: Literal["sequential", "fixed"] = "sequential"
    salt: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


PATCHABLE = frozenset(ExperimentIn.model_fields)


class LaunchIn(Strict):
    ramp: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)


class StopIn(Strict):
    winner: Slug | None = None


class ListQuery(Strict):
    status: Literal["draft", "running", "paused", "stopped"] | None = None
    owner_team: str | None = None
    limit: int = Field(default=200, ge=1, le=1000)
    # Bounded: asyncpg sends it as a bigint, and a larger number was a 500.
    offset: int = Field(default=0, ge=0, le=1_000_000_000)

    @field_validator("status", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


def slugify(name: str) -> str:
    """A key made from a name: lower-case, dashes, at most 64 characters."""
    s = re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-_")[:64].strip("-_")
    return s if s and re.match(SLUG, s) else f"exp-{secrets.token_hex(4)}"


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
    if fields:
        first = messages[0] if messages else next(iter(fields.values()))
        raise ValidationFailed(f"invalid experiment: {first}", fields=fields)


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
        bandit = BanditSettings(
            reward_metric=b.reward_metric or data.metrics.primary,
            reward_type=b.reward_type,
            goal=b.goal,
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
        "metrics": data.metrics.model_dump(),
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
