"""CORS: closed unless LITMUS_CORS_ORIGINS names the browser origins allowed to call the API.

Closed means no middleware at all (nothing on the hot path) and no Access-Control-* header on
any answer, so browsers refuse cross-origin reads. Tokens travel in the Authorization header,
never in cookies, so credentials are never allowed.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from litmus.settings import Settings

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, If-Match, If-None-Match, X-Request-Id"
EXPOSE_HEADERS = "ETag, Retry-After, X-Request-Id, WWW-Authenticate"
MAX_AGE_S = "600"


def _add(headers: web.StreamResponse | web.HTTPException, origin: str) -> None:
    h = headers.headers
    h["Access-Control-Allow-Origin"] = origin
    h["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    h.add("Vary", "Origin")


def cors_middlewares(settings: Settings) -> list[Middleware]:
    """The CORS middleware for the configured origins; none when CORS is closed (the default)."""
    origins = frozenset(o.rstrip("/") for o in settings.cors_origins)
    if not origins:
        return []
    any_origin = "*" in origins

    @web.middleware
    async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer preflights and mark answers readable by an allowed origin."""
        origin = request.headers.get("Origin")
        if origin is None or not (any_origin or origin in origins):
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            # A preflight carries no token: answer it before auth ever sees it.
            pre = web.Response(status=204, headers={
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": MAX_AGE_S,
            })
            _add(pre, origin)
            return pre
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            _add(exc, origin)
            raise
        if not resp.prepared:
            _add(resp, origin)
        return resp

    return [cors_middleware]
