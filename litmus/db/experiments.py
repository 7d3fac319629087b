"""Experiments and their audit log in PostgreSQL; returns core types."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import asyncpg

from litmus.core.lifecycle import diff
from litmus.core.models import (
    Experiment,
    Rule,
    bandit_from_dict,
    bandit_to_dict,
    experiment_to_dict,
    rule_to_dict,
    variant_from_dict,
    variant_to_dict,
)
from litmus.core.times import iso
from litmus.db.queries import query
from litmus.errors import Conflict, NotFound, PreconditionFailed

q = partial(query, "queries")

Mutation = Callable[[Experiment], Experiment]


async def free_key(conn: asyncpg.Pool | asyncpg.Connection, base: str) -> str:
    """`base` if no experiment has it, else `base-N` with N one above the largest taken."""
    taken = {r["key"] for r in await conn.fetch(q("experiment_keys_like"), base)}
    if base not in taken:
        return base
    numbers = [int(k[len(base) + 1:]) for k in taken
               if k[len(base) + 1:].isdigit() and k.startswith(base + "-")]
    return f"{base}-{max(numbers, default=1) + 1}"


def row_to_experiment(row: asyncpg.Record) -> Experiment:
    """Build the core Experiment from an `experiments` row."""
    return Experiment(
        id=str(row["id"]),
        key=row["key"],
        name=row["name"],
        description=row["description"],
        owner_team=row["owner_team"],
        hypothesis=row["hypothesis"],
        status=row["status"],
        ramp=row["ramp"],
        variants=tuple(variant_from_dict(v) for v in row["variants"]),
        allocation=row["allocation"],
        bandit=bandit_from_dict(row["bandit"]) if row["bandit"] is not None else None,
        targeting=tuple(Rule(r["attribute"], r["op"], r.get("value")) for r in row["targeting"]),
        overrides=dict(row["overrides"]),
        metrics=dict(row["metrics"]),
        analysis_mode=row["analysis_mode"],
        salt=row["salt"],
        winner=row["winner"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        launched_at=row["launched_at"],
        stopped_at=row["stopped_at"],
    )


def _columns(exp: Experiment) -> list[Any]:
    return [
        exp.key,
        exp.name,
        exp.description,
        exp.owner_team,
        exp.hypothesis,
        exp.status,
        exp.ramp,
        [variant_to_dict(v) for v in exp.variants],
        exp.allocation,
        bandit_to_dict(exp.bandit) if exp.bandit is not None else None,
        [rule_to_dict(r) for r in exp.targeting],
        dict(exp.overrides),
        dict(exp.metrics),
        exp.analysis_mode,
        exp.salt,
        exp.winner,
    ]


def _parse_id(id_or_key: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(id_or_key)
    except ValueError:
        return None


async def create(pool: asyncpg.Pool, exp: Experiment, actor: str) -> Experiment:
    """Insert a new experiment and its `create` audit entry."""
    async with pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(q("experiment_insert"), uuid.UUID(exp.id), *_columns(exp))
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"an experiment with key {exp.key!r} already exists",
                fields={"key": "already taken"},
            ) from None
        created = row_to_experiment(row)
        after = experiment_to_dict(created)
        await conn.execute(
            q("audit_insert"), row["id"], actor, "create", diff({}, after), None, after
        )
    return created


async def get(conn: asyncpg.Pool | asyncpg.Connection, id_or_key: str) -> Experiment | None:
    """One experiment by id or key, or None."""
    uid = _parse_id(id_or_key)
    row = None
    if uid is not None:
        row = await conn.fetchrow(q("experiment_get"), uid)
    if row is None:
        row = await conn.fetchrow(q("experiment_get_by_key"), id_or_key)
    return row_to_experiment(row) if row is not None else None


async def require(conn: asyncpg.Pool | asyncpg.Connection, id_or_key: str) -> Experiment:
    """One experiment by id or key, or NotFound."""
    exp = await get(conn, id_or_key)
    if exp is None:
        raise NotFound(f"experiment {id_or_key!r} not found")
    return exp


async def list_experiments(
    pool: asyncpg.Pool, status: str | None, owner_team: str | None, limit: int, offset: int
) -> list[Experiment]:
    """Experiments newest first, optionally filtered by status and team."""
    rows = await pool.fetch(q("experiment_list"), status, owner_team, limit, offset)
    return [row_to_experiment(r) for r in rows]


async def update(
    pool: asyncpg.Pool,
    id_or_key: str,
    mutate: Mutation,
    *,
    actor: str,
    action: str,
    expected_version: int | None = None,
) -> Experiment:
    """Lock the row, apply a pure mutation, write it and its audit entry in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        current = await require(conn, id_or_key)
        row = await conn.fetchrow(q("experiment_lock"), uuid.UUID(current.id))
        if row is None:
            raise NotFound(f"experiment {id_or_key!r} not found")
        current = row_to_experiment(row)
        if expected_version is not None and expected_version != current.version:
            raise PreconditionFailed(
                f"experiment changed since you read it: If-Match is version {expected_version}, "
                f"the current version is {current.version}; reload and apply your change again",
                extra={"current_version": current.version},
            )
        new = mutate(current)
        before = experiment_to_dict(current)
        after_candidate = experiment_to_dict(new)
        changes = diff(before, after_candidate)
        if not changes:
            return current
        try:
            saved = await conn.fetchrow(
                q("experiment_update"),
                uuid.UUID(current.id),
                *_columns(new),
                new.launched_at,
                new.stopped_at,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"an experiment with key {new.key!r} already exists",
                fields={"key": "already taken"},
            ) from None
        result = row_to_experiment(saved)
        after = experiment_to_dict(result)
        await conn.execute(
            q("audit_insert"), saved["id"], actor, action, changes, before, after
        )
    return result


async def delete(pool: asyncpg.Pool, id_or_key: str, check: Callable[[Experiment], None],
                 actor: str) -> None:
    """Delete an experiment after `check` allows it; the audit entry stays."""
    async with pool.acquire() as conn, conn.transaction():
        current = await require(conn, id_or_key)
        row = await conn.fetchrow(q("experiment_lock"), uuid.UUID(current.id))
        if row is None:
            raise NotFound(f"experiment {id_or_key!r} not found")
        current = row_to_experiment(row)
        check(current)
        before = experiment_to_dict(current)
        await conn.execute(q("experiment_delete"), uuid.UUID(current.id))
        await conn.execute(
            q("audit_insert"), uuid.UUID(current.id), actor, "delete", {}, before, None
        )


async def history(pool: asyncpg.Pool, exp_id: str, limit: int = 500) -> list[dict[str, Any]]:
    """The audit log of one experiment, newest first."""
    rows = await pool.fetch(q("audit_list"), uuid.UUID(exp_id), limit)
    return [
        {
            "at": iso(r["at"]),
            "actor": r["actor"],
            "action": r["action"],
            "changes": r["changes"],
            "before": r["before"],
            "after": r["after"],
        }
        for r in rows
    ]


async def registry_rows(
    conn: asyncpg.Pool | asyncpg.Connection, exp_id: str | None = None
) -> list[tuple[Experiment, dict[str, float] | None]]:
    """Experiments with their current bandit weights (all of them, or one by id)."""
    if exp_id is None:
        rows = await conn.fetch(q("registry_all"))
    else:
        uid = _parse_id(exp_id)
        rows = [] if uid is None else await conn.fetch(q("registry_one"), uid)
    return [(row_to_experiment(r), r["bandit_weights"]) for r in rows]
