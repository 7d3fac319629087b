"""What handlers share beside the middleware: reading and validating a request body, rendering
a JSON answer, and who is calling."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
import pydantic
from aiohttp import web

from litmus.errors import BadRequest, LitmusError, PayloadTooLarge, ValidationFailed
from litmus.services.auth import Principal

M = TypeVar("M", bound=pydantic.BaseModel)

# Set by the token check (litmus/api/middleware.py) on every authenticated request.
PRINCIPAL = web.RequestKey("principal", Principal)
# orjson's spellings of the numbers JSON has no room for.
_NON_FINITE = (b"NaN", b"Infinity", b"infinity")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Serialise with orjson."""
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_body(err: LitmusError) -> bytes:
    """The JSON body of a LitmusError's answer (the fast lane sends the same bytes)."""
    return orjson.dumps(err.body(), option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(err: LitmusError) -> web.Response:
    """The JSON rendering of a LitmusError."""
    return web.Response(body=error_body(err), status=err.status, content_type="application/json",
                        headers=err.headers)


def actor(request: web.Request) -> str:
    """The calling token's name, for the audit log."""
    p: Principal = request[PRINCIPAL]
    return p.name


async def read_json_sized(request: web.Request, *, send: str = "a JSON object",
                          limit_hint: str = "", finite_only: bool = False) -> tuple[Any, int]:
    """The body as JSON and its size in bytes, or 400/413 with a clear message.

    `send` says what an empty body should have held and `limit_hint` how to stay under the
    size limit. With `finite_only` (event ingestion: a metric value must be a finite number,
    README) NaN or Infinity gets its own 422 rather than the generic "not valid JSON"."""
    raw = await read_body(request, limit_hint=limit_hint)
    return loads_body(raw, send=send, finite_only=finite_only), len(raw)


async def read_body(request: web.Request, *, limit_hint: str = "") -> bytes:
    """The body's bytes, or 413 saying how to stay under the size limit (`limit_hint`)."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"request body is larger than the limit of {request.app._client_max_size} bytes"
            + (f"; {limit_hint}" if limit_hint else "")
        ) from None


def loads_body(raw: bytes, *, send: str = "a JSON object", finite_only: bool = False) -> Any:
    """A request body parsed as JSON, or 400 (422 for NaN/Infinity with `finite_only`)."""
    if not raw:
        raise BadRequest(f"request body is empty; send {send}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if finite_only and ("infinity" in str(exc) or any(t in raw for t in _NON_FINITE)):
            raise ValidationFailed(
                "values must be finite numbers: NaN and Infinity are not allowed",
                fields={"value": "must be a finite number"},
            ) from None
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


async def read_json(request: web.Request) -> Any:
    """The body as JSON, or 400/413 with a clear message."""
    body, _ = await read_json_sized(request)
    return body


def field_path(loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic location into `variants[1].weight`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def validation_error(exc: pydantic.ValidationError, prefix: str = "") -> ValidationFailed:
    """A 422 naming every bad field."""
    fields: dict[str, str] = {}
    for e in exc.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = field_path(loc)
        if prefix:
            path = prefix + ("" if path.startswith("[") else ".") + path if path != "body" else prefix
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "field required"
        fields.setdefault(path, msg)
    summary = "; ".join(f"{k}: {v}" for k, v in list(fields.items())[:5])
    return ValidationFailed(f"invalid request: {summary}", fields=fields)


# Deep enough for any real config; orjson will not serialise past 254 levels, so a deeper value
# would be accepted here and fail with a 500 when stored or echoed.
MAX_JSON_DEPTH = 64


def storage_problem(data: Any, limit: int = MAX_JSON_DEPTH) -> tuple[str, str] | None:
    """The first field PostgreSQL or orjson could not take: too deep, or a NUL character."""
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > limit:
            return field_path(path[: limit + 1]), f"nested deeper than {limit} levels"
        if isinstance(value, str):
            if "\x00" in value:
                return field_path(path), "must not contain the NUL character (U+0000)"
        elif isinstance(value, dict):
            for k, v in value.items():
                if "\x00" in k:
                    return field_path(path), "keys must not contain the NUL character (U+0000)"
                stack.append((v, (*path, k)))
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(value))
    return None


def parse(model: type[M], data: Any) -> M:
    """Validate data against a pydantic model; 422 with field paths on failure."""
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object", fields={"body": "not an object"})
    problem = storage_problem(data)
    if problem is not None:
        raise ValidationFailed(f"invalid request: {problem[0]}: {problem[1]}",
                               fields={problem[0]: problem[1]})
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise validation_error(exc) from None
