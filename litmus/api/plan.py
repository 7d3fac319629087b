"""Planning: how many units an experiment needs, or what it can detect. Reads nothing stored."""

from __future__ import annotations

import asyncio

from aiohttp import web

from litmus.api.requests import json_response, parse, read_json
from litmus.api.schemas import PlanIn
from litmus.core.planning import PlanRequest, make_plan
from litmus.keys import SETTINGS

routes = web.RouteTableDef()


@routes.post("/api/v1/plan", name="plan.create")
async def plan(request: web.Request) -> web.Response:
    """Sample size (or MDE) for the fixed and the sequential analysis.

    Give `mde` to get units per arm, or `units_per_arm` / `days` to get the MDE (docs/PLANNING.md).
    """
    body = parse(PlanIn, await read_json(request))
    req = PlanRequest(**body.model_dump())
    interval = request.app[SETTINGS].recompute_interval_s
    # Milliseconds of numpy, but off the event loop: a reverse sequential plan iterates.
    return json_response(await asyncio.to_thread(make_plan, req, interval))
