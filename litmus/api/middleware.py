"""The middlewares: JSON errors, the body's limits and bearer auth, around every handler.

The app runs one middleware, `litmus_middleware`, which does the request metrics and ids
(litmus/api/observability.py), the drain check, the body limits, the bearer token and the
error rendering in one pass; with CORS open the CORS middleware must sit between the metrics
and the rest, so the app stacks observe_middleware, the CORS one and `error_middleware` (which
then checks the token itself) instead. Both do the same work through the same functions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from litmus.api.observability import CLIENT_CLOSED, HEADER, observe_end, observe_start
from litmus.api.requests import PRINCIPAL, error_response, json_response
from litmus.db.errors import is_transient
from litmus.errors import (
    BodyTooLarge,
    ClientGone,
    Forbidden,
    LitmusError,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    ShuttingDown,
    Unauthorized,
    Unavailable,
)
from litmus.keys import AUTH, DRAIN, SETTINGS, Drain
from litmus.services.auth import ADMIN, Authenticator, Principal

log = logging.getLogger("litmus.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Route names starting with this prefix are open to client tokens; all others need admin.
CLIENT_ROUTE = "client."


async def _render(request: web.Request, err: LitmusError) -> web.StreamResponse:
    """The error's answer; for one that leaves a body unread, sent and then the connection
    closed at once (aiohttp would otherwise keep reading, and discarding, that body)."""
    resp = error_response(err)
    if not err.close:
        return resp
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()
    return resp


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
        return BodyTooLarge("request body is too large")
    err = LitmusError(exc.reason or "error")
    err.status = exc.status
    err.code = (exc.reason or "error").lower().replace(" ", "_")
    return err


async def _receive_body(request: web.Request) -> None:
    """Read a request's body before its handler runs, within the limits a server must keep.

    A declared Content-Length over the limit is refused at once (413, connection closed) rather
    than after the client has sent, or failed to send, that much. A body still in flight must
    arrive within LITMUS_BODY_TIMEOUT_S (408, connection closed), so a slow client cannot hold a
    request open for ever. A client that goes away mid-body is no server error (ClientGone).
    The body is kept by aiohttp, so the handler's own read returns it at once."""
    limit = request.app._client_max_size
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(
            f"request body of {length} bytes is larger than the limit of {limit} bytes"
        )
    if request.content.is_eof():
        return  # the whole body is already here (the usual case): nothing to wait for
    try:
        async with asyncio.timeout(request.app[SETTINGS].body_timeout_s):
            await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {request.app[SETTINGS].body_timeout_s:g} s"
        ) from None
    except ConnectionResetError:
        raise ClientGone("the client closed the connection while sending the body") from None


# When the last "database unreachable" line was logged: one line per outage minute, not per request.
_UNAVAILABLE_LOG_EVERY_S = 60.0
_unavailable_logged_at = -_UNAVAILABLE_LOG_EVERY_S


def _unexpected(request: web.Request, exc: Exception) -> web.StreamResponse:
    """An exception no handler meant: 503 for an unreachable database, else a bare 500."""
    global _unavailable_logged_at
    if is_transient(exc):
        now = asyncio.get_running_loop().time()
        if now - _unavailable_logged_at >= _UNAVAILABLE_LOG_EVERY_S:
            _unavailable_logged_at = now
            log.warning("the database is unreachable (%s: %s); answering 503 with "
                        "Retry-After", type(exc).__name__, exc)
        return error_response(Unavailable(
            "the database is unreachable right now; retry shortly", retry_after=2
        ))
    log.exception("unhandled error on %s %s", request.method, request.path)
    return json_response(
        {"error": {"code": "internal_error", "message": "internal server error"}}, status=500
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as {"error": {...}}; unexpected ones as a bare 500; and check the
    bearer token (what auth_middleware did as a layer of its own), in one pass.

    An unreachable database is no server bug: it answers 503 with Retry-After, as event
    ingestion does, and is logged once a minute at most rather than once per request.
    The app uses it only with CORS open (between the observe and CORS middlewares); otherwise
    litmus_middleware does the same work together with the observe middleware's."""
    try:
        if request.app[DRAIN].active:
            # A keep-alive client learns it must go elsewhere, instead of meeting a reset.
            raise ShuttingDown("this server is shutting down; retry on another instance")
        if request.body_exists:
            await _receive_body(request)
        _authorize(request)
        return await handler(request)
    except LitmusError as err:
        return await _render(request, err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return await _render(request, _from_http(exc))
    except Exception as exc:
        return _unexpected(request, exc)


def litmus_middleware(drain: Drain, auth: Authenticator) -> Middleware:
    """The whole per-request work of the app in one coroutine: observe_middleware's request id,
    metrics and log line around error_middleware's drain check, body limits, bearer token and
    error rendering (the hot routes pay for one middleware, not a stack of them)."""
    known: dict[str, Principal] = {}

    @web.middleware
    async def litmus(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Request id and metrics; drain, body limits, token; every failure rendered as JSON."""
        rid, token, t0 = observe_start(request)
        status = 500
        streamed = False
        try:
            try:
                if drain.active:
                    raise ShuttingDown("this server is shutting down; retry on another instance")
                if request.body_exists:
                    await _receive_body(request)
                _authorize(request, auth, known)
                resp = await handler(request)
            except LitmusError as err:
                resp = await _render(request, err)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                resp = await _render(request, _from_http(exc))
            except Exception as exc:
                resp = _unexpected(request, exc)
            status = resp.status
            if resp.prepared:
                # A stream (SSE) sent its headers long ago; its duration is the stream's life.
                streamed = True
            else:
                resp.headers[HEADER] = rid
            return resp
        except web.HTTPException as exc:
            # Redirects and the like pass through as exceptions.
            status = exc.status
            exc.headers[HEADER] = rid
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            observe_end(request, token, t0, status, streamed)

    return litmus


def bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, or None."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate(auth: Authenticator, header: str | None) -> Principal:
    """The caller of a request with this Authorization header, or 401 (both listeners)."""
    presented = bearer(header) if header else None
    principal = auth.identify(presented) if presented is not None else None
    if principal is None:
        err = Unauthorized(
            "a valid bearer token is required: send 'Authorization: Bearer <token>'"
            if presented is None
            else "the bearer token is not valid"
        )
        err.headers["WWW-Authenticate"] = 'Bearer realm="litmus"'
        raise err
    return principal


# Authorization headers already found valid, per Authenticator: the tokens are fixed for the
# life of the process, so a header seen valid once needs no second constant-time comparison
# (an unknown header still gets one; a lookup here tells nothing the answer does not).
_KNOWN_MAX = 256


def _authorize(request: web.Request, auth: Authenticator | None = None,
               known: dict[str, Principal] | None = None) -> None:
    """Every /api/v1 route needs a bearer token; admin routes need an admin token."""
    path = request.path
    if not path.startswith("/api/v1/") or path == "/api/v1/openapi.json":
        return
    match = request.match_info
    if match.http_exception is not None:
        raise match.http_exception
    if request.method == "OPTIONS":
        return
    header = request.headers.get("Authorization")
    principal = known.get(header) if known is not None and header is not None else None
    if principal is None:
        principal = authenticate(auth or request.app[AUTH], header)
        if known is not None and header is not None:
            if len(known) >= _KNOWN_MAX:
                known.clear()
            known[header] = principal
    if principal.kind != ADMIN and not (match.route.name or "").startswith(CLIENT_ROUTE):
        raise Forbidden("this route needs an admin token; a client token may only assign, "
                        "send events and read config")
    request[PRINCIPAL] = principal
