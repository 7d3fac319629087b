"""Event ingestion endpoints: exposure, metric and typed events (one or a batch of 10,000)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from litmus import metrics
from litmus.api.assign import EXPOSURE_HOOK
from litmus.api.event_schemas import EventKind, validate_events
from litmus.api.middleware import json_response
from litmus.errors import BadRequest, PayloadTooLarge, Unavailable, ValidationFailed
from litmus.keys import DSN, INGEST, REGISTRY, SETTINGS
from litmus.services.ingest import Ingestor, exposure_row
from litmus.services.registry import Entry

routes = web.RouteTableDef()
BASE = "/api/v1/events"
_NON_FINITE = (b"NaN", b"Infinity", b"infinity")


async def ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    """The ingest writer: started after the registry, drained before the pool closes."""
    ingestor = Ingestor.from_settings(app[DSN], app[SETTINGS])
    await ingestor.start()
    app[INGEST] = ingestor

    def log_exposure(entry: Entry, unit_id: str, variant: str) -> None:
        index = entry.variant_index.get(variant)
        if index is not None:
            ingestor.offer_exposures([exposure_row(entry.experiment.id, unit_id, index)])

    app[EXPOSURE_HOOK] = log_exposure

    async def refuse_new(_: web.Application) -> None:
        # Shutdown began: in-flight requests finish, new events get 503 until we exit.
        ingestor.stop_accepting()

    app.on_shutdown.append(refuse_new)
    try:
        yield
    finally:
        await ingestor.close()


async def _body(request: web.Request) -> tuple[Any, int]:
    """The parsed body and its size; a non-finite number gets its own 422."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"request body is larger than the limit of {request.app._client_max_size} bytes; "
            "send at most 10,000 events per request"
        ) from None
    if not raw:
        raise BadRequest('request body is empty; send an event or {"events": [...]}')
    try:
        return orjson.loads(raw), len(raw)
    except orjson.JSONDecodeError as exc:
        if "infinity" in str(exc) or any(t in raw for t in _NON_FINITE):
            raise ValidationFailed(
                "values must be finite numbers: NaN and Infinity are not allowed",
                fields={"value": "must be a finite number"},
            ) from None
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def _wait(request: web.Request) -> bool:
    raw = request.query.get("wait")
    if raw is None or raw.lower() in ("true", "1", "yes", ""):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise BadRequest(f"wait must be true or false, not {raw!r}", fields={"wait": "true or false"})


async def _ingest(request: web.Request, kind: EventKind) -> web.Response:
    wait = _wait(request)
    body, size = await _body(request)
    try:
        batch = validate_events(body, kind, request.app[REGISTRY].get, datetime.now(UTC), size)
    except ValidationFailed as err:
        metrics.events_rejected("invalid", int((err.extra or {}).get("invalid_events", 1)))
        raise
    try:
        await request.app[INGEST].submit(batch, wait=wait)
    except Unavailable:
        metrics.events_rejected("unavailable", len(batch))
        raise
    if batch.exposures:
        metrics.events_accepted("exposure", len(batch.exposures))
    if batch.metrics:
        metrics.events_accepted("metric", len(batch.metrics))
    return json_response(
        {
            "accepted": len(batch),
            "exposures": len(batch.exposures),
            "metrics": len(batch.metrics),
            "durable": wait,
        },
        status=202,
    )


@routes.post(BASE + "/exposure", name="client.events.exposure")
async def exposure(request: web.Request) -> web.Response:
    """Record exposures: `{experiment, unit_id, variant, ts?, event_id?}` or a batch."""
    return await _ingest(request, "exposure")


@routes.post(BASE + "/metric", name="client.events.metric")
async def metric(request: web.Request) -> web.Response:
    """Record metric values: `{experiment, unit_id, metric, value, variant?, ts?, event_id?}`."""
    return await _ingest(request, "metric")


@routes.post(BASE, name="client.events.create")
async def typed(request: web.Request) -> web.Response:
    """Record events of any type (`exposure`, `metric`, `conversion`) in one body."""
    return await _ingest(request, "typed")
