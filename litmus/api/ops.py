"""Health and readiness probes and Prometheus metrics (public, outside /api/v1)."""

from __future__ import annotations

import logging

from aiohttp import web

from litmus import metrics
from litmus.api.requests import json_response
from litmus.db import ops as db
from litmus.errors import Unavailable
from litmus.keys import POOL

routes = web.RouteTableDef()
log = logging.getLogger("litmus.api")


@routes.get("/healthz", name="ops.healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up."""
    return json_response({"status": "ok"})


@routes.get("/readyz", name="ops.readyz")
async def readyz(request: web.Request) -> web.Response:
    """The database answers."""
    try:
        await db.ping(request.app[POOL], timeout=2)
    except Exception:
        raise Unavailable("database is not reachable", retry_after=2) from None
    return json_response({"status": "ready"})


@routes.get("/metrics", name="ops.metrics")
async def prometheus(request: web.Request) -> web.Response:
    """This process's metrics in the Prometheus text format."""
    pool = request.app.get(POOL)
    if pool is not None:
        # A scrape must still answer when the database does not: the gauge says so instead.
        try:
            metrics.SOURCES.snapshot_age_s = await db.snapshot_age(pool)
            metrics.SOURCES.db_up = True
        except Exception as exc:
            log.debug("metrics: database query failed: %s", exc)
            metrics.SOURCES.snapshot_age_s = None
            metrics.SOURCES.db_up = False
    return web.Response(body=metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE})
