"""GET /api/v1/openapi.json, generated from the app's routes and the pydantic models the handlers
validate with; GET /docs renders it with Swagger UI served from local files (no CDN).

Each route is described by its name in OPERATIONS: the request body and query models, the
answers and the error statuses it can give. Paths, methods, summaries (the handler's
docstring) and auth (route names starting with "client." are open to client tokens, other
/api/v1 routes need an admin token) come from the router itself, so a route cannot be
documented under a wrong path. A route missing from OPERATIONS is still listed, with its auth
and its generic error answers, and tests/api/test_openapi.py reports it.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from litmus.api import event_schemas as ev
from litmus.api import openapi_models as m
from litmus.api.middleware import CLIENT_ROUTE
from litmus.api.schemas import (
    CounterfactualIn,
    ExperimentIn,
    LaunchIn,
    ListQuery,
    PlanIn,
    ResultsQuery,
    StopIn,
    UnitsQuery,
)

routes = web.RouteTableDef()

OPENAPI_PATH = "/api/v1/openapi.json"
JSON = "application/json"
ADMIN_SCHEME = "adminToken"
CLIENT_SCHEME = "clientToken"
# Routes serving files rather than API answers.
UNDOCUMENTED = frozenset({"ui.static", "docs.assets"})


# -- route descriptions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One documented answer: a description, its body model (None: no body) and media type."""

    description: str
    model: Any = None
    media: str = JSON
    headers: tuple[str, ...] = ()
    # OpenAPI links: operation id -> {parameter: runtime expression}; they tell a client (and
    # schemathesis' stateful phase) where the id of a new experiment can be used next.
    links: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Op:
    """What a route takes and answers besides what the router and auth already say."""

    body: Any = None  # a pydantic model (or RootModel) for the JSON body
    body_required: bool = True
    query: type[BaseModel] | None = None
    headers: tuple[str, ...] = ()  # request headers it honours (If-Match, If-None-Match)
    answers: dict[int, Answer] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    tag: str = ""


_EXP = Answer("The experiment", m.ExperimentOut, headers=("ETag",))
_BY_ID = {"id": "$response.body#/id"}
_CREATED = Answer("The new draft", m.ExperimentOut, headers=("ETag",), links={
    op: _BY_ID for op in ("experiments_get", "experiments_patch", "experiments_launch",
                          "experiments_pause", "experiments_stop", "experiments_delete",
                          "experiments_history", "results_get", "results_csv")})
_EVENTS_OK = {202: Answer("Stored (durable unless `wait=false`); repeats of an `event_id` "
                          "are counted in `duplicates`, not in `accepted`", ev.EventsAccepted)}
_EVENT_ERRORS = (400, 413, 422, 503)
_HTML = Answer("An HTML page", str, media="text/html")

OPERATIONS: dict[str, Op] = {
    "ops.healthz": Op(answers={200: Answer("The process is up", m.Health)}, tag="operations"),
    "ops.readyz": Op(answers={200: Answer("The database answers", m.Ready)}, errors=(503,),
                     tag="operations"),
    "ops.metrics": Op(answers={200: Answer("Prometheus text format", str,
                                           media="text/plain")}, tag="operations"),
    "ops.openapi": Op(answers={200: Answer("This document", dict[str, Any])}, tag="operations"),
    "ops.docs": Op(answers={200: _HTML}, tag="operations"),
    "experiments.create": Op(body=ExperimentIn, answers={201: _CREATED},
                             errors=(400, 409, 413, 422), tag="experiments"),
    "experiments.list": Op(query=ListQuery,
                           answers={200: Answer("Experiments, newest first", m.ExperimentList)},
                           errors=(422,), tag="experiments"),
    "experiments.get": Op(answers={200: _EXP}, errors=(404,), tag="experiments"),
    "experiments.patch": Op(body=m.ExperimentPatch, headers=("If-Match",), answers={200: _EXP},
                            errors=(400, 404, 409, 412, 413, 422), tag="experiments"),
    "experiments.launch": Op(body=LaunchIn, body_required=False, headers=("If-Match",),
                             answers={200: _EXP}, errors=(400, 404, 409, 412, 413, 422),
                             tag="experiments"),
    "experiments.pause": Op(headers=("If-Match",), answers={200: _EXP},
                            errors=(400, 404, 409, 412), tag="experiments"),
    "experiments.stop": Op(body=StopIn, body_required=False, headers=("If-Match",),
                           answers={200: _EXP}, errors=(400, 404, 409, 412, 413, 422),
                           tag="experiments"),
    "experiments.delete": Op(answers={204: Answer("Deleted")}, errors=(404, 409),
                             tag="experiments"),
    "experiments.history": Op(answers={200: Answer("The audit log", m.History)}, errors=(404,),
                              tag="experiments"),
    "client.assign": Op(body=m.AssignIn, answers={200: Answer("The assignment", m.AssignOut)},
                        errors=(400, 404, 413, 422), tag="assignment"),
    "client.assign.batch": Op(body=m.AssignBatchIn,
                              answers={200: Answer("One answer per request, in order",
                                                   m.AssignBatchOut)},
                              errors=(400, 413, 422), tag="assignment"),
    "client.assignments": Op(body=m.AssignmentsIn,
                             answers={200: Answer("The unit in every running experiment",
                                                  m.AssignmentsOut)},
                             errors=(400, 413, 422), tag="assignment"),
    "client.config": Op(headers=("If-None-Match",),
                        answers={200: Answer("Every served experiment", m.ConfigOut,
                                             headers=("ETag",)),
                                 304: Answer("Unchanged since the ETag given", headers=("ETag",))},
                        tag="assignment"),
    "client.config.stream": Op(answers={200: Answer(
        "Server-sent events: `event: config` with the config as data, on start and on each "
        "change; `: heartbeat` comments in between", str, media="text/event-stream")},
        tag="assignment"),
    "client.events.exposure": Op(body=m.ExposureBody, query=m.EventsQuery, answers=_EVENTS_OK,
                                 errors=_EVENT_ERRORS, tag="events"),
    "client.events.metric": Op(body=m.MetricBody, query=m.EventsQuery, answers=_EVENTS_OK,
                               errors=_EVENT_ERRORS, tag="events"),
    "client.events.create": Op(body=m.TypedBody, query=m.EventsQuery, answers=_EVENTS_OK,
                               errors=_EVENT_ERRORS, tag="events"),
    "results.get": Op(query=ResultsQuery,
                      answers={200: Answer("The latest snapshot (with `segment`: and each "
                                           "segment's results)", m.Results)},
                      errors=(404, 422), tag="results"),
    "results.segment_keys": Op(answers={200: Answer("Attributes to break results down by",
                                                    m.SegmentKeys)},
                               errors=(404,), tag="results"),
    "results.history": Op(answers={200: Answer("Lift over time", m.LiftHistory)},
                          errors=(404,), tag="results"),
    "results.csv": Op(answers={200: Answer("The lift table", str, media="text/csv")},
                      errors=(404,), tag="results"),
    "results.counterfactual": Op(
        body=CounterfactualIn,
        answers={200: Answer("IPS, SNIPS and DR of each policy", m.CounterfactualOut)},
        errors=(400, 404, 422), tag="results"),
    "results.units_csv": Op(
        query=UnitsQuery,
        answers={200: Answer("One row per exposed unit: unit_id, variant, probability, "
                             "first_exposure_at, value", str, media="text/csv")},
        errors=(404, 422), tag="results"),
    "plan.create": Op(body=PlanIn,
                      answers={200: Answer("Units per arm (or the MDE) per analysis",
                                           m.PlanOut)},
                      errors=(400, 413, 422), tag="planning"),
    "ui.root": Op(answers={302: Answer("To the experiments list", str, media="text/plain",
                                       headers=("Location",))},
                  tag="ui"),
}
for _ui in ("ui.experiments", "ui.experiments.new", "ui.experiments.id",
            "ui.experiments.id.results", "ui.experiments.id.settings"):
    OPERATIONS[_ui] = Op(answers={200: _HTML}, tag="ui")

_ERROR_TEXT = {
    400: "Malformed request: the body is not JSON, or a header is invalid",
    401: "No bearer token, or not a valid one",
    403: "A client token on a route that needs an admin token",
    404: "No such experiment (or nothing to show for it yet)",
    409: "Conflicts with the experiment's state (the message names it)",
    412: "If-Match does not match the experiment's version",
    413: "The body is over the size limit (or a batch over its count limit)",
    422: "Invalid fields; `fields` names each one by its path",
    503: "Temporarily unavailable (the database); retry after `Retry-After` seconds",
}
_HEADER_DOCS = {
    "ETag": "The version, for If-Match (experiments) or If-None-Match (config)",
    "Location": "Where to go",
    "Retry-After": "Seconds to wait before retrying",
    "WWW-Authenticate": "The bearer challenge",
    "X-Request-Id": "The request's id, as in the server's log lines (the caller's own when it "
                    "sent a sane X-Request-Id)",
}
_REQUEST_HEADERS: dict[str, tuple[str, dict[str, Any]]] = {
    # As litmus.api.experiments._if_match reads it: *, or the version, bare or as an ETag.
    "If-Match": ("Only change the experiment if its version is this one (its ETag)",
                 {"type": "string", "pattern": r'^\s*(\*|(W/)?"?[0-9]+"?)\s*$'}),
    "If-None-Match": ("Answer 304 when the config still has this ETag", {"type": "string"}),
}


# -- building the document ------------------------------------------------------------------


def _route_infos(app: web.Application) -> list[tuple[str, str, str, str]]:
    """(path template, method, route name, handler docstring) of every documented route."""
    out = []
    for route in app.router.routes():
        name = route.name or ""
        if route.method == "HEAD" or route.resource is None or name in UNDOCUMENTED:
            continue
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter")
        if not path:
            continue
        out.append((str(path), route.method.lower(), name, route.handler.__doc__ or ""))
    return out


def _models(ops: Sequence[Op]) -> list[Any]:
    seen: list[Any] = []
    for op in ops:
        candidates = [op.body, op.query, *(a.model for a in op.answers.values())]
        for c in candidates:
            if isinstance(c, type) and issubclass(c, BaseModel) and c not in seen:
                seen.append(c)
    if m.ErrorBody not in seen:
        seen.append(m.ErrorBody)
    return seen


def _schema_of(model: Any, schemas: Mapping[tuple[Any, Any], dict[str, Any]],
               mode: str) -> dict[str, Any]:
    if model is str:
        return {"type": "string"}
    if isinstance(model, type) and issubclass(model, BaseModel):
        s: dict[str, Any] = schemas[(model, mode)]
        return s
    return {"type": "object"}


def _headers(names: Sequence[str]) -> dict[str, Any]:
    return {h: {"$ref": f"#/components/headers/{h}"} for h in names}


def _auth_of(path: str, name: str) -> str | None:
    """admin, client or None (public); mirrors `middleware._authorize`."""
    if not path.startswith("/api/v1/") or path == OPENAPI_PATH:
        return None
    return "client" if name.startswith(CLIENT_ROUTE) else "admin"


def build(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this app."""
    infos = _route_infos(app)
    ops = [OPERATIONS.get(name, Op()) for _, _, name, _ in infos]
    models = _models(ops)
    keyed, defs = models_json_schema(
        [(mdl, mode) for mdl in models for mode in ("validation", "serialization")],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for (path, method, name, doc), op in zip(infos, ops, strict=True):
        auth = _auth_of(path, name)
        lines = [ln.strip() for ln in doc.strip().splitlines()]
        description = " ".join(ln for ln in lines[1:] if ln)
        if auth == "admin":
            description = ("Needs an admin token. " + description).strip()
        elif auth == "client":
            description = ("Open to client and admin tokens. " + description).strip()
        operation: dict[str, Any] = {
            "operationId": name.replace(".", "_"),
            "summary": lines[0] if lines else name,
            "tags": [op.tag or name.split(".")[0]],
            "x-litmus-route": name,
        }
        if description:
            operation["description"] = description
        params: list[dict[str, Any]] = []
        for var in re.findall(r"{(\w+)}", path):
            params.append({"name": var, "in": "path", "required": True,
                           "description": "The experiment's id or key", "schema": {"type": "string"}})
        if op.query is not None:
            qs = op.query.model_json_schema(ref_template="#/components/schemas/{model}")
            required = set(qs.get("required", []))
            for pname, pschema in qs.get("properties", {}).items():
                params.append({"name": pname, "in": "query", "required": pname in required,
                               "schema": pschema})
        for h in op.headers:
            doc_, schema_ = _REQUEST_HEADERS[h]
            params.append({"name": h, "in": "header", "required": False, "description": doc_,
                           "schema": schema_})
        if params:
            operation["parameters"] = params
        if op.body is not None:
            operation["requestBody"] = {
                "required": op.body_required,
                "content": {JSON: {"schema": _schema_of(op.body, keyed, "validation")}},
            }
        responses: dict[str, Any] = {}
        for status, ans in sorted(op.answers.items()):
            r: dict[str, Any] = {"description": ans.description,
                                 "headers": _headers(("X-Request-Id", *ans.headers))}
            if ans.model is not None:
                r["content"] = {ans.media: {"schema": _schema_of(ans.model, keyed, "serialization")}}
            if ans.links:
                r["links"] = {target: {"operationId": target, "parameters": params_}
                              for target, params_ in ans.links.items()}
            responses[str(status)] = r
        errors = set(op.errors)
        if auth is not None:
            errors.add(401)
            operation["security"] = (
                [{ADMIN_SCHEME: []}] if auth == "admin" else [{CLIENT_SCHEME: []}, {ADMIN_SCHEME: []}]
            )
            operation["x-litmus-token"] = auth
            if auth == "admin":
                errors.add(403)
        else:
            operation["security"] = []
        if op.body is not None:
            errors |= {400, 413, 422}
        err_schema = _schema_of(m.ErrorBody, keyed, "serialization")
        for status in sorted(errors):
            extra = {401: ("WWW-Authenticate",), 503: ("Retry-After",)}.get(status, ())
            responses[str(status)] = {
                "description": _ERROR_TEXT[status],
                "headers": _headers(("X-Request-Id", *extra)),
                "content": {JSON: {"schema": err_schema}},
            }
        operation["responses"] = responses
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Litmus",
            "version": _version(),
            "description": (
                "Experimentation server for ML models: A/B/n tests and multi-armed bandits. "
                "Every /api/v1 route needs `Authorization: Bearer <token>`: admin tokens "
                "(ADMIN_API_TOKENS) may do everything; client tokens (CLIENT_API_TOKENS) may "
                "only assign, send events and read config. Errors are "
                '`{"error": {"code", "message", "fields"?}}`.'
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "headers": {h: {"description": d, "schema": {"type": "string"}}
                        for h, d in _HEADER_DOCS.items()},
            "securitySchemes": {
                ADMIN_SCHEME: {"type": "http", "scheme": "bearer",
                               "description": "A token of ADMIN_API_TOKENS"},
                CLIENT_SCHEME: {"type": "http", "scheme": "bearer",
                                "description": "A token of CLIENT_API_TOKENS (assign, events, "
                                               "config)"},
            },
        },
    }


def _version() -> str:
    try:
        return importlib.metadata.version("litmus")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


_cache: dict[frozenset[tuple[str, str, str, str]], bytes] = {}


def document_bytes(app: web.Application) -> bytes:
    """The serialised document, built once per set of routes."""
    key = frozenset(_route_infos(app))
    body = _cache.get(key)
    if body is None:
        body = _cache[key] = orjson.dumps(build(app))
    return body


@routes.get(OPENAPI_PATH, name="ops.openapi")
async def openapi(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 document (public)."""
    return web.Response(body=document_bytes(request.app), content_type=JSON)


# -- /docs: Swagger UI from the installed swagger-ui-bundle-v2 package ------------------------


def _swagger_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Litmus API</title>
<link rel="icon" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "OPENAPI", dom_id: "#swagger-ui", deepLinking: true,
  persistAuthorization: true, tryItOutEnabled: false, validatorUrl: null});
</script></body></html>
""".replace("OPENAPI", OPENAPI_PATH)
_FALLBACK = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Litmus API</title></head>
<body><h1>Litmus API</h1><p>The interactive page needs the <code>swagger-ui-bundle-v2</code>
package (a dependency of Litmus); the document itself is at
<a href="OPENAPI">OPENAPI</a>.</p></body></html>
""".replace("OPENAPI", OPENAPI_PATH)


@routes.get("/docs", name="ops.docs")
async def docs(request: web.Request) -> web.Response:
    """The API reference, rendered from the OpenAPI document with local files only."""
    page = _PAGE if _swagger_dir() is not None else _FALLBACK
    return web.Response(text=page, content_type="text/html")


@routes.get("/docs/assets/{name}", name="docs.assets")
async def docs_asset(request: web.Request) -> web.StreamResponse:
    """One Swagger UI file (a fixed list: nothing else of the file system is reachable)."""
    name = request.match_info["name"]
    folder = _swagger_dir()
    if name not in ASSETS or folder is None:
        raise web.HTTPNotFound()
    return web.FileResponse(folder / name, headers={"Cache-Control": "public, max-age=86400"})
