"""Event ingestion endpoints: exposure, metric and typed events (one or a batch of 10,000)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from litmus import metrics
from litmus.api.event_decode import decode_events
from litmus.api.event_schemas import EventKind, validate_events
from litmus.api.requests import json_response, loads_body, read_body
from litmus.errors import BadRequest, Unavailable, ValidationFailed
from litmus.keys import INGEST, REGISTRY

routes = web.RouteTableDef()
BASE = "/api/v1/events"


def _wait(request: web.Request) -> bool:
    raw = request.query.get("wait")
    if raw is None or raw.lower() in ("true", "1", "yes", ""):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise BadRequest(f"wait must be true or false, not {raw!r}", fields={"wait": "true or false"})


async def _ingest(request: web.Request, kind: EventKind) -> web.Response:
    wait = _wait(request)
    raw = await read_body(request, limit_hint="send at most 10,000 events per request")
    lookup, now = request.app[REGISTRY].get, datetime.now(UTC)
    # A well-formed batch is decoded typed; anything else (and every refusal, with its
    # reasons) the full path.
    batch = decode_events(raw, kind, lookup, now)
    if batch is None:
        body = loads_body(raw, send='an event or {"events": [...]}', finite_only=True)
        try:
            batch = validate_events(body, kind, lookup, now, len(raw))
        except ValidationFailed as err:
            metrics.events_rejected("invalid", int((err.extra or {}).get("invalid_events", 1)))
            raise
    try:
        receipt = await request.app[INGEST].submit(batch, wait=wait)
    except Unavailable:
        metrics.events_rejected("unavailable", len(batch))
        raise
    if receipt.exposures:
        metrics.events_accepted("exposure", receipt.exposures)
    if receipt.metrics:
        metrics.events_accepted("metric", receipt.metrics)
    # Repeats of an event_id are acknowledged (a retry must not fail) but never counted as
    # accepted: the client can tell a first delivery from a repeat.
    return json_response(
        {
            "accepted": receipt.exposures + receipt.metrics,
            "exposures": receipt.exposures,
            "metrics": receipt.metrics,
            "duplicates": receipt.duplicates,
            "durable": wait,
        },
        status=202,
    )


@routes.post(BASE + "/exposure", name="client.events.exposure")
async def exposure(request: web.Request) -> web.Response:
    """Record exposures: `{experiment, unit_id, variant, ts?, event_id?}` or a batch.

    An `event_id` counts once per experiment and event type: a repeat is answered 202 and
    counted in `duplicates`, not stored. `ts` (ISO-8601 or epoch milliseconds) must lie between
    2000-01-01T00:00:00Z and 24 hours after the server's clock."""
    return await _ingest(request, "exposure")


@routes.post(BASE + "/metric", name="client.events.metric")
async def metric(request: web.Request) -> web.Response:
    """Record metric values: `{experiment, unit_id, metric, value, variant?, ts?, event_id?}`.

    `value` is a JSON number. An `event_id` counts once per experiment and event type (a
    conversion is a metric): a repeat is answered 202 and counted in `duplicates`, not stored.
    `ts` must lie between 2000-01-01T00:00:00Z and 24 hours after the server's clock."""
    return await _ingest(request, "metric")


@routes.post(BASE, name="client.events.create")
async def typed(request: web.Request) -> web.Response:
    """Record events of any type (`exposure`, `metric`, `conversion`) in one body.

    An `event_id` counts once per experiment and event type: an exposure and a metric may
    share one; a conversion is a metric, so a conversion and a metric with the same id are one
    event. Repeats are answered 202 and counted in `duplicates`, not stored. `ts` must lie
    between 2000-01-01T00:00:00Z and 24 hours after the server's clock."""
    return await _ingest(request, "typed")
