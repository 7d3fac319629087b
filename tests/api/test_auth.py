"""Bearer auth: 401 without or with a wrong token, 403 for client tokens on admin routes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, ADMIN_SECRET, CLIENT, CLIENT_SECRET, experiment_payload

ADMIN_ROUTES = [
    ("GET", "/api/v1/experiments"),
    ("POST", "/api/v1/experiments"),
    ("GET", "/api/v1/experiments/x"),
    ("PATCH", "/api/v1/experiments/x"),
    ("DELETE", "/api/v1/experiments/x"),
    ("POST", "/api/v1/experiments/x/launch"),
    ("POST", "/api/v1/experiments/x/pause"),
    ("POST", "/api/v1/experiments/x/stop"),
    ("GET", "/api/v1/experiments/x/history"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_admin_routes_need_a_token(client: TestClient, method: str, path: str) -> None:
    resp = await client.request(method, path)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["error"]["code"] == "unauthorized"
    resp = await client.request(method, path, headers={"Authorization": "Bearer wrong-token-123"})
    assert resp.status == 401
    resp = await client.request(method, path, headers={"Authorization": f"Basic {ADMIN_SECRET}"})
    assert resp.status == 401
    resp = await client.request(method, path, headers=CLIENT)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"


async def test_probes_are_public(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json()) == {"status": "ready"}


async def test_admin_token_name_goes_to_audit(settings: Any, aiohttp_client: Any) -> None:
    from dataclasses import replace

    from litmus.app import create_app
    from litmus.settings import parse_token

    named = parse_token("alice:alice-secret-123")
    bare = parse_token("bare-secret-456")
    app = create_app(replace(settings, admin_tokens=(named, bare)))
    client = await aiohttp_client(app)
    resp = await client.post(
        "/api/v1/experiments", json=experiment_payload(),
        headers={"Authorization": "Bearer alice-secret-123"},
    )
    assert resp.status == 201
    exp = await resp.json()
    await client.patch(f"/api/v1/experiments/{exp['id']}", json={"name": "x"},
                       headers={"Authorization": "Bearer bare-secret-456"})
    hist = await (await client.get(f"/api/v1/experiments/{exp['id']}/history",
                                   headers={"Authorization": "Bearer alice-secret-123"})).json()
    actors = [h["actor"] for h in hist["history"]]
    assert actors[1] == "alice"
    assert actors[0] == bare.name and bare.name.startswith("token-") and "bare" not in bare.name


async def test_tokens_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await client.post("/api/v1/experiments", json=experiment_payload(), headers=ADMIN)
    await client.get("/api/v1/experiments", headers={"Authorization": "Bearer not-a-real-token"})
    await client.get("/api/v1/experiments", headers=CLIENT)
    text = caplog.text
    for secret in (ADMIN_SECRET, CLIENT_SECRET, "not-a-real-token"):
        assert secret not in text
