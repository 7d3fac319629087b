"""Experiments: create, list, get, patch, launch, pause, stop, delete, history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from litmus.api.middleware import actor, json_response, parse, read_json
from litmus.api.schemas import (
    PATCHABLE,
    ExperimentIn,
    LaunchIn,
    ListQuery,
    StopIn,
    editable_dict,
    slugify,
    to_experiment,
)
from litmus.core import lifecycle
from litmus.core.models import Experiment, experiment_to_dict
from litmus.db import experiments as db
from litmus.errors import BadRequest, Conflict, ValidationFailed
from litmus.keys import POOL, REGISTRY

routes = web.RouteTableDef()
BASE = "/api/v1/experiments"


def _out(exp: Experiment, status: int = 200) -> web.Response:
    return json_response(experiment_to_dict(exp), status=status, headers={"ETag": f'"{exp.version}"'})


async def _changed(request: web.Request, exp: Experiment) -> web.Response:
    """Answer with the experiment after this process's registry has it too.

    Other processes hear the change through NOTIFY; reloading here as well means a client that
    launches and then assigns on the same process never sees the old state."""
    await request.app[REGISTRY].reload_one(exp.id)
    return _out(exp)


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


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, lifecycle.TransitionError):
        return Conflict(str(exc), extra={"status": exc.status})
    if isinstance(exc, lifecycle.FrozenVariantsError):
        return Conflict(str(exc))
    return exc


@routes.post(BASE, name="experiments.create")
async def create(request: web.Request) -> web.Response:
    """Create a draft experiment with its variants."""
    data = parse(ExperimentIn, await read_json(request))
    exp = to_experiment(data)
    pool = request.app[POOL]
    for attempt in range(5):
        try:
            created = await db.create(pool, exp, actor(request))
            await request.app[REGISTRY].reload_one(created.id)
            return _out(created, status=201)
        except Conflict:
            if data.key is not None or attempt == 4:
                raise
            # The key was made from the name and is taken: add a short suffix.
            from dataclasses import replace

            exp = replace(exp, key=f"{slugify(data.name)[:55]}-{attempt + 2}")
    raise AssertionError("unreachable")


@routes.get(BASE, name="experiments.list")
async def list_experiments(request: web.Request) -> web.Response:
    """Experiments newest first; filters `status` and `owner_team`."""
    query = parse(ListQuery, dict(request.query))
    items = await db.list_experiments(
        request.app[POOL], query.status, query.owner_team, query.limit, query.offset
    )
    return json_response({"experiments": [experiment_to_dict(e) for e in items]})


@routes.get(BASE + "/{id}", name="experiments.get")
async def get(request: web.Request) -> web.Response:
    """One experiment by id or key."""
    return _out(await db.require(request.app[POOL], request.match_info["id"]))


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
    expected = _if_match(request)

    def mutate(current: Experiment) -> Experiment:
        base = editable_dict(current)
        merged: dict[str, Any] = {**base, **body}
        # Settings objects merge one level deeper: {"bandit": {"auto_stop": true}} changes
        # only that setting, not the rest back to defaults.
        for name in ("bandit", "metrics"):
            if isinstance(body.get(name), dict) and isinstance(base.get(name), dict):
                merged[name] = {**base[name], **body[name]}
        if "variants" in body and "allocation" not in body and current.allocation == "bandit":
            merged["allocation"] = "bandit"
        new = to_experiment(parse(ExperimentIn, merged), base=current)
        try:
            lifecycle.check_editable(current, new)
        except Exception as exc:
            raise _translate(exc) from None
        return new

    exp = await db.update(
        request.app[POOL], request.match_info["id"], mutate,
        actor=actor(request), action="update", expected_version=expected,
    )
    return await _changed(request, exp)


async def _read_optional(request: web.Request) -> Any:
    if not request.can_read_body:
        return {}
    body = await request.read()
    return {} if not body.strip() else await read_json(request)


@routes.post(BASE + "/{id}/launch", name="experiments.launch")
async def launch(request: web.Request) -> web.Response:
    """Launch (draft, paused) or update the ramp (running)."""
    data = parse(LaunchIn, await _read_optional(request))

    def mutate(current: Experiment) -> Experiment:
        try:
            return lifecycle.launch(current, data.ramp, datetime.now(UTC))
        except ValueError as exc:
            raise ValidationFailed(str(exc), fields={"ramp": str(exc)}) from None
        except Exception as exc:
            raise _translate(exc) from None

    exp = await db.update(request.app[POOL], request.match_info["id"], mutate,
                          actor=actor(request), action="launch", expected_version=_if_match(request))
    return await _changed(request, exp)


@routes.post(BASE + "/{id}/pause", name="experiments.pause")
async def pause(request: web.Request) -> web.Response:
    """Pause a running experiment."""

    def mutate(current: Experiment) -> Experiment:
        try:
            return lifecycle.pause(current)
        except Exception as exc:
            raise _translate(exc) from None

    exp = await db.update(request.app[POOL], request.match_info["id"], mutate,
                          actor=actor(request), action="pause", expected_version=_if_match(request))
    return await _changed(request, exp)


@routes.post(BASE + "/{id}/stop", name="experiments.stop")
async def stop(request: web.Request) -> web.Response:
    """Stop for good, optionally with a winner."""
    data = parse(StopIn, await _read_optional(request))

    def mutate(current: Experiment) -> Experiment:
        try:
            return lifecycle.stop(current, data.winner, datetime.now(UTC))
        except ValueError as exc:
            raise ValidationFailed(str(exc), fields={"winner": str(exc)}) from None
        except Exception as exc:
            raise _translate(exc) from None

    exp = await db.update(request.app[POOL], request.match_info["id"], mutate,
                          actor=actor(request), action="stop", expected_version=_if_match(request))
    return await _changed(request, exp)


@routes.delete(BASE + "/{id}", name="experiments.delete")
async def delete(request: web.Request) -> web.Response:
    """Delete a draft."""

    def check(current: Experiment) -> None:
        try:
            lifecycle.check_deletable(current)
        except Exception as exc:
            raise _translate(exc) from None

    exp = await db.require(request.app[POOL], request.match_info["id"])
    await db.delete(request.app[POOL], exp.id, check, actor(request))
    await request.app[REGISTRY].reload_one(exp.id)
    return web.Response(status=204)


@routes.get(BASE + "/{id}/history", name="experiments.history")
async def history(request: web.Request) -> web.Response:
    """The audit log: when, which token, what changed, before and after."""
    exp = await db.require(request.app[POOL], request.match_info["id"])
    return json_response({"experiment_id": exp.id, "history": await db.history(request.app[POOL], exp.id)})
