"""Results: the latest stored snapshot (never computed on the request path) and its CSV."""

from __future__ import annotations

from aiohttp import web

from litmus.api.middleware import json_response
from litmus.core.snapshot import lift_csv
from litmus.db import experiments as db_experiments
from litmus.db import results as db
from litmus.errors import NotFound
from litmus.keys import POOL, RECOMPUTE

routes = web.RouteTableDef()


async def _snapshot(request: web.Request) -> dict[str, object]:
    pool = request.app[POOL]
    exp = await db_experiments.require(pool, request.match_info["id"])
    stored = await db.load_snapshot(pool, exp.id)
    if stored is None:
        interval = request.app[RECOMPUTE].interval_s
        err = NotFound(
            f"no results yet for {exp.key!r} ({exp.status}): snapshots are computed every "
            f"{interval:g} s once an experiment has launched",
        )
        err.code = "no_results"
        raise err
    return stored[1]


@routes.get("/api/v1/experiments/{id}/results", name="results.get")
async def results(request: web.Request) -> web.Response:
    """The latest results snapshot; `computed_at` says when it was computed."""
    return json_response(await _snapshot(request))


@routes.get("/api/v1/experiments/{id}/results.csv", name="results.csv")
async def results_csv(request: web.Request) -> web.Response:
    """The lift table as CSV."""
    snap = await _snapshot(request)
    name = f"{snap.get('experiment_key') or request.match_info['id']}-lift.csv"
    return web.Response(
        text=lift_csv(snap), content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
