"""Health and readiness probes (public)."""

from __future__ import annotations

from aiohttp import web

from litmus.api.middleware import json_response
from litmus.errors import Unavailable
from litmus.keys import POOL

routes = web.RouteTableDef()


@routes.get("/healthz", name="ops.healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up."""
    return json_response({"status": "ok"})


@routes.get("/readyz", name="ops.readyz")
async def readyz(request: web.Request) -> web.Response:
    """The database answers."""
    try:
        await request.app[POOL].fetchval("SELECT 1", timeout=2)
    except Exception:
        raise Unavailable("database is not reachable", retry_after=2) from None
    return json_response({"status": "ready"})
