"""JSON errors, bearer auth and body parsing shared by every handler."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import pydantic
from aiohttp import web

from litmus.errors import (
    BadRequest,
    Forbidden,
    LitmusError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
)
from litmus.keys import AUTH
from litmus.services.auth import ADMIN, Principal

log = logging.getLogger("litmus.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=pydantic.BaseModel)

PRINCIPAL = web.RequestKey("principal", Principal)
# Route names starting with this prefix are open to client tokens; all others need admin.
CLIENT_ROUTE = "client."


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Serialise with orjson."""
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(err: LitmusError) -> web.Response:
    """The JSON rendering of a LitmusError."""
    return json_response(err.body(), status=err.status, headers=err.headers)


def _from_http(exc: web.HTTPException) -> LitmusError:
    if exc.status == 404:
        return NotFound("no such route")
    if exc.status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
        err: LitmusError = MethodNotAllowed(
            f"method not allowed; this route accepts {', '.join(allowed) or 'other methods'}"
        )
        if allowed:
            err.headers["Allow"] = ", ".join(allowed)
        return err
    if exc.status == 413:
        return PayloadTooLarge("request body is too large")
    err = LitmusError(exc.reason or "error")
    err.status = exc.status
    err.code = (exc.reason or "error").lower().replace(" ", "_")
    return err


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as {"error": {...}}; unexpected ones as a bare 500."""
    try:
        return await handler(request)
    except LitmusError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http(exc))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response(
            {"error": {"code": "internal_error", "message": "internal server error"}}, status=500
        )


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api/v1 route needs a bearer token; admin routes need an admin token."""
    if not request.path.startswith("/api/v1/") or request.path == "/api/v1/openapi.json":
        return await handler(request)
    match = request.match_info
    if match.http_exception is not None:
        raise match.http_exception
    if request.method == "OPTIONS":
        return await handler(request)
    presented = _bearer(request)
    principal = request.app[AUTH].identify(presented) if presented else None
    if principal is None:
        err = Unauthorized(
            "a valid bearer token is required: send 'Authorization: Bearer <token>'"
            if presented is None
            else "the bearer token is not valid"
        )
        err.headers["WWW-Authenticate"] = 'Bearer realm="litmus"'
        raise err
    name = match.route.name or ""
    if principal.kind != ADMIN and not name.startswith(CLIENT_ROUTE):
        raise Forbidden("this route needs an admin token; a client token may only assign, "
                        "send events and read config")
    request[PRINCIPAL] = principal
    return await handler(request)


def actor(request: web.Request) -> str:
    """The calling token's name, for the audit log."""
    p: Principal = request[PRINCIPAL]
    return p.name


async def read_json(request: web.Request) -> Any:
    """The body as JSON, or 400/413 with a clear message."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"request body is larger than the limit of {request.app._client_max_size} bytes"
        ) from None
    if not body:
        raise BadRequest("request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


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
