"""Guardrails that act, at every recompute: decide (litmus/core/guardrails.py), record a trip
once, and act on it — the audit log, the Prometheus counter, the alert webhook, and `pause` or
`rollback` through the same lifecycle functions a person's request goes through (so the audit
log, NOTIFY and every process's registry see it like any other change).

The webhook is delivered by background tasks with bounded retries and backoff: a slow or dead
receiver never delays the recompute, and shutdown cancels what is still pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import aiohttp

from litmus import metrics as prom
from litmus.core.guardrails import (
    Trip,
    describe,
    evaluate,
    guardrails_of,
    snapshot_block,
    trip_of,
    trip_to_dict,
)
from litmus.core.models import DEFAULT_DEFINITION, Experiment, metric_definitions
from litmus.core.quantiles import QuantileEstimate, Sketch
from litmus.core.snapshot import MetricAgg, metric_estimate
from litmus.core.times import iso
from litmus.db import guardrails as db
from litmus.db.types import Connection, Pool
from litmus.errors import LitmusError
from litmus.services import experiments
from litmus.services.registry import Registry

log = logging.getLogger("litmus.guardrails")
ACTOR = "guardrail"


class Webhook:
    """JSON POSTs to one URL, each in its own task: `attempts` tries, the delay doubling from
    `first_delay_s`, each try bounded by `timeout_s`. A 2xx answer is delivered; a 4xx other
    than 408/429 is refused for good (retrying would not change it)."""

    def __init__(self, url: str, *, attempts: int = 5, first_delay_s: float = 0.5,
                 timeout_s: float = 5.0) -> None:
        self.url = url
        self.attempts = attempts
        self.first_delay_s = first_delay_s
        self.timeout_s = timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.failed = 0

    def send(self, payload: Mapping[str, Any]) -> None:
        """Queue one delivery and return at once."""
        task = asyncio.create_task(self._deliver(dict(payload)), name="guardrail-webhook")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, payload: dict[str, Any]) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        delay = self.first_delay_s
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._session.post(self.url, json=payload) as resp:
                    if 200 <= resp.status < 300:
                        self.delivered += 1
                        return
                    last = f"HTTP {resp.status}"
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        break
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.failed += 1
        log.warning("guardrail webhook to %s not delivered (%s): %s", self.url, last,
                    payload.get("message"))

    async def drain(self) -> None:
        """Wait for the deliveries under way (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel pending deliveries and close the connections."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._session is not None:
            await self._session.close()


class Guardrails:
    """Called by the recompute leader for every experiment it recomputes."""

    def __init__(self, pool: Pool, registry: Registry, webhook_url: str | None = None) -> None:
        self._pool = pool
        self._registry = registry
        self.webhook = Webhook(webhook_url) if webhook_url else None
        # Experiments without guardrails known to have no trips left: no query for them.
        self._clean: set[str] = set()

    async def apply(self, conn: Connection, exp: Experiment, snapshot: dict[str, Any],
                    metrics: Mapping[str, Mapping[str, MetricAgg]],
                    exposures: Mapping[str, tuple[int, int]],
                    sketches: Mapping[str, Mapping[str, Sketch]], now: datetime) -> None:
        """Check every guardrail, act on new trips, and write the snapshot's `guardrails`."""
        guards = guardrails_of(exp.metrics)
        if not guards:
            snapshot["guardrails"] = []
            if exp.id not in self._clean:
                await db.forget_all(conn, exp.id)  # re-arms any that were removed
                self._clean.add(exp.id)
            return
        self._clean.discard(exp.id)
        definitions = metric_definitions(exp.metrics)
        estimates: dict[str, dict[str, QuantileEstimate]] = {}
        for g in guards:
            d = definitions.get(g.metric, DEFAULT_DEFINITION)
            per, sk = metrics.get(g.metric, {}), sketches.get(g.metric, {})
            estimates[g.metric] = {
                v.key: metric_estimate(d, per.get(v.key), exposures.get(v.key, (0, 0))[0],
                                       sk.get(v.key))
                for v in exp.variants}
        checks = evaluate(exp, estimates)
        recorded = await db.trips(conn, exp.id)
        # A trip belongs to the guardrail as it was: once a person removes the guardrail or
        # changes its margin or action, it is re-armed.
        current = {(g.metric, g.margin, g.action) for g in guards}
        stale = sorted({t.metric for t in recorded.values()
                        if (t.metric, t.margin, t.action) not in current})
        if stale:
            await db.forget_trips(conn, exp.id, stale)
            recorded = {k: t for k, t in recorded.items() if t.metric not in stale}
        # A trip recorded by a leader that stopped before its audit entry: if that leader's
        # pause or stop went through, only the report was lost (audit and alert now); else act
        # now on a running experiment, or record that it was not acted on (a person paused or
        # stopped it since).
        unacted = await db.unacted_trips(conn, exp.id) if recorded else {}
        for key, tripped in sorted(unacted.items()):
            trip = recorded.get(key)
            if trip is None:
                continue
            direction = definitions.get(trip.metric, DEFAULT_DEFINITION).direction
            taken = await db.action_taken(conn, exp.id, ACTOR, tripped)
            if taken is not None:
                done = "paused" if taken == "pause" else "stopped with the control as winner"
                await self._report(conn, exp, trip, direction, done,
                                   "paused" if taken == "pause" else "stopped")
            elif exp.status == "running":
                log.warning("guardrail %s on %s tripped at %s and was never acted on: acting now",
                            trip.metric, exp.key, trip.tripped_at)
                status = await self._act(conn, exp, trip, direction)
                if status is not None:
                    snapshot["status"] = status
                    exp = replace(exp, status="paused" if status == "paused" else "stopped")
            else:
                await db.audit_trip(conn, exp.id, ACTOR, trip, {
                    "message": describe(trip, direction),
                    "outcome": f"not acted on: the experiment was {exp.status} by then"})
        # Only a running experiment acts: a paused or stopped one serves no treatment.
        if exp.status == "running":
            for c in checks:
                key = (c.guardrail.metric, c.treatment)
                if not c.trips or key in recorded:
                    continue
                trip = trip_of(c, iso(now))
                if not await db.record_trip(conn, exp.id, trip, now):
                    continue  # recorded meanwhile (another leader): it acted already
                recorded[key] = trip
                status = await self._act(conn, exp, trip, c.definition.direction)
                if status is not None:
                    snapshot["status"] = status
        snapshot["guardrails"] = snapshot_block(checks, recorded)

    async def _act(self, conn: Connection, exp: Experiment, trip: Trip,
                   direction: str) -> str | None:
        """Pause or roll back, then audit, count and alert; the experiment's new status, if any."""
        message = describe(trip, direction)
        log.warning("%s (experiment %s)", message, exp.key)
        status: str | None = None
        outcome = "alerted"
        try:
            if trip.action == "pause":
                status = (await experiments.pause(self._pool, self._registry, exp.id,
                                                  actor=ACTOR)).status
                outcome = "paused"
            elif trip.action == "rollback":
                status = (await experiments.stop(self._pool, self._registry, exp.id,
                                                 exp.control.key, actor=ACTOR)).status
                outcome = "stopped with the control as winner"
        except LitmusError as exc:
            # Someone paused or stopped it first: the trip stays recorded and alerted.
            outcome = f"not acted on: {exc}"
            log.warning("guardrail %s on %s could not %s: %s", trip.metric, exp.key,
                        trip.action, exc)
        except BaseException:
            # The database failed under the action: forget the trip, so that the next
            # recompute (this leader or another) decides and acts again from the start.
            with contextlib.suppress(Exception):
                await db.forget_trip(conn, exp.id, trip.treatment, trip.metric)
            raise
        await self._report(conn, exp, trip, direction, outcome, status)
        return status

    async def _report(self, conn: Connection, exp: Experiment, trip: Trip, direction: str,
                      outcome: str, status: str | None) -> None:
        """Audit (which marks the trip acted on), count and alert."""
        message = describe(trip, direction)
        await db.audit_trip(conn, exp.id, ACTOR, trip, {"message": message})
        prom.guardrail_tripped(exp.key, trip.metric, trip.action)
        if self.webhook is not None:
            self.webhook.send({
                "event": "guardrail_tripped",
                "experiment_id": exp.id,
                "experiment_key": exp.key,
                "experiment_name": exp.name,
                "control": exp.control.key,
                "direction": direction,
                **trip_to_dict(trip),
                "outcome": outcome,
                "status": status or exp.status,
                "message": message,
            })

    async def close(self) -> None:
        """Stop pending webhook deliveries."""
        if self.webhook is not None:
            await self.webhook.close()
