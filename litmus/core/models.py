"""Plain, immutable domain types shared by every layer. Pure: stdlib only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Status = Literal["draft", "running", "paused", "stopped"]
Allocation = Literal["fixed", "bandit"]
AnalysisMode = Literal["sequential", "fixed"]
RewardType = Literal["binary", "continuous"]
Goal = Literal["maximize", "minimize"]

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
class BanditSettings:
    """How a bandit experiment learns its weights (SPEC section 5)."""

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


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.isoformat().replace("+00:00", "Z")


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
    return {name: getattr(b, name) for name in BanditSettings.__slots__}


def bandit_from_dict(d: Mapping[str, Any]) -> BanditSettings:
    """Bandit settings from JSON, ignoring unknown keys."""
    known = set(BanditSettings.__slots__)
    return BanditSettings(**{k: v for k, v in d.items() if k in known})


def rule_to_dict(r: Rule) -> dict[str, Any]:
    """A targeting rule as JSON."""
    return {"attribute": r.attribute, "op": r.op, "value": r.value}


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
        "metrics": dict(exp.metrics),
        "analysis_mode": exp.analysis_mode,
        "salt": exp.salt,
        "winner": exp.winner,
        "version": exp.version,
        "created_at": _iso(exp.created_at),
        "updated_at": _iso(exp.updated_at),
        "launched_at": _iso(exp.launched_at),
        "stopped_at": _iso(exp.stopped_at),
    }
