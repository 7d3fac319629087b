"""The experiments API: create, list, get, patch, lifecycle, delete, history, errors."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, experiment_payload

API = "/api/v1/experiments"


async def create(client: TestClient, **over: Any) -> dict[str, Any]:
    resp = await client.post(API, json=experiment_payload(**over), headers=ADMIN)
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def act(client: TestClient, exp_id: str, action: str, body: Any = None) -> Any:
    resp = await client.post(f"{API}/{exp_id}/{action}", json=body, headers=ADMIN)
    return resp.status, await resp.json()


async def test_create_draft_with_variants(client: TestClient) -> None:
    exp = await create(client)
    assert exp["status"] == "draft"
    assert exp["key"] == "ranker-v2"
    assert [v["key"] for v in exp["variants"]] == ["model_a", "model_b", "model_c"]
    assert exp["variants"][0]["is_control"] is True
    assert exp["variants"][1]["config"] == {"model": "ranker-v2"}
    assert exp["version"] == 1
    assert exp["metrics"]["primary"] == "conversion"
    got = await client.get(f"{API}/{exp['id']}", headers=ADMIN)
    assert got.status == 200
    assert (await got.json())["id"] == exp["id"]
    by_key = await client.get(f"{API}/ranker-v2", headers=ADMIN)
    assert (await by_key.json())["id"] == exp["id"]


async def test_key_from_name_gets_suffix_when_taken(client: TestClient) -> None:
    a = await create(client)
    b = await create(client)
    assert a["key"] == "ranker-v2"
    assert b["key"] == "ranker-v2-2"


async def test_explicit_duplicate_key_conflicts(client: TestClient) -> None:
    await create(client, key="dup")
    resp = await client.post(API, json=experiment_payload(key="dup"), headers=ADMIN)
    assert resp.status == 409
    assert (await resp.json())["error"]["fields"] == {"key": "already taken"}


async def test_weights_not_summing_to_one_names_the_sum(client: TestClient) -> None:
    body = experiment_payload()
    body["variants"][2]["weight"] = 0.3
    resp = await client.post(API, json=body, headers=ADMIN)
    assert resp.status == 422
    err = (await resp.json())["error"]
    assert "1.1" in err["message"]
    assert "1.1" in err["fields"]["variants"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("name"), "name"),
        (lambda b: b.update(description="   "), "description"),
        (lambda b: b.update(owner_team=""), "owner_team"),
        (lambda b: b["variants"][1].update(weight=-0.3), "variants[1].weight"),
        (lambda b: b["variants"][1].update(key="Model B"), "variants[1].key"),
        (lambda b: b["variants"][2].update(key="model_a"), "variants[2].key"),
        (lambda b: b.update(variants=b["variants"][:1]), "variants"),
        (lambda b: b.update(key="-bad"), "key"),
        (lambda b: b.update(allocation="random"), "allocation"),
        (lambda b: b.update(ramp=1.5), "ramp"),
        (lambda b: b.update(colour="red"), "colour"),
        (lambda b: b.update(overrides={"u1": "model_z"}), "overrides.u1"),
        (lambda b: b.update(targeting=[{"attribute": "c", "op": "like", "value": 1}]), "targeting[0].op"),
        (lambda b: b.update(targeting=[{"attribute": "c", "op": "in", "value": "x"}]), "targeting[0].value"),
        (lambda b: b.update(targeting=[{"attribute": "c", "op": "regex", "value": "("}]), "targeting[0].value"),
        (lambda b: b["variants"][1].update(is_control=True) or b["variants"][2].update(is_control=True),
         "variants[2].is_control"),
        (lambda b: b.update(analysis_mode="bayes"), "analysis_mode"),
    ],
)
async def test_validation_names_the_field(client: TestClient, mutate: Any, field: str) -> None:
    body = experiment_payload()
    mutate(body)
    resp = await client.post(API, json=body, headers=ADMIN)
    assert resp.status == 422, await resp.text()
    err = (await resp.json())["error"]
    assert err["code"] == "validation_error"
    assert field in err["fields"], err


async def test_malformed_json_is_400(client: TestClient) -> None:
    resp = await client.post(API, data=b"{not json", headers=ADMIN)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_request"
    resp = await client.post(API, data=b"[1, 2]", headers=ADMIN)
    assert resp.status == 422


async def test_list_filters_and_orders_newest_first(client: TestClient) -> None:
    a = await create(client, name="first", owner_team="search")
    b = await create(client, name="second", owner_team="ads")
    c = await create(client, name="third", owner_team="search")
    await act(client, c["id"], "launch", {"ramp": 0.5})
    resp = await client.get(API, headers=ADMIN)
    ids = [e["id"] for e in (await resp.json())["experiments"]]
    assert ids == [c["id"], b["id"], a["id"]]
    resp = await client.get(API, params={"owner_team": "search"}, headers=ADMIN)
    assert [e["id"] for e in (await resp.json())["experiments"]] == [c["id"], a["id"]]
    resp = await client.get(API, params={"status": "running"}, headers=ADMIN)
    assert [e["id"] for e in (await resp.json())["experiments"]] == [c["id"]]
    resp = await client.get(API, params={"status": "bogus"}, headers=ADMIN)
    assert resp.status == 422


async def test_seed_flow_draft_patch_launch_pause_stop(client: TestClient) -> None:
    exp = await create(client)
    resp = await client.patch(
        f"{API}/{exp['id']}",
        json={"variants": [{"key": "model_a", "weight": 0.5}, {"key": "model_b", "weight": 0.5}]},
        headers=ADMIN,
    )
    assert resp.status == 200, await resp.text()
    patched = await resp.json()
    assert [v["key"] for v in patched["variants"]] == ["model_a", "model_b"]
    assert patched["name"] == exp["name"]
    assert patched["version"] == 2
    status, body = await act(client, exp["id"], "launch", {"ramp": 0.25})
    assert status == 200 and body["status"] == "running" and body["ramp"] == 0.25
    assert body["launched_at"] is not None
    status, body = await act(client, exp["id"], "launch", {"ramp": 0.75})
    assert status == 200 and body["ramp"] == 0.75 and body["status"] == "running"
    status, body = await act(client, exp["id"], "pause")
    assert status == 200 and body["status"] == "paused"
    status, body = await act(client, exp["id"], "launch")
    assert status == 200 and body["status"] == "running" and body["ramp"] == 0.75
    status, body = await act(client, exp["id"], "stop", {"winner": "model_b"})
    assert status == 200 and body["status"] == "stopped" and body["winner"] == "model_b"
    assert body["stopped_at"] is not None


@pytest.mark.parametrize(
    ("setup", "action", "body"),
    [
        ([], "pause", None),
        (["launch", "stop"], "launch", {"ramp": 0.5}),
        (["launch", "stop"], "pause", None),
        (["launch", "stop"], "stop", None),
        (["launch", "pause"], "pause", None),
    ],
)
async def test_illegal_transitions_409_name_status(
    client: TestClient, setup: list[str], action: str, body: Any
) -> None:
    exp = await create(client)
    for step in setup:
        status, _ = await act(client, exp["id"], step, {"ramp": 0.5} if step == "launch" else None)
        assert status == 200
    status, err = await act(client, exp["id"], action, body)
    assert status == 409
    current = (await (await client.get(f"{API}/{exp['id']}", headers=ADMIN)).json())["status"]
    assert current in err["error"]["message"]
    assert err["error"]["status"] == current


async def test_stop_from_draft_and_from_paused(client: TestClient) -> None:
    a = await create(client)
    status, body = await act(client, a["id"], "stop")
    assert status == 200 and body["status"] == "stopped" and body["winner"] is None
    b = await create(client)
    await act(client, b["id"], "launch", {"ramp": 1})
    await act(client, b["id"], "pause")
    status, body = await act(client, b["id"], "stop")
    assert status == 200 and body["status"] == "stopped"


async def test_stop_with_unknown_winner_is_422(client: TestClient) -> None:
    exp = await create(client)
    status, err = await act(client, exp["id"], "stop", {"winner": "model_z"})
    assert status == 422 and "winner" in err["error"]["fields"]


async def test_launch_ramp_bounds(client: TestClient) -> None:
    exp = await create(client)
    for bad in (0, -0.1, 1.01):
        status, err = await act(client, exp["id"], "launch", {"ramp": bad})
        assert status == 422, bad
        assert "ramp" in err["error"]["fields"]


async def test_variant_keys_frozen_after_launch(client: TestClient) -> None:
    exp = await create(client)
    await act(client, exp["id"], "launch", {"ramp": 0.5})
    new_variants = [{"key": "model_a", "weight": 0.5}, {"key": "model_x", "weight": 0.5}]
    resp = await client.patch(f"{API}/{exp['id']}", json={"variants": new_variants}, headers=ADMIN)
    assert resp.status == 409
    assert "frozen" in (await resp.json())["error"]["message"]
    configs = [dict(v, config={"model": f"new-{v['key']}"}) for v in exp["variants"]]
    resp = await client.patch(
        f"{API}/{exp['id']}",
        json={"variants": configs, "description": "updated", "targeting": [
            {"attribute": "country", "op": "in", "value": ["DE", "FR"]}]},
        headers=ADMIN,
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["variants"][1]["config"] == {"model": "new-model_b"}
    assert body["targeting"][0]["value"] == ["DE", "FR"]


async def test_stopped_experiment_cannot_be_edited(client: TestClient) -> None:
    exp = await create(client)
    await act(client, exp["id"], "stop")
    resp = await client.patch(f"{API}/{exp['id']}", json={"description": "x"}, headers=ADMIN)
    assert resp.status == 409
    assert "stopped" in (await resp.json())["error"]["message"]


async def test_patch_if_match(client: TestClient) -> None:
    exp = await create(client)
    resp = await client.patch(
        f"{API}/{exp['id']}", json={"name": "Renamed"}, headers={**ADMIN, "If-Match": '"1"'}
    )
    assert resp.status == 200
    assert resp.headers["ETag"] == '"2"'
    resp = await client.patch(
        f"{API}/{exp['id']}", json={"name": "Again"}, headers={**ADMIN, "If-Match": "1"}
    )
    assert resp.status == 412
    err = (await resp.json())["error"]
    assert err["current_version"] == 2
    got = await (await client.get(f"{API}/{exp['id']}", headers=ADMIN)).json()
    assert got["name"] == "Renamed"


async def test_patch_rejects_read_only_fields_and_bad_values(client: TestClient) -> None:
    exp = await create(client)
    resp = await client.patch(f"{API}/{exp['id']}", json={"status": "running"}, headers=ADMIN)
    assert resp.status == 422
    assert "status" in (await resp.json())["error"]["fields"]
    resp = await client.patch(
        f"{API}/{exp['id']}",
        json={"variants": [{"key": "model_a", "weight": 0.7}, {"key": "model_b", "weight": 0.7}]},
        headers=ADMIN,
    )
    assert resp.status == 422
    assert "1.4" in (await resp.json())["error"]["message"]
    got = await (await client.get(f"{API}/{exp['id']}", headers=ADMIN)).json()
    assert got["version"] == 1


async def test_delete_only_drafts(client: TestClient) -> None:
    draft = await create(client)
    resp = await client.delete(f"{API}/{draft['id']}", headers=ADMIN)
    assert resp.status == 204
    assert (await client.get(f"{API}/{draft['id']}", headers=ADMIN)).status == 404
    running = await create(client)
    await act(client, running["id"], "launch", {"ramp": 1})
    resp = await client.delete(f"{API}/{running['id']}", headers=ADMIN)
    assert resp.status == 409
    assert "running" in (await resp.json())["error"]["message"]


async def test_unknown_experiment_404(client: TestClient) -> None:
    for path in (f"{API}/nope", f"{API}/00000000-0000-0000-0000-000000000000/history"):
        resp = await client.get(path, headers=ADMIN)
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    status, _ = await act(client, "nope", "launch", {"ramp": 1})
    assert status == 404


async def test_history_records_who_what_before_after(client: TestClient) -> None:
    exp = await create(client)
    await client.patch(f"{API}/{exp['id']}", json={"description": "v2"}, headers=ADMIN)
    await act(client, exp["id"], "launch", {"ramp": 0.3})
    resp = await client.get(f"{API}/{exp['id']}/history", headers=ADMIN)
    assert resp.status == 200
    hist = (await resp.json())["history"]
    assert [h["action"] for h in hist] == ["launch", "update", "create"]
    assert all(h["actor"] == "admin" for h in hist)
    update = hist[1]
    assert update["changes"] == {
        "description": {"before": exp["description"], "after": "v2"}
    }
    assert update["before"]["description"] == exp["description"]
    assert update["after"]["description"] == "v2"
    launch = hist[0]
    assert launch["changes"]["status"] == {"before": "draft", "after": "running"}
    assert launch["changes"]["ramp"] == {"before": 1.0, "after": 0.3}


async def test_unknown_route_and_wrong_method_are_json(client: TestClient) -> None:
    resp = await client.get("/api/v1/nothing-here", headers=ADMIN)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await client.put(API, headers=ADMIN, json={})
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_body_over_limit_is_413(settings: Any, aiohttp_client: Any) -> None:
    from dataclasses import replace

    from litmus.app import create_app

    client = await aiohttp_client(create_app(replace(settings, max_body_bytes=2048)))
    resp = await client.post(API, data=b"{" + b" " * 4096 + b"}", headers=ADMIN)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"


async def test_bandit_allocation_gets_default_settings(client: TestClient) -> None:
    exp = await create(client, allocation="bandit")
    assert exp["bandit"]["reward_metric"] == "conversion"
    assert exp["bandit"]["convergence_threshold"] == 0.95
    resp = await client.post(
        API, json=experiment_payload(allocation="bandit", bandit={"floor": 0.5}), headers=ADMIN
    )
    assert resp.status == 422


async def test_rules_the_registry_cannot_compile_are_refused(client: TestClient) -> None:
    for rule in ({"attribute": "country", "op": "eq"},
                 {"attribute": "tags", "op": "contains", "value": ["a"]},
                 {"attribute": "name", "op": "regex", "value": "x" * 1001}):
        resp = await client.post(API, json=experiment_payload(targeting=[rule]), headers=ADMIN)
        assert resp.status == 422, rule
        assert any(k.startswith("targeting[0].") for k in (await resp.json())["error"]["fields"])


async def test_after_launch_control_weights_and_reward_are_frozen(client: TestClient) -> None:
    exp = await create(client)
    await act(client, exp["id"], "launch", {"ramp": 1})
    swapped = [dict(v, is_control=(v["key"] == "model_b")) for v in exp["variants"]]
    resp = await client.patch(f"{API}/{exp['id']}", json={"variants": swapped}, headers=ADMIN)
    assert resp.status == 409 and "control" in (await resp.json())["error"]["message"]
    reweighted = [dict(v, weight=w) for v, w in zip(exp["variants"], (0.2, 0.3, 0.5), strict=True)]
    resp = await client.patch(f"{API}/{exp['id']}", json={"variants": reweighted}, headers=ADMIN)
    assert resp.status == 409 and "weights" in (await resp.json())["error"]["message"]
    bandit = await create(client, allocation="bandit",
                          bandit={"reward_type": "continuous", "reward_metric": "revenue"})
    await act(client, bandit["id"], "launch", {"ramp": 1})
    resp = await client.patch(f"{API}/{bandit['id']}", json={"bandit": {"reward_type": "binary"}},
                              headers=ADMIN)
    assert resp.status == 409


async def test_partial_patch_of_settings_keeps_the_rest(client: TestClient) -> None:
    exp = await create(client, allocation="bandit",
                       bandit={"reward_type": "continuous", "reward_metric": "revenue",
                               "update_interval_s": 3},
                       metrics={"primary": "revenue", "guardrails": ["latency_ms"]})
    resp = await client.patch(f"{API}/{exp['id']}", json={"bandit": {"auto_stop": True},
                                                         "metrics": {"guardrails": []}},
                              headers=ADMIN)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["bandit"]["auto_stop"] is True
    assert body["bandit"]["reward_type"] == "continuous" and body["bandit"]["update_interval_s"] == 3
    assert body["metrics"]["primary"] == "revenue" and body["metrics"]["guardrails"] == []


# -- numbers are JSON numbers -----------------------------------------------------------------


def _string_weight(p: dict[str, Any]) -> None:
    p["variants"][0]["weight"] = "0.5"


def _string_is_control(p: dict[str, Any]) -> None:
    p["variants"][1]["is_control"] = "true"


def _bandit(**fields: Any) -> Any:
    def mutate(p: dict[str, Any]) -> None:
        p["allocation"] = "bandit"
        p["bandit"] = fields
    return mutate


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_string_weight, "variants[0].weight"),
        (lambda p: p.update(ramp="0.5"), "ramp"),
        (lambda p: p.update(ramp=True), "ramp"),
        (_string_is_control, "variants[1].is_control"),
        (_bandit(floor="0.01"), "bandit.floor"),
        (_bandit(convergence_threshold="0.95"), "bandit.convergence_threshold"),
        (_bandit(update_interval_s="10"), "bandit.update_interval_s"),
        (_bandit(draws="10000"), "bandit.draws"),
        (_bandit(burn_in_units=False), "bandit.burn_in_units"),
        (_bandit(auto_stop="yes"), "bandit.auto_stop"),
    ],
)
async def test_numbers_and_booleans_sent_as_strings_are_refused(
    client: TestClient, mutate: Any, field: str
) -> None:
    """Input that pydantic's lax mode would coerce ("0.5" -> 0.5) is a 422 naming the field."""
    payload = experiment_payload()
    mutate(payload)
    resp = await client.post(API, json=payload, headers=ADMIN)
    assert resp.status == 422, await resp.text()
    err = (await resp.json())["error"]
    assert err["code"] == "validation_error"
    assert set(err["fields"]) == {field}, err
    if field != "variants[1].is_control" and field != "bandit.auto_stop":
        assert "must be a JSON number" in err["fields"][field], err


async def test_ramp_as_a_string_is_refused_by_launch_and_patch(client: TestClient) -> None:
    exp = await create(client)
    status, err = await act(client, exp["id"], "launch", {"ramp": "0.5"})
    assert status == 422
    assert err["error"]["fields"] == {"ramp": "must be a JSON number, not a string"}
    resp = await client.patch(f"{API}/{exp['id']}", json={"ramp": "0.5"}, headers=ADMIN)
    assert resp.status == 422
    assert (await resp.json())["error"]["fields"] == {"ramp": "must be a JSON number, not a string"}
    got = await (await client.get(f"{API}/{exp['id']}", headers=ADMIN)).json()
    assert (got["version"], got["ramp"]) == (1, 1.0)


async def test_json_numbers_still_pass_in_any_form(client: TestClient) -> None:
    """1 for a weight or ramp, and 20000.0 for an integer, are JSON numbers (JSON Schema calls
    an integral number an integer)."""
    exp = await create(client, ramp=1, allocation="bandit",
                       variants=[{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
                       bandit={"draws": 20000.0, "floor": 0})
    assert exp["ramp"] == 1.0
    assert exp["bandit"]["draws"] == 20000
    status, _ = await act(client, exp["id"], "launch", {"ramp": 1})
    assert status == 200


async def test_lifecycle_refusals_answer_exactly_as_documented(client: TestClient) -> None:
    """The whole error body of each refusal core.lifecycle raises, rendered by the middleware."""
    draft = await create(client, key="draft-one")
    status, err = await act(client, draft["id"], "pause")
    assert (status, err) == (409, {"error": {
        "code": "conflict", "status": "draft",
        "message": "cannot pause: experiment is draft; only running experiments can be paused"}})
    status, err = await act(client, draft["id"], "stop", {"winner": "model_z"})
    message = "winner 'model_z' is not one of this experiment's variants"
    assert (status, err) == (422, {"error": {
        "code": "validation_error", "message": message, "fields": {"winner": message}}})
    # A draft saved with ramp 0 passes the request check; launching it is refused by the lifecycle.
    idle = await create(client, key="idle", ramp=0)
    status, err = await act(client, idle["id"], "launch")
    message = "ramp must be greater than 0 and at most 1"
    assert (status, err) == (422, {"error": {
        "code": "validation_error", "message": message, "fields": {"ramp": message}}})

    running = await create(client, key="running-one")
    await act(client, running["id"], "launch", {"ramp": 1})
    resp = await client.delete(f"{API}/{running['id']}", headers=ADMIN)
    assert (resp.status, await resp.json()) == (409, {"error": {
        "code": "conflict", "status": "running",
        "message": "cannot delete: experiment is running; only drafts can be deleted "
                   "(stop it instead)"}})
    resp = await client.patch(f"{API}/{running['id']}", json={"salt": "other"}, headers=ADMIN)
    assert (resp.status, await resp.json()) == (409, {"error": {
        "code": "conflict",
        "message": "key and salt cannot change once an experiment has launched (it is running): "
                   "model routers use the key and the salt decides every unit's variant"}})
    await act(client, running["id"], "stop")
    status, err = await act(client, running["id"], "stop")
    assert (status, err) == (409, {"error": {
        "code": "conflict", "status": "stopped",
        "message": "cannot stop: experiment is already stopped"}})
    resp = await client.patch(f"{API}/{running['id']}", json={"description": "x"}, headers=ADMIN)
    assert (resp.status, await resp.json()) == (409, {"error": {
        "code": "conflict", "status": "stopped", "message": "cannot edit: experiment is stopped"}})
