"""The assignment endpoints: golden vectors through the server, every reason, bad input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, CLIENT, experiment_payload

GOLDEN = json.loads((Path(__file__).parents[1] / "data" / "assignment_golden.json").read_text())
EXP = "/api/v1/experiments"


async def create(client: TestClient, **over: Any) -> dict[str, Any]:
    resp = await client.post(EXP, json=experiment_payload(**over), headers=ADMIN)
    assert resp.status == 201, await resp.text()
    out: dict[str, Any] = await resp.json()
    return out


async def launch(client: TestClient, exp_id: str, ramp: float = 1.0) -> None:
    resp = await client.post(f"{EXP}/{exp_id}/launch", json={"ramp": ramp}, headers=ADMIN)
    assert resp.status == 200, await resp.text()


async def settle(client: TestClient, key: str, predicate: Any) -> dict[str, Any]:
    """Wait (at most 2 s) until the registry has seen a change."""
    for _ in range(100):
        resp = await client.post("/api/v1/assign", json={"experiment": key, "unit_id": "probe"},
                                 headers=CLIENT)
        body: dict[str, Any] = await resp.json()
        if resp.status == 200 and predicate(body):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"registry never reflected the change: {body}")


async def assign(client: TestClient, key: str, unit: str, **kw: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/assign", json={"experiment": key, "unit_id": unit, **kw},
                             headers=CLIENT)
    assert resp.status == 200, await resp.text()
    out: dict[str, Any] = await resp.json()
    return out


async def test_golden_vectors_through_the_server(client: TestClient) -> None:
    checked = 0
    for i, g in enumerate(GOLDEN["experiments"]):
        exp = await create(
            client, key=f"golden-{i}", salt=g["salt"] or g["id"], ramp=g["ramp"],
            variants=[{"key": v["key"], "weight": v["weight"]} for v in g["variants"]],
        )
        await launch(client, exp["id"], g["ramp"])
        await settle(client, exp["key"], lambda b: b["reason"] != "draft")
        # The API refuses empty, over-long and NUL-containing ids (the core and client do not).
        cases = [c for c in g["cases"] if 0 < len(c["unit_id"]) <= 256 and "\x00" not in c["unit_id"]]
        for start in range(0, len(cases), 1000):
            chunk = cases[start:start + 1000]
            resp = await client.post("/api/v1/assign/batch", json={
                "experiment": exp["key"], "unit_ids": [c["unit_id"] for c in chunk]}, headers=CLIENT)
            assert resp.status == 200
            answers = (await resp.json())["assignments"]
            for c, a in zip(chunk, answers, strict=True):
                assert (a["variant"], a["reason"]) == (c["variant"], c["reason"]), c["unit_id"]
                checked += 1
    total = sum(len(g["cases"]) for g in GOLDEN["experiments"])
    assert checked >= 0.95 * total


async def test_every_reason(client: TestClient) -> None:
    exp = await create(
        client, key="reasons", ramp=0.5,
        overrides={"vip": "model_c"},
        targeting=[{"attribute": "country", "op": "in", "value": ["DE", "FR"]}],
    )
    await settle(client, "reasons", lambda b: b["reason"] == "draft")
    a = await assign(client, "reasons", "u1", attributes={"country": "DE"})
    assert a["variant"] is None and a["reason"] == "draft"
    await launch(client, exp["id"], 0.5)
    await settle(client, "reasons", lambda b: b["reason"] != "draft")
    a = await assign(client, "reasons", "vip")
    assert (a["variant"], a["reason"], a["config"]) == ("model_c", "override", {"model": "ranker-v3"})
    a = await assign(client, "reasons", "u1", attributes={"country": "US"})
    assert (a["variant"], a["reason"]) == (None, "targeting")
    a = await assign(client, "reasons", "u1")
    assert (a["variant"], a["reason"]) == (None, "targeting")
    reasons: dict[str, int] = {}
    for i in range(400):
        a = await assign(client, "reasons", f"unit-{i}", attributes={"country": "FR"})
        reasons[a["reason"]] = reasons.get(a["reason"], 0) + 1
        if a["reason"] == "assigned":
            weights = {"model_a": 0.5, "model_b": 0.3, "model_c": 0.2}
            assert a["probability"] == weights[a["variant"]]
            models = {"model_a": "ranker-v1", "model_b": "ranker-v2", "model_c": "ranker-v3"}
            assert a["config"] == {"model": models[a["variant"]]}
        else:
            assert a["variant"] is None and a["reason"] == "ramp"
    assert set(reasons) == {"assigned", "ramp"}
    assert 140 < reasons["ramp"] < 260
    await client.post(f"{EXP}/{exp['id']}/pause", headers=ADMIN)
    a = await settle(client, "reasons", lambda b: b["reason"] == "paused")
    assert a["variant"] is None
    await client.post(f"{EXP}/{exp['id']}/stop", json={"winner": "model_b"}, headers=ADMIN)
    await settle(client, "reasons", lambda b: b["reason"] in ("winner", "targeting"))
    for i in range(50):
        a = await assign(client, "reasons", f"unit-{i}", attributes={"country": "FR"})
        assert (a["variant"], a["reason"]) == ("model_b", "winner")
    a = await assign(client, "reasons", "unit-1", attributes={"country": "US"})
    assert (a["variant"], a["reason"]) == (None, "targeting")
    other = await create(client, key="plainstop")
    await launch(client, other["id"])
    await client.post(f"{EXP}/{other['id']}/stop", headers=ADMIN)
    a = await settle(client, "plainstop", lambda b: b["reason"] == "stopped")
    assert a["variant"] is None


async def test_same_unit_same_variant_and_ramp_only_adds(client: TestClient) -> None:
    exp = await create(client, key="ramping", ramp=0.2)
    await launch(client, exp["id"], 0.2)
    await settle(client, "ramping", lambda b: b["reason"] != "draft")
    units = [f"u{i}" for i in range(300)]
    before = {u: (await assign(client, "ramping", u))["variant"] for u in units}
    await launch(client, exp["id"], 0.6)
    await asyncio.sleep(0.3)
    after = {u: (await assign(client, "ramping", u))["variant"] for u in units}
    for u in units:
        if before[u] is not None:
            assert after[u] == before[u]
    assert sum(v is not None for v in after.values()) > sum(v is not None for v in before.values())


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"experiment": "nope", "unit_id": "u"}, 404, "experiment"),
        ({"experiment": "k"}, 422, "unit_id"),
        ({"experiment": "k", "unit_id": ""}, 422, "unit_id"),
        ({"experiment": "k", "unit_id": "x" * 257}, 422, "unit_id"),
        ({"experiment": "k", "unit_id": 42}, 422, "unit_id"),
        ({"experiment": "k", "unit_id": "u", "attributes": [1]}, 422, "attributes"),
        ({"experiment": "k", "unit_id": "u", "attributes": "x"}, 422, "attributes"),
        ({"unit_id": "u"}, 422, "experiment"),
        ({"experiment": "k", "unit_id": "u", "log_exposure": "yes"}, 422, "log_exposure"),
    ],
)
async def test_bad_input(client: TestClient, body: dict[str, Any], status: int, field: str) -> None:
    resp = await client.post("/api/v1/assign", json=body, headers=CLIENT)
    assert resp.status == status
    err = (await resp.json())["error"]
    assert field in err["fields"], err


async def test_batch_limits_and_order(client: TestClient) -> None:
    exp = await create(client, key="batchy")
    await launch(client, exp["id"])
    await settle(client, "batchy", lambda b: b["reason"] == "assigned")
    reqs = [{"experiment": "batchy", "unit_id": f"u{i}"} for i in range(1001)]
    resp = await client.post("/api/v1/assign/batch", json={"requests": reqs}, headers=CLIENT)
    assert resp.status == 413
    assert "1000" in (await resp.json())["error"]["message"]
    resp = await client.post("/api/v1/assign/batch", json={"requests": [*reqs[:3], {"experiment": "unknown-one", "unit_id": "z"}]}, headers=CLIENT)
    assert resp.status == 200
    out = (await resp.json())["assignments"]
    assert [a["unit_id"] for a in out] == ["u0", "u1", "u2", "z"]
    singles = [(await assign(client, "batchy", f"u{i}"))["variant"] for i in range(3)]
    assert [a["variant"] for a in out[:3]] == singles
    assert out[3]["error"]["code"] == "not_found"
    resp = await client.post("/api/v1/assign/batch", json={"requests": [{"experiment": "batchy"}]},
                             headers=CLIENT)
    assert resp.status == 422
    assert "requests[0].unit_id" in (await resp.json())["error"]["fields"]


async def test_assignments_for_every_running_experiment(client: TestClient) -> None:
    a = await create(client, key="one")
    b = await create(client, key="two")
    await create(client, key="three-draft")
    await launch(client, a["id"])
    await launch(client, b["id"])
    await settle(client, "two", lambda r: r["reason"] == "assigned")
    resp = await client.post("/api/v1/assignments", json={"unit_id": "user-7"}, headers=CLIENT)
    assert resp.status == 200
    body = await resp.json()
    assert set(body["assignments"]) == {"one", "two"}
    single = await assign(client, "one", "user-7")
    assert body["assignments"]["one"]["variant"] == single["variant"]
    resp = await client.post("/api/v1/assignments", json={"unit_id": ""}, headers=CLIENT)
    assert resp.status == 422


async def test_config_etag_and_304(client: TestClient) -> None:
    resp = await client.get("/api/v1/config", headers=CLIENT)
    assert resp.status == 200
    etag = resp.headers["ETag"]
    assert (await resp.json())["experiments"] == []
    resp = await client.get("/api/v1/config", headers={**CLIENT, "If-None-Match": etag})
    assert resp.status == 304
    exp = await create(client, key="cfg")
    await launch(client, exp["id"], 0.37)
    for _ in range(100):
        resp = await client.get("/api/v1/config", headers={**CLIENT, "If-None-Match": etag})
        if resp.status == 200:
            break
        await asyncio.sleep(0.02)
    assert resp.status == 200
    cfg = await resp.json()
    assert [e["key"] for e in cfg["experiments"]] == ["cfg"]
    assert cfg["experiments"][0]["ramp"] == 0.37
    assert resp.headers["ETag"] != etag


async def test_config_stream_pushes_new_versions(client: TestClient) -> None:
    resp = await client.get("/api/v1/config/stream", headers=CLIENT)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")

    async def next_event() -> dict[str, Any]:
        data = None
        while True:
            line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
            if line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                return data

    first = await next_event()
    assert first["experiments"] == []
    exp = await create(client, key="streamed")
    await launch(client, exp["id"])
    second = await next_event()
    assert [e["key"] for e in second["experiments"]] == ["streamed"]
    assert second["version"] != first["version"]
    resp.close()
