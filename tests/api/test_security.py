"""Security (docs/OPERATIONS.md, "Tokens"): auth on every documented route, no token in any log line, body
limits, hostile JSON, verbatim unit ids, CORS closed by default."""

from __future__ import annotations

import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from litmus.app import create_app
from litmus.settings import Settings
from tests.api.test_openapi import DOC
from tests.conftest import ADMIN, ADMIN_SECRET, CLIENT, CLIENT_SECRET, experiment_payload, launched
from tests.servers import ServerProcess

SECURED = sorted(
    (method.upper(), path, op["x-litmus-token"])
    for path, methods in DOC["paths"].items() for method, op in methods.items()
    if op["security"]
)
BODY_ROUTES = sorted(
    (method.upper(), path)
    for path, methods in DOC["paths"].items() for method, op in methods.items()
    if "requestBody" in op
)


def concrete(path: str, exp_id: str = "00000000-0000-4000-8000-000000000000") -> str:
    return path.replace("{id}", exp_id)


# -- auth -------------------------------------------------------------------------------------


def test_the_document_lists_secured_routes_of_both_kinds() -> None:
    kinds = {k for _, _, k in SECURED}
    assert kinds == {"admin", "client"}
    assert len(SECURED) >= 19


@pytest.mark.parametrize(("method", "path", "kind"), SECURED)
async def test_every_documented_route_needs_the_right_token(
    client: TestClient, method: str, path: str, kind: str
) -> None:
    url = concrete(path)
    for headers in ({}, {"Authorization": "Bearer not-a-token-123"},
                    {"Authorization": f"Basic {ADMIN_SECRET}"},
                    {"Authorization": f"Bearer {ADMIN_SECRET}x"}, {"Authorization": "Bearer "}):
        resp = await client.request(method, url, headers=headers, data=b"{}")
        assert resp.status == 401, (method, path, headers)
        assert (await resp.json())["error"]["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.request(method, url, headers=CLIENT, data=b"{}")
    if kind == "admin":
        assert resp.status == 403, (method, path)
        assert (await resp.json())["error"]["code"] == "forbidden"
    else:
        # A client token gets past auth: whatever it answers, it is not an auth refusal.
        assert resp.status not in (401, 403), (method, path, resp.status)
        resp.close()


async def test_admin_token_passes_auth_everywhere(client: TestClient) -> None:
    for method, path, _ in SECURED:
        if path.endswith("/stream"):
            continue  # an open stream; its auth is covered above
        resp = await client.request(method, concrete(path), headers=ADMIN, data=b"{}")
        assert resp.status not in (401, 403, 500), (method, path, resp.status)


# -- no token in any log line -----------------------------------------------------------------


def _call(base: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
          ) -> int:
    data = None if body is None else (body if isinstance(body, bytes) else orjson.dumps(body))
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_tokens_never_appear_in_a_real_servers_log(database_url: str, tmp_path: Path) -> None:
    server = ServerProcess(database_url, tmp_path / "srv", env={
        "LITMUS_LOG_LEVEL": "DEBUG", "LITMUS_LOG_FORMAT": "json"}).start()
    try:
        b = server.base_url
        admin = {"Authorization": f"Bearer {ADMIN_SECRET}"}
        client = {"Authorization": f"Bearer {CLIENT_SECRET}"}
        assert _call(b, "POST", "/api/v1/experiments", experiment_payload(key="sec"), admin) == 201
        assert _call(b, "GET", "/api/v1/experiments/sec", headers=admin) == 200
        assert _call(b, "POST", "/api/v1/experiments/sec/launch", {"ramp": 1}, admin) == 200
        assert _call(b, "GET", "/api/v1/experiments", headers=client) == 403
        assert _call(b, "GET", "/api/v1/experiments", headers={
            "Authorization": f"Bearer {ADMIN_SECRET[:-1]}"}) == 401
        assert _call(b, "GET", "/api/v1/experiments", headers={
            "Authorization": f"Basic {CLIENT_SECRET}"}) == 401
        # Secrets where they do not belong: a request id, a query string, a unit id, a bad body.
        assert _call(b, "GET", "/healthz", headers={"X-Request-Id": ADMIN_SECRET}) == 200
        assert _call(b, "GET", f"/api/v1/config?token={CLIENT_SECRET}", headers=client) == 200
        assert _call(b, "POST", "/api/v1/assign", {"experiment": "sec", "unit_id": ADMIN_SECRET},
                     client) == 200
        assert _call(b, "POST", "/api/v1/assign", b"{" + ADMIN_SECRET.encode(), client) == 400
        assert _call(b, "POST", "/api/v1/events/exposure",
                     {"experiment": "sec", "unit_id": CLIENT_SECRET, "variant": "nope"},
                     client) == 422
        for path in ("/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/docs"):
            assert _call(b, "GET", path) == 200
    finally:
        server.stop()
    log = server.log()
    assert ADMIN_SECRET not in log and CLIENT_SECRET not in log
    assert ADMIN_SECRET[:-1] not in log
    records = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    # The log really was written, as JSON, one line per request at DEBUG, with request ids.
    requests = [r for r in records if r["logger"] == "litmus.http"]
    assert len(requests) >= 15
    assert all(r.get("request_id") and r.get("route") for r in requests)


def test_a_generated_admin_token_is_printed_at_start_and_never_logged(
    database_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(database_url, tmp_path / "gen", env={
        "LITMUS_LOG_LEVEL": "DEBUG", "LITMUS_LOG_FORMAT": "json", "ADMIN_API_TOKENS": ""})
    server.start()
    try:
        kept = (tmp_path / "gen" / "admin_token").read_text().strip()
        secret = kept.split(":", 1)[1]
        # The secret alone, or the file's whole line pasted as it is, both sign in.
        for presented in (secret, kept):
            assert _call(server.base_url, "GET", "/api/v1/experiments",
                         headers={"Authorization": f"Bearer {presented}"}) == 200
        assert _call(server.base_url, "GET", "/api/v1/experiments",
                     headers={"Authorization": f"Bearer {secret}0"}) == 401
        assert _call(server.base_url, "GET", "/api/v1/experiments",
                     headers={"Authorization": f"Bearer other:{secret}"}) == 401
    finally:
        server.stop()
    lines = server.log().splitlines()
    printed = [ln for ln in lines if secret in ln]
    # On the console, never in a (JSON) log line: the token line and a ready export line.
    assert not any(ln.startswith("{") for ln in printed), printed
    assert len(printed) == 2 and "Admin token" in printed[0], printed
    assert printed[1].strip() == f"export LITMUS_TOKEN={secret}"


# -- body limits and hostile JSON ---------------------------------------------------------------


@pytest.fixture
async def small_client(aiohttp_client: Any, settings: Settings) -> TestClient:
    """An app whose body limit is 4 KiB."""
    client: TestClient = await aiohttp_client(create_app(replace(settings, max_body_bytes=4096)))
    return client


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_oversized_bodies_get_413(small_client: TestClient, method: str, path: str) -> None:
    big = orjson.dumps({"unit_id": "u", "pad": "x" * 8192})
    resp = await small_client.request(method, concrete(path), data=big, headers=ADMIN)
    assert resp.status == 413, (method, path)
    body = await resp.json()
    assert body["error"]["code"] == "payload_too_large"

    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1024

    # No Content-Length: the limit holds while reading a chunked body too.
    resp = await small_client.request(method, concrete(path), data=chunks(), headers=ADMIN)
    assert resp.status == 413, (method, path)


DEEP = "__deep__"


def _with_deep(body: Any, depth: int) -> bytes:
    """`body` as JSON with every DEEP string replaced by a value nested `depth` levels deep
    (built as text: orjson refuses to serialise past 254 levels, which is part of the point)."""
    nested = b'{"a":[' * (depth // 2) + b"1" + b"]}" * (depth // 2)
    return orjson.dumps(body).replace(f'"{DEEP}"'.encode(), nested)


HOSTILE_BODIES = [
    b"[" * 5000 + b"]" * 5000,                 # deeper than any parser should follow
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"unit_id": 1e400}',                      # overflows a double
    b'{"unit_id": -1e999, "experiment": 1e308}',
    b'{"experiment": "x", "unit_id": 123456789012345678901234567890123456789}',
    b'{"value": 99999999999999999999999999999999999999999999999999}',
    b'{"experiment": "x", "unit_id": "\\ud800"}',  # a lone surrogate
    b"\xff\xfe{}",
    b'{"a": NaN}',
    b"null",
    b'"just a string"',
    b"123",
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_hostile_json_gets_a_clean_4xx(client: TestClient, method: str, path: str) -> None:
    await launched(client, "hostile")
    for raw in HOSTILE_BODIES:
        resp = await client.request(method, concrete(path, "hostile"), data=raw, headers=ADMIN)
        assert 400 <= resp.status < 500, (method, path, raw[:40], resp.status)
        body = await resp.json()
        assert set(body["error"]) >= {"code", "message"}


async def test_deep_but_parseable_values_never_500(client: TestClient) -> None:
    """JSON that parses (orjson follows 1024 levels) but is deeper than it will serialise (254)."""
    await launched(client, "deep")
    deep = DEEP
    for depth in (100, 200, 300, 600, 1000):
        cases = [
            ("POST", "/api/v1/experiments", experiment_payload(variants=[
                {"key": "a", "weight": 0.5, "config": deep}, {"key": "b", "weight": 0.5}])),
            ("POST", "/api/v1/experiments", experiment_payload(targeting=[
                {"attribute": "country", "op": "in", "value": [deep]}])),
            ("PATCH", "/api/v1/experiments/deep", {"description": "d", "hypothesis": "h",
                                                   "variants": None, "metrics": deep}),
            ("POST", "/api/v1/assign", {"experiment": "deep", "unit_id": "u",
                                        "attributes": {"x": deep}}),
            ("POST", "/api/v1/assign/batch", {"experiment": "deep", "unit_ids": ["u"],
                                              "attributes": deep}),
            ("POST", "/api/v1/assignments", {"unit_id": "u", "attributes": deep}),
            ("POST", "/api/v1/events", {"type": "exposure", "experiment": "deep",
                                        "unit_id": "u", "variant": deep}),
            ("POST", "/api/v1/events/metric", {"experiment": "deep", "unit_id": "u",
                                               "metric": "m", "value": deep}),
        ]
        for method, path, body in cases:
            resp = await client.request(method, path, data=_with_deep(body, depth), headers=ADMIN)
            assert resp.status < 500, (depth, method, path, await resp.text())
            if resp.status >= 400:
                assert (await resp.json())["error"]["code"]


async def test_huge_and_odd_numbers_are_refused_by_name(client: TestClient) -> None:
    await launched(client, "nums")
    for weight in (1e308, 10**30, -0.0, 5e-324):
        resp = await client.post("/api/v1/experiments", headers=ADMIN, json=experiment_payload(
            variants=[{"key": "a", "weight": weight}, {"key": "b", "weight": 0.5}]))
        assert resp.status == 422, weight
        assert "variants" in str((await resp.json())["error"]["fields"])
    for ramp in (1e308, -1e308, 2**64):
        resp = await client.post("/api/v1/experiments/nums/launch", json={"ramp": ramp},
                                 headers=ADMIN)
        assert resp.status == 422, ramp
    resp = await client.post("/api/v1/events/metric", headers=CLIENT, data=orjson.dumps(
        {"experiment": "nums", "unit_id": "u", "metric": "m", "value": 1.7976931348623157e308}))
    assert resp.status == 202  # the largest finite double is a legal value
    for raw in (b'{"experiment":"nums","unit_id":"u","metric":"m","value":1e400}',
                b'{"experiment":"nums","unit_id":"u","metric":"m","value":Infinity}'):
        resp = await client.post("/api/v1/events/metric", data=raw, headers=CLIENT)
        assert resp.status in (400, 422)
    resp = await client.get("/api/v1/experiments?limit=99999999999999999999999", headers=ADMIN)
    assert resp.status == 422


async def test_inputs_schemathesis_found_are_clean_4xx(client: TestClient) -> None:
    """Each of these was a 500 before its fix."""
    await launched(client, "found")
    cases = [
        ("GET", "/api/v1/experiments?offset=19025153527824118249234104320", None),
        ("POST", "/api/v1/events", {"type": {}, "experiment": "found", "unit_id": "u"}),
        ("POST", "/api/v1/events", {"events": [{"type": ["exposure"], "experiment": "found",
                                                "unit_id": "u", "variant": "model_a"}]}),
        ("POST", "/api/v1/events/exposure", {"experiment": "found", "unit_id": "u",
                                             "variant": "model_a", "ts": 1.7e308}),
        ("POST", "/api/v1/events/metric", {"experiment": "found", "unit_id": "u", "metric": "m",
                                           "value": 1, "ts": 10**30}),
    ]
    for method, path, body in cases:
        resp = await client.request(method, path, json=body, headers=ADMIN)
        assert resp.status == 422, (method, path, body, await resp.text())


# -- unit ids are data, stored and echoed verbatim ---------------------------------------------

ODD_UNIT_IDS = [
    "Robert'); DROP TABLE experiments;--",
    "1 OR 1=1",
    "' UNION SELECT secret FROM tokens --",
    "$1",
    "\\x00\\'",
    "ユーザー-42",
    "用户🧪👩‍🔬",
    "مستخدم",
    "e\u0301\u0301",                  # combining marks
    "\u202eevil.exe",               # right-to-left override
    "tab\tnewline\nquote\"",
    "%s%n%x{0}",
    "x" * 256,
]


async def test_odd_unit_ids_are_echoed_and_stored_verbatim(
    client: TestClient, db: asyncpg.Connection
) -> None:
    exp = await launched(client, "odd")
    variants: dict[str, str] = {}
    for unit in ODD_UNIT_IDS:
        resp = await client.post("/api/v1/assign", json={"experiment": "odd", "unit_id": unit},
                                 headers=CLIENT)
        assert resp.status == 200, unit
        answer = await resp.json()
        assert answer["unit_id"] == unit
        variants[unit] = answer["variant"]
    resp = await client.post("/api/v1/events/exposure", headers=CLIENT, json={"events": [
        {"experiment": "odd", "unit_id": u, "variant": v} for u, v in variants.items()]})
    assert resp.status == 202, await resp.text()
    resp = await client.post("/api/v1/events", headers=CLIENT, json={"events": [
        {"type": "conversion", "experiment": "odd", "unit_id": u} for u in ODD_UNIT_IDS]})
    assert resp.status == 202, await resp.text()
    import uuid

    stored = await db.fetch("SELECT unit_id FROM exposures WHERE experiment_id = $1",
                            uuid.UUID(exp["id"]))
    assert sorted(r["unit_id"] for r in stored) == sorted(ODD_UNIT_IDS)
    stored = await db.fetch("SELECT unit_id FROM metric_events WHERE experiment_id = $1",
                            uuid.UUID(exp["id"]))
    assert sorted(r["unit_id"] for r in stored) == sorted(ODD_UNIT_IDS)
    # The experiments table is still there, whatever the unit ids said.
    assert await db.fetchval("SELECT count(*) FROM experiments") >= 1
    # Batch answers echo them in order too.
    resp = await client.post("/api/v1/assign/batch", headers=CLIENT,
                             json={"experiment": "odd", "unit_ids": ODD_UNIT_IDS})
    assert [a["unit_id"] for a in (await resp.json())["assignments"]] == ODD_UNIT_IDS


async def test_nul_characters_are_refused_cleanly(client: TestClient) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000: a clean 422 naming the field, never a 500."""
    await launched(client, "nul")
    # Assignment refuses it too: the unit id may become a stored exposure (log_exposure).
    resp = await client.post("/api/v1/assign", json={"experiment": "nul", "unit_id": "a\u0000b"},
                             headers=CLIENT)
    assert resp.status == 422 and "unit_id" in (await resp.json())["error"]["fields"]
    for body, field in ((experiment_payload(name="bad\u0000name"), "name"),
                        (experiment_payload(overrides={"u\u0000": "model_a"}), "overrides"),
                        (experiment_payload(variants=[
                            {"key": "a", "weight": 0.5, "config": {"m": "x\u0000"}},
                            {"key": "b", "weight": 0.5}]), "variants[0].config.m")):
        resp = await client.post("/api/v1/experiments", headers=ADMIN, json=body)
        assert resp.status == 422, await resp.text()
        assert field in (await resp.json())["error"]["fields"]
    resp = await client.patch("/api/v1/experiments/nul", headers=ADMIN,
                              json={"description": "d\u0000"})
    assert resp.status == 422 and "description" in (await resp.json())["error"]["fields"]


async def test_nul_characters_in_events_are_refused_cleanly(client: TestClient) -> None:
    await launched(client, "nulev")
    for event in ({"experiment": "nulev", "unit_id": "a\u0000b", "variant": "model_a"},
                  {"experiment": "nulev", "unit_id": "u", "variant": "model_a",
                   "event_id": "e\u0000"}):
        resp = await client.post("/api/v1/events/exposure", headers=CLIENT, json=event)
        assert resp.status == 422, await resp.text()
        assert "NUL" in (await resp.text())
    resp = await client.post("/api/v1/assign", headers=CLIENT,
                             json={"experiment": "nulev", "unit_id": "a\u0000b", "log_exposure": True})
    assert resp.status == 422 and "unit_id" in (await resp.json())["error"]["fields"]


# -- CORS -------------------------------------------------------------------------------------


async def test_cors_is_closed_by_default(client: TestClient) -> None:
    origin = {"Origin": "https://evil.example"}
    resp = await client.get("/api/v1/experiments", headers={**ADMIN, **origin})
    assert resp.status == 200
    assert not any(h.lower().startswith("access-control-") for h in resp.headers)
    pre = await client.options("/api/v1/experiments", headers={
        **origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert pre.status >= 400
    assert not any(h.lower().startswith("access-control-") for h in pre.headers)


async def test_cors_allows_exactly_the_configured_origins(
    aiohttp_client: Any, settings: Settings
) -> None:
    app = create_app(replace(settings, cors_origins=("https://ui.example.com",)))
    client: TestClient = await aiohttp_client(app)
    good = {"Origin": "https://ui.example.com"}
    pre = await client.options("/api/v1/experiments", headers={
        **good, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "https://ui.example.com"
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in pre.headers
    resp = await client.get("/api/v1/experiments", headers={**ADMIN, **good})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://ui.example.com"
    assert "Origin" in resp.headers.getall("Vary")
    assert "X-Request-Id" in resp.headers["Access-Control-Expose-Headers"]
    # Errors are readable by the allowed origin too (the UI shows their messages).
    resp = await client.get("/api/v1/experiments", headers=good)
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == "https://ui.example.com"
    # Any other origin, or a look-alike, gets nothing.
    for other in ("https://evil.example", "https://ui.example.com.evil.example",
                  "http://ui.example.com", "null"):
        resp = await client.get("/api/v1/experiments", headers={**ADMIN, "Origin": other})
        assert "Access-Control-Allow-Origin" not in resp.headers, other
        pre = await client.options("/api/v1/experiments", headers={
            "Origin": other, "Access-Control-Request-Method": "GET"})
        assert "Access-Control-Allow-Origin" not in pre.headers, other


def test_cors_origins_come_from_the_environment() -> None:
    s = Settings.from_env({"LITMUS_CORS_ORIGINS": "https://a.example, https://b.example"})
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert Settings.from_env({}).cors_origins == ()
