"""The assignment hot path: assign, batch, per-unit assignments, config and its SSE stream.

Hand-validated rather than pydantic: this is the route model routers call on every request,
and a dict check costs a fraction of a model validation.

The answers of assign, batch and config are built by plain functions (`assign_answer`,
`batch_answer`, `config_answer`) that both listeners call: the aiohttp handlers below and the
fast lane (litmus/api/fastlane.py), so the two answer byte for byte alike. An assign answer is
put together from bytes prepared once per prebuilt core answer (`_piece`): the unit id is the
only part serialised per request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, NoReturn

import orjson
from aiohttp import web

from litmus.api.covariates import Cells, covariate_cells, covariates_problem, declared_positions
from litmus.api.requests import read_json
from litmus.core.assignment import Assignment, assign_many
from litmus.core.assignment import assign as core_assign
from litmus.core.targeting import MAX_ATTRIBUTE_LENGTH, MAX_ATTRIBUTES
from litmus.errors import NotFound, PayloadTooLarge, ValidationFailed
from litmus.keys import EXPOSURE_HOOK, REGISTRY
from litmus.metrics import ASSIGNMENTS, NO_VARIANT
from litmus.services.registry import Entry, Registry

routes = web.RouteTableDef()
MAX_BATCH = 1000
MAX_UNIT_ID = 256
HEARTBEAT_S = 15.0
_JSON = "application/json"


def _fast(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=_JSON)


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=_JSON)


_REQUEST_FIELDS = frozenset(("experiment", "unit_id", "attributes", "log_exposure", "covariates"))


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
    problem = covariates_problem(item.get("covariates"))
    if problem is not None:
        fields[p + "covariates"] = problem
    for k in item:
        if k not in _REQUEST_FIELDS:
            for u in sorted(set(item) - _REQUEST_FIELDS):
                fields[p + u] = "unknown field"
            break


def _check_unit(item: dict[str, Any], p: str, fields: dict[str, str]) -> None:
    problem = _unit_problem(item.get("unit_id"))
    if problem is not None:
        fields[p + "unit_id"] = problem
    attrs = item.get("attributes")
    if attrs is not None and not isinstance(attrs, dict):
        fields[p + "attributes"] = "must be a JSON object"
    elif attrs:
        _check_attributes(attrs, p + "attributes", fields)


def _check_attributes(attrs: dict[str, Any], path: str, fields: dict[str, str]) -> None:
    """Bound what one request makes targeting evaluate: the count of attributes and the length
    of every string in them (a list's items included)."""
    if len(attrs) > MAX_ATTRIBUTES:
        fields[path] = f"at most {MAX_ATTRIBUTES} attributes (got {len(attrs)})"
        return
    for key, value in attrs.items():
        items = value if isinstance(value, list) else (value,)
        for v in items:
            if isinstance(v, str) and len(v) > MAX_ATTRIBUTE_LENGTH:
                fields[f"{path}.{key}"] = (f"string values are at most {MAX_ATTRIBUTE_LENGTH} "
                                           f"characters (got {len(v)})")
                break


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
    shorthand = _batch_shorthand(body)
    if shorthand is not None:
        shared, units = shorthand
        return [{**shared, "unit_id": u} for u in units]
    return _batch_items(body)


def _batch_shorthand(body: Any) -> tuple[dict[str, Any], list[str]] | None:
    """The shared fields and the unit ids of a valid shorthand batch; None for the long form."""
    if not isinstance(body, dict):
        raise ValidationFailed("request body must be a JSON object", fields={"body": "not an object"})
    if "unit_ids" not in body:
        return None
    fields: dict[str, str] = {}
    units = body["unit_ids"]
    if not isinstance(units, list):
        raise ValidationFailed("unit_ids must be a list", fields={"unit_ids": "must be a list"})
    _at_most(len(units))
    # The shared fields are checked once, as one request for a stand-in unit would be.
    shared = {k: body[k] for k in _SHARED if k in body}
    _check_request({**shared, "unit_id": "-"}, "", fields)
    for k in sorted(set(body) - {*_SHARED, "unit_ids"}):
        fields[k] = "unknown field"
    # The usual case at C speed: all strings (else join raises), none empty or too long, no
    # NUL anywhere.
    try:
        joined = "".join(units)
    except TypeError:
        plain = False
    else:
        plain = (not units or ("\x00" not in joined and "" not in units
                               and max(map(len, units)) <= MAX_UNIT_ID))
    for i, u in enumerate(() if plain else units):
        problem = _unit_problem(u)
        if problem is not None:
            fields[f"unit_ids[{i}]"] = problem
    _raise(fields)
    return shared, units


def _batch_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    fields: dict[str, str] = {}
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


def _log_exposure(app: Mapping[Any, Any], entry: Entry, unit_id: str,
                  variant: str | None, covariates: Cells | None = None) -> None:
    if variant is None:
        return
    hook = app.get(EXPOSURE_HOOK)
    if hook is not None:
        hook(entry, unit_id, variant, covariates)


def _covariates(entry: Entry, raw: Any, path: str) -> Cells | None:
    """A request's covariates as the row's five columns by the experiment's declared positions;
    422 for an undeclared one (the shape was checked with the request)."""
    if not raw:
        return None
    cells, why = covariate_cells(raw, declared_positions(entry.experiment.metrics))
    if why is not None:
        raise ValidationFailed(f"invalid request: {path}: {why}", fields={path: why})
    return cells


def _lookup_failed(ref: str) -> NoReturn:
    raise NotFound(f"experiment {ref!r} not found", fields={"experiment": "unknown experiment"})


# -- answers as bytes, for both listeners ---------------------------------------------------------

# One prebuilt core answer -> (that answer, the bytes before the unit id, the bytes after it,
# its assignments counter key). The answer is held so that its id() is never reused while
# cached. Bounded: emptied when full (compiled experiments are replaced on every change).
Piece = tuple[Assignment, bytes, bytes, tuple[str, str]]
_PIECES: dict[int, Piece] = {}
MAX_PIECES = 65_536
_dumps = orjson.dumps


def _piece(key: str, a: Assignment) -> Piece:
    """The bytes of `a`'s answer around the unit id, exactly as orjson writes the whole dict
    {experiment, unit_id, variant, config, reason, probability, version}."""
    got = _PIECES.get(id(a))
    if got is not None and got[0] is a:
        return got
    if len(_PIECES) >= MAX_PIECES:
        _PIECES.clear()
    rest = _dumps({"variant": a.variant, "config": a.config, "reason": a.reason,
                   "probability": a.probability, "version": a.version})
    piece = (a, b'{"experiment":' + _dumps(key) + b',"unit_id":', b"," + rest[1:],
             (key, a.variant or NO_VARIANT))
    _PIECES[id(a)] = piece
    return piece


def _plainly_valid(body: Any) -> bool:
    """True for the usual assign body (experiment and unit id, and perhaps log_exposure): a
    shortcut that accepts a subset of what assign_problems accepts, so anything else is checked
    in full. Two keys that are experiment and unit_id, or three whose third is a boolean
    log_exposure, leave room for no other field."""
    if type(body) is not dict:
        return False
    n = len(body)
    if n != 2 and (n != 3 or type(body.get("log_exposure")) is not bool):
        return False
    exp = body.get("experiment")
    unit = body.get("unit_id")
    return (type(exp) is str and exp != "" and type(unit) is str and 0 < len(unit) <= MAX_UNIT_ID
            and "\x00" not in unit)


def assign_answer(app: Mapping[Any, Any], body: Any, registry: Registry | None = None) -> bytes:
    """The 200 body of POST /api/v1/assign for a parsed body; raises the LitmusError to answer.

    `registry` saves a lookup for a caller that holds the app's already (the fast lane)."""
    if _plainly_valid(body):
        covariates = None
    else:
        _raise(assign_problems(body))
        covariates = body.get("covariates")
    entry = (registry or app[REGISTRY]).get(body["experiment"])
    if entry is None:
        _lookup_failed(body["experiment"])
    unit: str = body["unit_id"]
    row = _covariates(entry, covariates, "covariates") if covariates else None
    a = core_assign(entry.compiled, unit, body.get("attributes"))
    piece = _PIECES.get(id(a))
    if piece is None or piece[0] is not a:
        piece = _piece(entry.experiment.key, a)
    ASSIGNMENTS[piece[3]] += 1
    if a.variant is not None and body.get("log_exposure"):
        _log_exposure(app, entry, unit, a.variant, row)
    return piece[1] + _dumps(unit) + piece[2]


def _not_found(ref: str, unit: str) -> bytes:
    return _dumps({"experiment": ref, "unit_id": unit,
                   "error": {"code": "not_found", "message": f"experiment {ref!r} not found"}})


def batch_answer(app: Mapping[Any, Any], body: Any, registry: Registry | None = None) -> bytes:
    """The 200 body of POST /api/v1/assign/batch for a parsed body; raises the LitmusError to
    answer (422 naming every problem, 413 past MAX_BATCH)."""
    registry = registry or app[REGISTRY]
    shorthand = _batch_shorthand(body)
    out: list[bytes] = []
    append = out.append
    pieces = _PIECES
    counts = ASSIGNMENTS
    if shorthand is not None:
        shared, units = shorthand
        ref: str = shared["experiment"]
        entry = registry.get(ref)
        if entry is None:
            return b'{"assignments":[' + b",".join([_not_found(ref, u) for u in units]) + b"]}"
        return _shorthand_answers(app, entry, shared, units)
    cache: dict[str, Entry | None] = {}
    items = _batch_items(body)
    # Every item's covariates checked before any exposure is logged: a 422 logs nothing.
    rows: dict[int, Cells | None] = {}
    for i, item in enumerate(items):
        if item.get("covariates"):
            ref = item["experiment"]
            entry = cache[ref] if ref in cache else cache.setdefault(ref, registry.get(ref))
            if entry is not None:
                rows[i] = _covariates(entry, item["covariates"], f"requests[{i}].covariates")
    for i, item in enumerate(items):
        ref = item["experiment"]
        unit: str = item["unit_id"]
        entry = cache[ref] if ref in cache else cache.setdefault(ref, registry.get(ref))
        if entry is None:
            append(_not_found(ref, unit))
            continue
        a = core_assign(entry.compiled, unit, item.get("attributes"))
        piece = pieces.get(id(a))
        if piece is None or piece[0] is not a:
            piece = _piece(entry.experiment.key, a)
        counts[piece[3]] += 1
        append(piece[1] + _dumps(unit) + piece[2])
        if a.variant is not None and item.get("log_exposure"):
            _log_exposure(app, entry, unit, a.variant, rows.get(i))
    return b'{"assignments":[' + b",".join(out) + b"]}"


def _shorthand_answers(app: Mapping[Any, Any], entry: Entry, shared: dict[str, Any],
                       units: list[str]) -> bytes:
    """One experiment for many units: the core loop, then the answers put together from the
    few distinct prebuilt ones, with no per-unit serialisation: orjson writes all the unit ids
    in one call and, when none of them needed an escape, that list splits exactly at its
    '","' separators; each id is then followed by its answer's tail and the next one's head."""
    if not units:
        return b'{"assignments":[]}'
    key = entry.experiment.key
    got = assign_many(entry.compiled, units, shared.get("attributes"))
    ids = list(map(id, got))
    tails: dict[int, bytes] = {}
    distinct = list(set(ids))  # the few distinct prebuilt answers
    left = len(ids)
    for k, ident in enumerate(distinct):
        piece = _piece(key, got[ids.index(ident)])
        # The last one's count is what the others left: one pass over the ids fewer.
        n = left if k == len(distinct) - 1 else ids.count(ident)
        left -= n
        ASSIGNMENTS[piece[3]] += n
        tails[ident] = piece[2]
    if shared.get("log_exposure"):
        hook = app.get(EXPOSURE_HOOK)
        if hook is not None:
            for u, a in zip(units, got, strict=True):
                if a.variant is not None:
                    hook(entry, u, a.variant)
    head = _piece(key, got[0])[1]
    encoded = _dumps(units)
    if b"\\" in encoded:
        return b'{"assignments":[' + b",".join(
            [head + _dumps(u) + tails[i] for u, i in zip(units, ids, strict=True)]) + b"]}"
    between = {i: b'"' + tail + b"," + head + b'"' for i, tail in tails.items()}
    parts: list[bytes] = [b""] * (2 * len(units))
    parts[0::2] = encoded[2:-2].split(b'","')
    parts[1::2] = map(between.__getitem__, ids)
    parts[0] = b'{"assignments":[' + head + b'"' + parts[0]
    parts[-1] = b'"' + tails[ids[-1]] + b"]}"
    return b"".join(parts)


def config_answer(registry: Registry, if_none_match: str | None) -> tuple[int, bytes, str]:
    """GET /api/v1/config: (200 or 304, the body, the ETag header value)."""
    etag = f'"{registry.etag}"'
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return 304, b"", etag
    return 200, registry.config_body, etag


@routes.post("/api/v1/assign", name="client.assign")
async def assign(request: web.Request) -> web.Response:
    """The variant one unit gets in one experiment."""
    return _json(assign_answer(request.app, await read_json(request)))


@routes.post("/api/v1/assign/batch", name="client.assign.batch")
async def assign_batch(request: web.Request) -> web.Response:
    """Up to 1000 assign requests in one body, answered in order.

    Accepts {"requests": [{experiment, unit_id, ...}, ...]} or the shorthand
    {"experiment": k, "unit_ids": [...], "attributes"?, "log_exposure"?}."""
    return _json(batch_answer(request.app, await read_json(request)))


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
    status, body, etag = config_answer(request.app[REGISTRY], request.headers.get("If-None-Match"))
    if status == 304:
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=body, content_type=_JSON, headers={"ETag": etag})


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
