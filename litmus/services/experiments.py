"""Experiment use cases: create, read, the PATCH merge and the lifecycle transitions.

People (through the API) and the server acting on its own (a guardrail that pauses, a bandit
that stops) change experiments through the same functions: each change is checked by
litmus.core.lifecycle, written with its audit entry under the actor's name, and installed in
this process's registry before the caller hears of it. Other processes hear of it through
NOTIFY; reloading here as well means a client that launches and then assigns on the same
process never sees the old state. Refusals are LitmusErrors, raised as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from litmus.core import lifecycle
from litmus.core.models import Experiment
from litmus.db import experiments as db
from litmus.db.types import Pool
from litmus.errors import Conflict
from litmus.services.registry import Registry

# A key made from the name gets the next free suffix when taken; a few tries cover creates
# racing for the same name.
_KEY_TRIES = 5
# Room for a suffix within the 64 characters of a key: `-` and up to 8 digits.
_KEY_STEM = 55
# Settings objects a PATCH merges one level deep rather than replaces.
_MERGED_DEEPER = ("bandit", "metrics")


@dataclass(frozen=True, slots=True)
class Definition:
    """How an experiment's editable fields read as JSON, and how such JSON becomes one.

    The API passes its pydantic schema in here: arrows point api -> services, never back."""

    editable: Callable[[Experiment], dict[str, Any]]
    build: Callable[[dict[str, Any], Experiment], Experiment]


async def create(pool: Pool, registry: Registry, exp: Experiment, *, actor: str,
                 key_from_name: bool) -> Experiment:
    """Insert a draft; a key made from the name (`key_from_name`) moves to the next free
    suffix when taken (`ranker-v2-3`), a key given explicitly is never changed (409)."""
    for attempt in range(_KEY_TRIES):
        try:
            created = await db.create(pool, exp, actor)
        except Conflict:
            if not key_from_name or attempt == _KEY_TRIES - 1:
                raise
            exp = replace(exp, key=await db.free_key(pool, exp.key[:_KEY_STEM]))
            continue
        await registry.reload_one(created.id)
        return created
    raise AssertionError("unreachable")


async def list_experiments(pool: Pool, *, status: str | None, owner_team: str | None,
                           limit: int, offset: int) -> list[Experiment]:
    """Experiments newest first, optionally filtered by status and team."""
    return await db.list_experiments(pool, status, owner_team, limit, offset)


async def get(pool: Pool, ref: str) -> Experiment:
    """One experiment by id or key, or NotFound."""
    return await db.require(pool, ref)


def merge(editable: dict[str, Any], changes: Mapping[str, Any], current: Experiment
          ) -> dict[str, Any]:
    """The definition a PATCH asks for: `changes` over the current editable fields.

    Settings objects merge one level deeper: {"bandit": {"auto_stop": true}} changes only that
    setting, not the rest back to defaults. New variants keep a bandit a bandit."""
    merged: dict[str, Any] = {**editable, **changes}
    for name in _MERGED_DEEPER:
        if isinstance(changes.get(name), dict) and isinstance(editable.get(name), dict):
            merged[name] = {**editable[name], **changes[name]}
    if "variants" in changes and "allocation" not in changes and current.allocation == "bandit":
        merged["allocation"] = "bandit"
    return merged


async def patch(pool: Pool, registry: Registry, ref: str, changes: Mapping[str, Any],
                *, definition: Definition, actor: str, expected_version: int | None) -> Experiment:
    """Apply a partial update (variants replaced whole) that the status allows.

    `expected_version` (If-Match) refuses a change to a version the caller has not seen (412)."""

    def mutate(current: Experiment) -> Experiment:
        new = definition.build(merge(definition.editable(current), changes, current), current)
        lifecycle.check_editable(current, new)
        return new

    return await _change(pool, registry, ref, mutate, actor=actor, action="update",
                         expected_version=expected_version)


async def launch(pool: Pool, registry: Registry, ref: str, ramp: float | None, *,
                 actor: str, expected_version: int | None = None) -> Experiment:
    """Launch a draft or paused experiment, or update a running one's ramp."""
    return await _change(pool, registry, ref,
                         lambda e: lifecycle.launch(e, ramp, datetime.now(UTC)),
                         actor=actor, action="launch", expected_version=expected_version)


async def pause(pool: Pool, registry: Registry, ref: str, *, actor: str,
                expected_version: int | None = None) -> Experiment:
    """Pause a running experiment: assignment answers `paused`."""
    return await _change(pool, registry, ref, lifecycle.pause, actor=actor, action="pause",
                         expected_version=expected_version)


async def stop(pool: Pool, registry: Registry, ref: str, winner: str | None, *,
               actor: str, expected_version: int | None = None) -> Experiment:
    """Stop for good, optionally naming the winner every unit gets from then on."""
    return await _change(pool, registry, ref,
                         lambda e: lifecycle.stop(e, winner, datetime.now(UTC)),
                         actor=actor, action="stop", expected_version=expected_version)


async def delete(pool: Pool, registry: Registry, ref: str, *, actor: str) -> None:
    """Delete a draft; its audit log stays."""
    exp = await db.require(pool, ref)
    await db.delete(pool, exp.id, lifecycle.check_deletable, actor)
    await registry.reload_one(exp.id)


async def history(pool: Pool, ref: str) -> tuple[str, list[dict[str, Any]]]:
    """The experiment's id and its audit log, newest first: when, who, what changed."""
    exp = await db.require(pool, ref)
    return exp.id, await db.history(pool, exp.id)


async def _change(pool: Pool, registry: Registry, ref: str,
                  mutate: Callable[[Experiment], Experiment], *, actor: str, action: str,
                  expected_version: int | None) -> Experiment:
    exp = await db.update(pool, ref, mutate, actor=actor, action=action,
                          expected_version=expected_version)
    await registry.reload_one(exp.id)
    return exp
