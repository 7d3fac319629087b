"""Guardrail trips in PostgreSQL: recorded once per experiment, treatment and metric."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import partial
from typing import Any

from litmus.core.guardrails import Trip, trip_to_dict
from litmus.core.times import iso
from litmus.db.queries import query
from litmus.db.types import Connection

q = partial(query, "guardrails")


async def record_trip(conn: Connection, exp_id: str, trip: Trip, at: datetime) -> bool:
    """Insert a trip; True only when it is the first for its treatment and metric."""
    lo, hi = trip.interval if trip.interval is not None else (None, None)
    row = await conn.fetchrow(
        q("trip_insert"), uuid.UUID(exp_id), trip.treatment, trip.metric, trip.action,
        trip.margin, trip.harm, lo, hi, trip.n_control, trip.n_treatment, at)
    return row is not None


async def trips(conn: Connection, exp_id: str) -> dict[tuple[str, str], Trip]:
    """Every recorded trip of an experiment, keyed by (metric, treatment)."""
    out: dict[tuple[str, str], Trip] = {}
    for r in await conn.fetch(q("trips_list"), uuid.UUID(exp_id)):
        interval = (r["lo"], r["hi"]) if r["lo"] is not None and r["hi"] is not None else None
        out[(r["metric"], r["treatment"])] = Trip(
            metric=r["metric"], treatment=r["treatment"], action=r["action"],
            margin=r["margin"], harm=r["harm"], interval=interval,
            n_control=int(r["n_control"]), n_treatment=int(r["n_treatment"]),
            tripped_at=iso(r["tripped_at"]))
    return out


async def forget_trips(conn: Connection, exp_id: str, metrics: list[str]) -> None:
    """Delete the trips of these metrics (their guardrails were removed or changed)."""
    await conn.execute(q("trips_forget"), uuid.UUID(exp_id), metrics)


async def forget_trip(conn: Connection, exp_id: str, treatment: str, metric: str) -> None:
    """Delete one trip (its action failed: the next recompute decides again)."""
    await conn.execute(q("trip_forget"), uuid.UUID(exp_id), treatment, metric)


async def forget_all(conn: Connection, exp_id: str) -> None:
    """Delete every trip of an experiment (it has no guardrails any more)."""
    await conn.execute(q("trips_forget_all"), uuid.UUID(exp_id))


async def audit_trip(conn: Connection, exp_id: str, actor: str, trip: Trip,
                     extra: dict[str, Any]) -> None:
    """The audit log's entry for a trip (the pause or stop it causes has its own); the trip
    counts as acted on from then."""
    await conn.execute(q("trip_audit"), uuid.UUID(exp_id), actor, {**trip_to_dict(trip), **extra},
                       trip.treatment, trip.metric)


async def unacted_trips(conn: Connection, exp_id: str) -> dict[tuple[str, str], datetime]:
    """(metric, treatment) -> when it tripped, of the trips recorded but never acted on."""
    return {(r["metric"], r["treatment"]): r["tripped_at"]
            for r in await conn.fetch(q("trips_unacted"), uuid.UUID(exp_id))}


async def action_taken(conn: Connection, exp_id: str, actor: str, since: datetime) -> str | None:
    """"pause" or "stop" when `actor` paused or stopped the experiment at or after `since`."""
    found: str | None = await conn.fetchval(q("trip_action_taken"), uuid.UUID(exp_id), actor,
                                            since)
    return found
