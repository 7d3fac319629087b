"""The assignment hot path: assign, batch, per-unit assignments, config and its SSE stream.

Hand-validated rather than pydantic: this is the route model routers call on every request,
and a dict check costs a fraction of a model validation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from litmus.api.middleware import read_json
from litmus.core.assignment import assign as core_assign
from litmus.errors import NotFound, PayloadTooLarge, ValidationFailed
from litmus.keys import REGISTRY
from litmus.metrics import ASSIGNMENTS, NO_VARIANT
from litmus.services.registry import Entry, Registry

routes = web.RouteTableDef()
MAX_BATCH = 1000
MAX_UNIT_ID = 256
HEARTBEAT_S = 15.0
_JSON = "application/json"
# Ingestion registers a callable here: (entry, unit_id, variant) -> None, non-blocking.
EXPOSURE_HOOK: web.AppKey[Callable[[Entry, str, str], None]] = web.AppKey("exposure_hook")


def _fast(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=_JSON)


def _check_request(item: Any, prefix: str, fields: dict[str, str]) -> None:
    """Record every problem of one assign request under its field path."""
    if not isinstance(item, dict):
        fields[prefix or "body"] = "must be a JSON object"
        return
    p = f"{prefix}." if prefix else ""
    exp = item.get("experiment")
    if not isinstance(exp, str) or not exp:
        fields[p + "experiment"] = "required: an experiment key or id"
    _check_unit(item, p, fields)
    log = item.get("log_exposure", False)
    if not isinstance(log, bool):
        fields[p + "log_exposure"] = "must be true or false"
    unknown = set(item) - {"experiment", "unit_id", "attributes", "log_exposure"}
    for k in sorted(unknown):
        fields[p + k] = "unknown field"


def _check_unit(item: dict[str, Any], p: str, fields: dict[str, str]) -> None:
    problem = _unit_problem(item.get("unit_id"))
    if problem is not None:
        fields[p + "unit_id"] = problem
    attrs = item.get("attributes")
    if attrs is not None and not isinstance(attrs, dict):
        fields[p + "attributes"] = "must be a JSON object"


def _unit_problem(unit: Any) -> str | None:
    if not isinstance(unit, str) or not unit:
        return "required: a non-empty string"
    if len(unit) > MAX_UNIT_ID:
        return f"at most {MAX_UNIT_ID} characters (got {len(unit)})"
    if "\x00" in unit:
        # Unit ids end up in PostgreSQL (exposures), which cannot store NUL characters.
        return "must not contain NUL (U+0000) characters"
    return None


def _raise(fields: dict[str, str]) -> None:
    if fields:
        first = next(iter(fields.items()))
        raise ValidationFailed(f"invalid request: {first[0]}: {first[1]}", fields=fields)


# The three validators below are what the handlers use; tests/api/test_openapi.py proves each
# accepts exactly what its pydantic model in litmus.api.openapi_models accepts.


def assign_problems(body: Any) -> dict[str, str]:
    """Every problem of an assign request body, by field path (empty: valid)."""
    fields: dict[str, str] = {}
    _check_request(body, "", fields)
    return fields


def assignments_problems(body: Any) -> dict[str, str]:
    """Every problem of a per-unit assignments body, by field path (empty: valid)."""
    fields: dict[str, str] = {}
    if not isinstance(body, dict):
        fields["body"] = "must be a JSON object"
        return fields
    _check_unit(body, "", fields)
    if not isinstance(body.get("log_exposure", False), bool):
        fields["log_exposure"] = "must be true or false"
    for k in sorted(set(body) - {"unit_id", "attributes", "log_exposure"}):
        fields[k] = "unknown field"
    return fields


_SHARED = ("experiment", "attributes", "log_exposure")


def batch_requests(body: Any) -> list[dict[str, Any]]:
    """The assign requests of a batch body; one 422 naming every problem, 413 past MAX_BATCH.

    Accepts {"requests": [{experiment, unit_id, ...}, ...]} or the shorthand
    {"experiment": k, "unit_ids": [...], "attributes"?, "log_exposure"?}."""
    if not isinstance(body, dict):
        raise ValidationFailed("request body must be a JSON object", fields={"body": "not an object"})
    fields: dict[str, str] = {}
    if "unit_ids" in body:
        units = body["unit_ids"]
        if not isinstance(units, list):
            raise ValidationFailed("unit_ids must be a list", fields={"unit_ids": "must be a list"})
        _at_most(len(units))
        # The shared fields are checked once, as one request for a stand-in unit would be.
        shared = {k: body[k] for k in _SHARED if k in body}
        _check_request({**shared, "unit_id": "-"}, "", fields)
        for k in sorted(set(body) - {*_SHARED, "unit_ids"}):
            fields[k] = "unknown field"
        for i, u in enumerate(units):
            problem = _unit_problem(u)
            if problem is not None:
                fields[f"unit_ids[{i}]"] = problem
        _raise(fields)
        return [{**shared, "unit_id": u} for u in units]
    items = body.get("requests")
    if not isinstance(items, list):
        raise ValidationFailed(
            "send {\"requests\": [...]} or {\"experiment\": ..., \"unit_ids\": [...]}",
            fields={"requests": "required: a list of assign requests"},
        )
    _at_most(len(items))
    for k in sorted(set(body) - {"requests"}):
        fields[k] = "unknown field"
    for i, item in enumerate(items):
        _check_request(item, f"requests[{i}]", fields)
    _raise(fields)
    return items


def _at_most(n: int) -> None:
    if n > MAX_BATCH:
        raise PayloadTooLarge(
            f"a batch holds at most {MAX_BATCH} assignments; this one has {n}: split it"
        )


def _answer(entry: Entry, unit_id: str, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    a = core_assign(entry.compiled, unit_id, attributes)
    # Inline rather than metrics.count_assignment(): one call less on the hottest line.
    ASSIGNMENTS[(entry.experiment.key, a.variant or NO_VARIANT)] += 1
    return {
        "experiment": entry.experiment.key,
        "unit_id": unit_id,
        "variant": a.variant,
        "config": a.config,
        "reason": a.reason,
        "probability": a.probability,
        "version": a.version,
    }


def _log_exposure(app: web.Application, entry: Entry, unit_id: str, variant: str | None) -> None:
    if variant is None:
        return
    hook = app.get(EXPOSURE_HOOK)
    if hook is not None:
        hook(entry, unit_id, variant)


def _lookup(registry: Registry, ref: str) -> Entry:
    entry = registry.get(ref)
    if entry is None:
        raise NotFound(f"experiment {ref!r} not found", fields={"experiment": "unknown experiment"})
    return entry


@routes.post("/api/v1/assign", name="client.assign")
async def assign(request: web.Request) -> web.Response:
    """The variant one unit gets in one experiment."""
    body = await read_json(request)
    _raise(assign_problems(body))
    entry = _lookup(request.app[REGISTRY], body["experiment"])
    answer = _answer(entry, body["unit_id"], body.get("attributes"))
    if body.get("log_exposure"):
        _log_exposure(request.app, entry, body["unit_id"], answer["variant"])
    return _fast(answer)


@routes.post("/api/v1/assign/batch", name="client.assign.batch")
async def assign_batch(request: web.Request) -> web.Response:
    """Up to 1000 assign requests in one body, answered in order.

    Accepts {"requests": [{experiment, unit_id, ...}, ...]} or the shorthand
    {"experiment": k, "unit_ids": [...], "attributes"?, "log_exposure"?}."""
    items = batch_requests(await read_json(request))
    registry = request.app[REGISTRY]
    out: list[dict[str, Any]] = []
    cache: dict[str, Entry | None] = {}
    for item in items:
        ref = item["experiment"]
        entry = cache[ref] if ref in cache else cache.setdefault(ref, registry.get(ref))
        if entry is None:
            out.append({"experiment": ref, "unit_id": item["unit_id"],
                        "error": {"code": "not_found", "message": f"experiment {ref!r} not found"}})
            continue
        answer = _answer(entry, item["unit_id"], item.get("attributes"))
        if item.get("log_exposure"):
            _log_exposure(request.app, entry, item["unit_id"], answer["variant"])
        out.append(answer)
    return _fast({"assignments": out})


@routes.post("/api/v1/assignments", name="client.assignments")
async def assignments(request: web.Request) -> web.Response:
    """One unit's assignment in every running experiment."""
    body = await read_json(request)
    _raise(assignments_problems(body))
    unit_id: str = body["unit_id"]
    attrs = body.get("attributes")
    result: dict[str, Any] = {}
    for entry in request.app[REGISTRY].running():
        answer = _answer(entry, unit_id, attrs)
        del answer["experiment"], answer["unit_id"]
        result[entry.experiment.key] = answer
        if body.get("log_exposure") is True:
            _log_exposure(request.app, entry, unit_id, answer["variant"])
    return _fast({"unit_id": unit_id, "assignments": result})


@routes.get("/api/v1/config", name="client.config")
async def config(request: web.Request) -> web.Response:
    """Every served experiment compiled for local evaluation; ETag and 304."""
    registry = request.app[REGISTRY]
    etag = f'"{registry.etag}"'
    inm = request.headers.get("If-None-Match")
    if inm is not None and etag in {t.strip() for t in inm.split(",")}:
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=registry.config_body, content_type=_JSON, headers={"ETag": etag})


@routes.get("/api/v1/config/stream", name="client.config.stream")
async def config_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the current config, then each new version, with heartbeats."""
    registry = request.app[REGISTRY]
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    await resp.prepare(request)
    queue = registry.subscribe()
    try:
        await resp.write(_sse(registry.etag, registry.config_body))
        while True:
            try:
                version, body = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                await resp.write(b": heartbeat\n\n")
                continue
            # Skip to the newest body when several changes queued up.
            while not queue.empty() and version:
                version, body = queue.get_nowait()
            if not version:
                break  # the server is shutting down: end the stream so the drain can finish
            await resp.write(_sse(version, body))
    except ConnectionResetError:
        pass
    finally:
        registry.unsubscribe(queue)
        with contextlib.suppress(Exception):
            await resp.write_eof()
    return resp


def _sse(version: str, body: bytes) -> bytes:
    return b"event: config\nid: " + version.encode() + b"\ndata: " + body + b"\n\n"
