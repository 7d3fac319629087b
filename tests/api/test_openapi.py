"""GET /api/v1/openapi.json: a valid OpenAPI 3.1 document covering every route with its auth and
error answers, derived from the models the handlers validate with; the hand validators of the
assignment hot path accept exactly what their models accept; real answers conform; /docs works
offline."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import jsonschema_rs
import orjson
import pydantic
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from litmus.api import assign as assign_api
from litmus.api import event_schemas as ev
from litmus.api import experiments as experiments_api
from litmus.api import openapi
from litmus.api import openapi_models as m
from litmus.app import create_app
from litmus.errors import PayloadTooLarge, ValidationFailed
from litmus.settings import Settings
from tests.conftest import ADMIN, CLIENT, experiment_payload


def _doc() -> dict[str, Any]:
    return openapi.build(create_app(Settings()))


DOC = _doc()


def operation(doc: dict[str, Any], route: str) -> tuple[str, str, dict[str, Any]]:
    """(path, method, operation) of a route name."""
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if op["x-litmus-route"] == route:
                return path, method, op
    raise KeyError(route)


def conforms(doc: dict[str, Any], route: str, status: int, content_type: str, body: bytes) -> None:
    """Assert a real answer is documented (status and media type) and matches its schema."""
    _, _, op = operation(doc, route)
    assert str(status) in op["responses"], f"{route} answered an undocumented {status}"
    answer = op["responses"][str(status)]
    content = answer.get("content")
    if content is None:
        assert body == b"", f"{route} {status} should have no body"
        return
    media = content_type.split(";")[0].strip()
    assert media in content, f"{route} {status} answered {media}, documented {list(content)}"
    if media != "application/json":
        return
    schema = {**content[media]["schema"], "components": doc["components"]}
    validator = jsonschema_rs.Draft202012Validator(schema)
    data = orjson.loads(body)
    errors = [e.message for e in validator.iter_errors(data)]
    assert not errors, f"{route} {status}: {errors[:3]} in {data!r:.300}"


# -- the document ---------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    errors = [e.message for e in OPENAPI_31_VALIDATOR.iter_errors(DOC)]
    assert not errors, errors[:5]
    assert DOC["openapi"] == "3.1.0"
    # Every $ref points at something that exists.
    text = orjson.dumps(DOC).decode()
    for ref in set(re.findall(r'"\$ref":"#/components/(\w+)/([^"]+)"', text)):
        assert ref[1] in DOC["components"][ref[0]], ref


def test_every_route_is_documented_with_its_models() -> None:
    app = create_app(Settings())
    documented = {(op["x-litmus-route"], method) for methods in DOC["paths"].values()
                  for method, op in methods.items()}
    for route in app.router.routes():
        if route.method == "HEAD" or route.name in openapi.UNDOCUMENTED:
            continue
        assert (route.name, route.method.lower()) in documented, route.name
        # A route without a description of its own gets only generic answers: not enough.
        assert route.name in openapi.OPERATIONS, (
            f"route {route.name} is not described in litmus/api/openapi.py OPERATIONS: add its "
            "request model, answers and error statuses there"
        )
    assert len(documented) == len([r for r in app.router.routes()
                                   if r.method != "HEAD" and r.name not in openapi.UNDOCUMENTED])


def test_auth_and_errors_in_the_document_match_the_middleware() -> None:
    for path, methods in DOC["paths"].items():
        for op in methods.values():
            name = op["x-litmus-route"]
            responses = op["responses"]
            if not path.startswith("/api/v1/") or path == "/api/v1/openapi.json":
                assert op["security"] == [], name
                assert "401" not in responses
                continue
            assert "401" in responses, name
            if name.startswith("client."):
                assert op["security"] == [{"clientToken": []}, {"adminToken": []}], name
                assert "403" not in responses, name
            else:
                assert op["security"] == [{"adminToken": []}], name
                assert "403" in responses, name
            for status, answer in responses.items():
                if int(status) >= 400:
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (name, status)
            if "requestBody" in op:
                assert {"400", "413", "422"} <= set(responses), name


def test_request_models_are_the_ones_the_handlers_validate_with() -> None:
    ops = openapi.OPERATIONS
    # The pydantic-validated routes: the very classes the handlers' module uses.
    assert ops["experiments.create"].body is experiments_api.ExperimentIn
    assert ops["experiments.launch"].body is experiments_api.LaunchIn
    assert ops["experiments.stop"].body is experiments_api.StopIn
    assert ops["experiments.list"].query is experiments_api.ListQuery
    # PATCH validates the merged experiment with ExperimentIn: same fields, same constraints.
    patch = m.ExperimentPatch.model_json_schema()["properties"]
    full = experiments_api.ExperimentIn.model_json_schema()["properties"]
    assert patch.keys() == full.keys() == experiments_api.PATCHABLE
    for name, prop in full.items():
        assert {k: v for k, v in patch[name].items() if k != "default"} == {
            k: v for k, v in prop.items() if k != "default"}, name
    _, _, op = operation(DOC, "experiments.create")
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ExperimentIn")


# -- the hand validators of the hot path agree with their models ----------------------------

_scalars = (st.none() | st.booleans() | st.integers(-3, 3)
            | st.floats(allow_nan=False, allow_infinity=False, width=32) | st.text(max_size=4))
_json = st.recursive(
    _scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=6,
)
_refs = st.sampled_from(["exp", "", "a-b", "9f1c3a2e-0000-4000-8000-000000000000"]) | _json
_units = (st.sampled_from(["u1", "", "x" * 256, "x" * 257, "ü" * 256, "'; DROP TABLE x;--"])
          | st.text(max_size=6) | _json)
_attrs = (st.dictionaries(st.text(max_size=3), _json, max_size=3) | _json
          | st.sampled_from([{"ua": "x" * 1024}, {"ua": "x" * 1025}, {"tags": ["a", "x" * 1025]},
                             {f"a{i}": i for i in range(64)}, {f"a{i}": i for i in range(65)}]))
_logs = st.booleans() | _json


# Covariates: well-formed, badly named, too many, not numbers, or anything.
_covs = st.none() | st.dictionaries(
    st.sampled_from(["pre_sessions", "a", "x-1", "Bad Name", "", "9lives", "é"]),
    st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.booleans() | st.text(max_size=3)
    | st.none(), max_size=7) | _json


def _assign_bodies(extra_key: str = "attributes_") -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({}, optional={
        "experiment": _refs, "unit_id": _units, "attributes": _attrs, "log_exposure": _logs,
        "covariates": _covs, extra_key: _json,
    }) | _json


def _accepts(model: type[pydantic.BaseModel], body: Any) -> bool:
    try:
        model.model_validate(body)
    except pydantic.ValidationError:
        return False
    return True


def _as_parsed(body: Any) -> Any:
    """What the handler sees: the body after a JSON round trip."""
    return orjson.loads(orjson.dumps(body))


_agree = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_agree
@given(_assign_bodies())
def test_assign_validator_agrees_with_its_model(body: Any) -> None:
    body = _as_parsed(body)
    assert (not assign_api.assign_problems(body)) == _accepts(m.AssignIn, body), body


@_agree
@given(st.fixed_dictionaries({}, optional={
    "unit_id": _units, "attributes": _attrs, "log_exposure": _logs, "experiment": _json,
}) | _json)
def test_assignments_validator_agrees_with_its_model(body: Any) -> None:
    body = _as_parsed(body)
    assert (not assign_api.assignments_problems(body)) == _accepts(m.AssignmentsIn, body), body


def _batch_accepted(body: Any) -> bool:
    try:
        assign_api.batch_requests(body)
    except (ValidationFailed, PayloadTooLarge):
        return False
    return True


@_agree
@given(
    st.fixed_dictionaries({}, optional={
        "requests": st.lists(_assign_bodies(), max_size=3) | _json,
        "unit_ids": st.lists(_units, max_size=3) | _json,
        "experiment": _refs, "attributes": _attrs, "log_exposure": _logs, "unit_id": _json,
    }) | _json
)
def test_batch_validator_agrees_with_its_model(body: Any) -> None:
    body = _as_parsed(body)
    assert _batch_accepted(body) == _accepts(m.AssignBatchIn, body), body


@pytest.mark.parametrize("n", [0, 1, 1000, 1001])
def test_batch_size_limit_agrees(n: int) -> None:
    units = {"experiment": "e", "unit_ids": [f"u{i}" for i in range(n)]}
    requests = {"requests": [{"experiment": "e", "unit_id": f"u{i}"} for i in range(n)]}
    for body in (units, requests):
        assert _batch_accepted(body) == _accepts(m.AssignBatchIn, body) == (n <= 1000)


def test_event_times_state_one_window_for_both_forms() -> None:
    """The accepted `ts` window is in the document, and it is the one the endpoints apply."""
    for name in ("ExposureEventIn", "MetricEventIn", "TypedEventIn"):
        ts = DOC["components"]["schemas"][name]["properties"]["ts"]
        assert ev.TS_WINDOW in ts["description"], name
        assert "2000-01-01T00:00:00Z to 24 hours after the server's clock" in ts["description"]
        forms = {b.get("format") or b["type"]: b for b in ts["anyOf"]}
        assert forms.keys() == {"date-time", "number", "null"}
        assert forms["number"]["minimum"] == ev.EPOCH_MS_MIN == 946_684_800_000
    for path in ("/api/v1/events", "/api/v1/events/exposure", "/api/v1/events/metric"):
        text = DOC["paths"][path]["post"]["description"]
        assert "2000-01-01T00:00:00Z and 24 hours after" in text and "event type" in text, path
    accepted = DOC["components"]["schemas"]["EventsAccepted"]
    assert "duplicates" in accepted["required"]


@pytest.mark.parametrize("model", [ev.ExposureEventIn, ev.MetricEventIn, ev.TypedEventIn])
def test_event_models_refuse_what_the_endpoints_refuse(model: type[pydantic.BaseModel]) -> None:
    """Numbers as strings and times outside the window are refused by the documented models
    as by the hand-written validator."""
    base: dict[str, Any] = {"experiment": "e", "unit_id": "u", "variant": "a", "metric": "m",
                            "value": 2.5}
    if model is ev.TypedEventIn:
        base["type"] = "metric"
    allowed = set(model.model_fields)
    base = {k: v for k, v in base.items() if k in allowed}
    assert _accepts(model, {**base, "ts": "2000-01-01T00:00:00Z"})
    assert _accepts(model, {**base, "ts": ev.EPOCH_MS_MIN})
    for ts in ("0001-01-01T00:00:00Z", ev.EPOCH_MS_MIN - 1, str(ev.EPOCH_MS_MIN + 10**12), True):
        assert not _accepts(model, {**base, "ts": ts}), ts
    if "value" in base:
        assert not _accepts(model, {**base, "value": "2.5"})


# -- real answers conform to the document ----------------------------------------------------


async def _call(client: TestClient, seen: set[tuple[str, int]], route: str, method: str,
                path: str, **kw: Any) -> Any:
    resp = await client.request(method, path, **kw)
    body = await resp.read()
    conforms(DOC, route, resp.status, resp.headers.get("Content-Type", ""), body)
    seen.add((route, resp.status))
    return orjson.loads(body) if body and resp.content_type == "application/json" else body


async def test_real_answers_conform_to_the_document(client: TestClient) -> None:
    seen: set[tuple[str, int]] = set()
    c = client
    exp = await _call(c, seen, "experiments.create", "POST", "/api/v1/experiments",
                      json=experiment_payload(key="conf"), headers=ADMIN)
    eid = exp["id"]
    await _call(c, seen, "experiments.create", "POST", "/api/v1/experiments",
                json=experiment_payload(key="conf"), headers=ADMIN)  # 409
    await _call(c, seen, "experiments.create", "POST", "/api/v1/experiments",
                json={"name": "x"}, headers=ADMIN)  # 422
    await _call(c, seen, "experiments.create", "POST", "/api/v1/experiments",
                data=b"{nope", headers=ADMIN)  # 400
    await _call(c, seen, "experiments.create", "POST", "/api/v1/experiments",
                json=experiment_payload(), headers=CLIENT)  # 403
    await _call(c, seen, "experiments.list", "GET", "/api/v1/experiments", headers=ADMIN)
    await _call(c, seen, "experiments.list", "GET", "/api/v1/experiments?limit=0", headers=ADMIN)
    await _call(c, seen, "experiments.get", "GET", f"/api/v1/experiments/{eid}", headers=ADMIN)
    await _call(c, seen, "experiments.get", "GET", "/api/v1/experiments/nope", headers=ADMIN)
    await _call(c, seen, "experiments.patch", "PATCH", f"/api/v1/experiments/{eid}",
                json={"hypothesis": "h2"}, headers=ADMIN)
    await _call(c, seen, "experiments.patch", "PATCH", f"/api/v1/experiments/{eid}",
                json={"name": "n"}, headers={**ADMIN, "If-Match": "1"})  # 412
    await _call(c, seen, "experiments.launch", "POST", f"/api/v1/experiments/{eid}/launch",
                json={"ramp": 1}, headers=ADMIN)
    await _call(c, seen, "experiments.patch", "PATCH", f"/api/v1/experiments/{eid}",
                json={"variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}]},
                headers=ADMIN)  # 409 frozen
    await _call(c, seen, "experiments.history", "GET", f"/api/v1/experiments/{eid}/history",
                headers=ADMIN)
    for _ in range(200):
        a = await _call(c, seen, "client.assign", "POST", "/api/v1/assign",
                        json={"experiment": "conf", "unit_id": "u1"}, headers=CLIENT)
        if a["reason"] == "assigned":
            break
        await asyncio.sleep(0.01)
    await _call(c, seen, "client.assign", "POST", "/api/v1/assign",
                json={"experiment": "nope", "unit_id": "u1"}, headers=CLIENT)  # 404
    await _call(c, seen, "client.assign", "POST", "/api/v1/assign", json={"unit_id": 5},
                headers=CLIENT)  # 422
    await _call(c, seen, "client.assign", "POST", "/api/v1/assign", headers={"X": "1"})  # 401
    await _call(c, seen, "client.assign.batch", "POST", "/api/v1/assign/batch",
                json={"requests": [{"experiment": "conf", "unit_id": "u1"},
                                   {"experiment": "nope", "unit_id": "u2"}]}, headers=CLIENT)
    await _call(c, seen, "client.assign.batch", "POST", "/api/v1/assign/batch",
                json={"experiment": "conf", "unit_ids": ["x"] * 1001}, headers=CLIENT)  # 413
    await _call(c, seen, "client.assignments", "POST", "/api/v1/assignments",
                json={"unit_id": "u1", "attributes": {"country": "fr"}}, headers=CLIENT)
    cfg = await c.get("/api/v1/config", headers=CLIENT)
    conforms(DOC, "client.config", cfg.status, cfg.headers["Content-Type"], await cfg.read())
    again = await c.get("/api/v1/config", headers={**CLIENT, "If-None-Match": cfg.headers["ETag"]})
    conforms(DOC, "client.config", again.status, again.headers.get("Content-Type", ""),
             await again.read())
    assert again.status == 304
    await _call(c, seen, "client.events.exposure", "POST", "/api/v1/events/exposure",
                json={"events": [{"experiment": "conf", "unit_id": f"u{i}", "variant": "model_a"}
                                 for i in range(5)]}, headers=CLIENT)
    await _call(c, seen, "client.events.metric", "POST", "/api/v1/events/metric",
                json={"experiment": "conf", "unit_id": "u1", "metric": "revenue", "value": 2.5},
                headers=CLIENT)
    await _call(c, seen, "client.events.create", "POST", "/api/v1/events",
                json={"type": "conversion", "experiment": "conf", "unit_id": "u2"},
                headers=CLIENT)
    await _call(c, seen, "client.events.create", "POST", "/api/v1/events",
                json={"type": "conversion", "experiment": "conf"}, headers=CLIENT)  # 422
    for _ in range(100):
        r = await c.get(f"/api/v1/experiments/{eid}/results", headers=ADMIN)
        if r.status == 200:
            break
        await asyncio.sleep(0.1)
    await _call(c, seen, "results.get", "GET", f"/api/v1/experiments/{eid}/results", headers=ADMIN)
    await _call(c, seen, "results.csv", "GET", f"/api/v1/experiments/{eid}/results.csv",
                headers=ADMIN)
    await _call(c, seen, "results.history", "GET",
                f"/api/v1/experiments/{eid}/results/history", headers=ADMIN)
    await _call(c, seen, "results.segment_keys", "GET",
                f"/api/v1/experiments/{eid}/results/segments", headers=ADMIN)
    await _call(c, seen, "results.get", "GET", f"/api/v1/experiments/{eid}/results?segment=country",
                headers=ADMIN)  # 422: no exposure carries it
    await _call(c, seen, "experiments.pause", "POST", f"/api/v1/experiments/{eid}/pause",
                headers=ADMIN)
    await _call(c, seen, "experiments.stop", "POST", f"/api/v1/experiments/{eid}/stop",
                json={"winner": "model_b"}, headers=ADMIN)
    await _call(c, seen, "experiments.stop", "POST", f"/api/v1/experiments/{eid}/stop",
                headers=ADMIN)  # 409: already stopped
    await _call(c, seen, "experiments.delete", "DELETE", f"/api/v1/experiments/{eid}",
                headers=ADMIN)  # 409: only drafts
    draft = await _call(c, seen, "experiments.create", "POST", "/api/v1/experiments",
                        json=experiment_payload(key="gone"), headers=ADMIN)
    await _call(c, seen, "experiments.delete", "DELETE", f"/api/v1/experiments/{draft['id']}",
                headers=ADMIN)
    await _call(c, seen, "results.get", "GET", f"/api/v1/experiments/{draft['id']}/results",
                headers=ADMIN)  # 404
    for route, path in (("ops.healthz", "/healthz"), ("ops.readyz", "/readyz"),
                        ("ops.metrics", "/metrics"), ("ops.openapi", "/api/v1/openapi.json"),
                        ("ops.docs", "/docs"), ("ui.experiments", "/experiments")):
        await _call(c, seen, route, "GET", path)
    root = await c.get("/", allow_redirects=False)
    conforms(DOC, "ui.root", root.status, root.headers.get("Content-Type", ""), await root.read())
    # Every documented success answer of these routes was really produced above.
    for route, status in [("experiments.create", 201), ("experiments.create", 409),
                          ("experiments.create", 422), ("experiments.create", 400),
                          ("experiments.create", 403), ("experiments.patch", 412),
                          ("experiments.patch", 409), ("experiments.delete", 204),
                          ("client.assign", 404), ("client.assign", 401),
                          ("client.assign.batch", 413), ("results.get", 200),
                          ("results.csv", 200), ("results.history", 200),
                          ("results.segment_keys", 200), ("results.get", 422),
                          ("client.events.exposure", 202)]:
        assert (route, status) in seen, (route, status)


# -- the served document and /docs ------------------------------------------------------------


async def test_openapi_json_is_public_and_the_same_document(client: TestClient) -> None:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == orjson.loads(orjson.dumps(DOC))


async def test_docs_page_uses_local_files_only(client: TestClient) -> None:
    resp = await client.get("/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert "/api/v1/openapi.json" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page must not load remote files"
    assert "validatorUrl: null" in page  # Swagger UI would otherwise call an online validator
    for asset in re.findall(r"(?:src|href)=\"(/docs/assets/[^\"]+)\"", page):
        a = await client.get(asset)
        assert a.status == 200, asset
        assert len(await a.read()) > 100
    assert (await client.get("/docs/assets/..%2F..%2F__init__.py")).status == 404
    assert (await client.get("/docs/assets/index.html")).status == 404
