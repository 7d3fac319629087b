"""Request bodies of the public API, built one way for every caller (simulation, load tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def experiment(key: str, name: str, variants: Sequence[tuple[str, float, dict[str, Any] | None]], *,
               description: str, owner_team: str, allocation: str = "fixed",
               bandit: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A create-experiment body; `variants` are (key, weight, config)."""
    body: dict[str, Any] = {
        "key": key, "name": name, "description": description, "owner_team": owner_team,
        "allocation": allocation,
        "variants": [{"key": k, "weight": w, "config": c} for k, w, c in variants],
        **extra,
    }
    if bandit is not None:
        body["bandit"] = bandit
    return body


def assign(experiment: str, unit_id: str, attributes: dict[str, Any] | None = None,
           log_exposure: bool = False) -> dict[str, Any]:
    """An assign request."""
    body: dict[str, Any] = {"experiment": experiment, "unit_id": unit_id}
    if attributes:
        body["attributes"] = attributes
    if log_exposure:
        body["log_exposure"] = True
    return body


def assign_batch(experiment: str, unit_ids: Sequence[str]) -> dict[str, Any]:
    """A batch assign request for many units of one experiment."""
    return {"experiment": experiment, "unit_ids": list(unit_ids)}


def exposure(experiment: str, unit_id: str, variant: str, **extra: Any) -> dict[str, Any]:
    """An exposure event."""
    return {"type": "exposure", "experiment": experiment, "unit_id": unit_id, "variant": variant,
            **extra}


def metric(experiment: str, unit_id: str, name: str, value: float, **extra: Any) -> dict[str, Any]:
    """A metric (reward) event."""
    return {"type": "metric", "experiment": experiment, "unit_id": unit_id, "metric": name,
            "value": value, **extra}


def conversion(experiment: str, unit_id: str, **extra: Any) -> dict[str, Any]:
    """A conversion event (the metric `conversion` with value 1)."""
    return {"type": "conversion", "experiment": experiment, "unit_id": unit_id, **extra}


def events(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A batch body for POST /api/v1/events."""
    return {"events": list(items)}


def assignments(unit_id: str, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A per-unit request: the unit's assignment in every running experiment."""
    body: dict[str, Any] = {"unit_id": unit_id}
    if attributes:
        body["attributes"] = attributes
    return body


def untyped(event: dict[str, Any]) -> dict[str, Any]:
    """An event for /events/exposure or /events/metric, whose kind is in the path, not a field."""
    return {k: v for k, v in event.items() if k != "type"}
