"""Experiments: create, list, get, patch, launch, pause, stop, delete, history.

Each handler parses the request, calls litmus.services.experiments and serialises the answer;
the use cases (key suffixes, the PATCH merge, transitions and the registry reload) live there.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from litmus.api.requests import actor, json_response, parse, read_json
from litmus.api.schemas import (
    PATCHABLE,
    ExperimentIn,
    LaunchIn,
    ListQuery,
    StopIn,
    editable_dict,
    to_experiment,
)
from litmus.core.models import Experiment, experiment_to_dict
from litmus.errors import BadRequest, ValidationFailed
from litmus.keys import POOL, REGISTRY
from litmus.services import experiments as service

routes = web.RouteTableDef()
BASE = "/api/v1/experiments"

# A PATCH merges into the definition as this schema reads it, and is validated as a create is.
DEFINITION = service.Definition(
    editable=editable_dict,
    build=lambda data, base: to_experiment(parse(ExperimentIn, data), base=base),
)


def _out(exp: Experiment, status: int = 200) -> web.Response:
    return json_response(experiment_to_dict(exp), status=status, headers={"ETag": f'"{exp.version}"'})


def _if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    try:
        return int(value)
    except ValueError:
        raise BadRequest(
            f"If-Match must be the experiment's version number (or its ETag), got {raw!r}"
        ) from None


async def _read_optional(request: web.Request) -> Any:
    # body_exists, not can_read_body: the error middleware may have read the body already.
    if not request.body_exists:
        return {}
    body = await request.read()
    return {} if not body.strip() else await read_json(request)


@routes.post(BASE, name="experiments.create")
async def create(request: web.Request) -> web.Response:
    """Create a draft experiment with its variants."""
    data = parse(ExperimentIn, await read_json(request))
    exp = await service.create(request.app[POOL], request.app[REGISTRY], to_experiment(data),
                               actor=actor(request), key_from_name=data.key is None)
    return _out(exp, status=201)


@routes.get(BASE, name="experiments.list")
async def list_experiments(request: web.Request) -> web.Response:
    """Experiments newest first; filters `status` and `owner_team`."""
    query = parse(ListQuery, dict(request.query))
    items = await service.list_experiments(
        request.app[POOL], status=query.status, owner_team=query.owner_team,
        limit=query.limit, offset=query.offset,
    )
    return json_response({"experiments": [experiment_to_dict(e) for e in items]})


@routes.get(BASE + "/{id}", name="experiments.get")
async def get(request: web.Request) -> web.Response:
    """One experiment by id or key."""
    return _out(await service.get(request.app[POOL], request.match_info["id"]))


@routes.patch(BASE + "/{id}", name="experiments.patch")
async def patch(request: web.Request) -> web.Response:
    """Partial update; variants are replaced whole; honours If-Match."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("request body must be a JSON object", fields={"body": "not an object"})
    unknown = sorted(set(body) - PATCHABLE)
    if unknown:
        raise ValidationFailed(
            f"these fields cannot be changed by PATCH: {', '.join(unknown)}",
            fields={k: "unknown or read-only field" for k in unknown},
        )
    exp = await service.patch(
        request.app[POOL], request.app[REGISTRY], request.match_info["id"], body,
        definition=DEFINITION, actor=actor(request), expected_version=_if_match(request),
    )
    return _out(exp)


@routes.post(BASE + "/{id}/launch", name="experiments.launch")
async def launch(request: web.Request) -> web.Response:
    """Launch (draft, paused) or update the ramp (running)."""
    data = parse(LaunchIn, await _read_optional(request))
    exp = await service.launch(request.app[POOL], request.app[REGISTRY], request.match_info["id"],
                               data.ramp, actor=actor(request), expected_version=_if_match(request))
    return _out(exp)


@routes.post(BASE + "/{id}/pause", name="experiments.pause")
async def pause(request: web.Request) -> web.Response:
    """Pause a running experiment."""
    exp = await service.pause(request.app[POOL], request.app[REGISTRY], request.match_info["id"],
                              actor=actor(request), expected_version=_if_match(request))
    return _out(exp)


@routes.post(BASE + "/{id}/stop", name="experiments.stop")
async def stop(request: web.Request) -> web.Response:
    """Stop for good, optionally with a winner."""
    data = parse(StopIn, await _read_optional(request))
    exp = await service.stop(request.app[POOL], request.app[REGISTRY], request.match_info["id"],
                             data.winner, actor=actor(request), expected_version=_if_match(request))
    return _out(exp)


@routes.delete(BASE + "/{id}", name="experiments.delete")
async def delete(request: web.Request) -> web.Response:
    """Delete a draft."""
    await service.delete(request.app[POOL], request.app[REGISTRY], request.match_info["id"],
                         actor=actor(request))
    return web.Response(status=204)


@routes.get(BASE + "/{id}/history", name="experiments.history")
async def history(request: web.Request) -> web.Response:
    """The audit log: when, which token, what changed, before and after."""
    exp_id, entries = await service.history(request.app[POOL], request.match_info["id"])
    return json_response({"experiment_id": exp_id, "history": entries})
