"""Guardrails through the API and the recompute: settings and their validation, a trip recorded
once (snapshot, audit log, Prometheus, webhook) and acted on (pause, rollback), the minimum
sample, and a webhook receiver that is slow or gone never slowing the recompute."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from litmus import metrics as prom
from litmus.app import create_app
from litmus.keys import RECOMPUTE
from litmus.settings import Settings
from tests.conftest import ADMIN, CLIENT, experiment_payload, launched
from tests.integration.test_results import insert, results
from tests.servers import free_port

EXP = "/api/v1/experiments"
TWO = [{"key": "model_a", "weight": 0.5}, {"key": "model_b", "weight": 0.5}]
ERRORS = {"errors": {"direction": "decrease"}}


class Receiver:
    """A local webhook receiver: records each POST; `status`/`delay_s` set how it answers."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = 200
        self.delay_s = 0.0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        status, delay = self.status, self.delay_s  # as set when the request arrived
        self.posts.append(await request.json())
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def app_client(settings: Settings, aiohttp_client: Any, receiver: Receiver) -> TestClient:
    return await aiohttp_client(create_app(replace(
        settings, recompute_interval_s=3600, alert_webhook_url=receiver.url)))


async def seed_errors(db: asyncpg.Connection, exp_id: str, rates: tuple[float, float],
                      units: int, seed: int = 1, prefix: str = "u") -> None:
    """`units` exposed units per arm; each unit fails (an `errors` event of 1) with its arm's
    rate. Exactly round(units·rate) failures per arm, so the numbers do not depend on luck."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC) - timedelta(minutes=1)
    exposures, events = [], []
    for arm, rate in enumerate(rates):
        failing = set(rng.choice(units, round(units * rate), replace=False).tolist())
        for i in range(units):
            unit = f"{prefix}{arm}-{i}"
            exposures.append((unit, arm, now))
            if i in failing:
                events.append((unit, "errors", 1.0, None, now))
    await insert(db, exp_id, exposures, events)


async def history(client: TestClient, exp_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"{EXP}/{exp_id}/history", headers=ADMIN)
    out: list[dict[str, Any]] = (await resp.json())["history"]
    return out


async def get(client: TestClient, exp_id: str) -> dict[str, Any]:
    resp = await client.get(f"{EXP}/{exp_id}", headers=ADMIN)
    out: dict[str, Any] = await resp.json()
    return out


# -- settings ------------------------------------------------------------------------------


async def test_bare_names_and_objects_are_accepted_and_shown_as_objects(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    resp = await app_client.post(EXP, json=experiment_payload(metrics={
        "primary": "conversion", "definitions": ERRORS,
        "guardrails": ["latency_ms", {"metric": "errors", "margin": 0.1, "action": "pause"}]}),
        headers=ADMIN)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["metrics"]["guardrails"] == [
        {"metric": "latency_ms", "margin": 0.0, "action": "alert"},
        {"metric": "errors", "margin": 0.1, "action": "pause"}]
    # PATCH with the form GET returned round-trips; a bare name still works there too.
    resp = await app_client.patch(f"{EXP}/{body['id']}", headers=ADMIN, json={
        "metrics": {"guardrails": [*body["metrics"]["guardrails"], "cost_usd"]}})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["metrics"]["guardrails"][2] == {
        "metric": "cost_usd", "margin": 0.0, "action": "alert"}
    # An experiment stored before guardrails had settings (bare names) reads as objects.
    await db.execute("UPDATE experiments SET metrics = jsonb_set(metrics, '{guardrails}', "
                     "'[\"latency_ms\"]') WHERE id = $1", uuid.UUID(body["id"]))
    assert (await get(app_client, body["id"]))["metrics"]["guardrails"] == [
        {"metric": "latency_ms", "margin": 0.0, "action": "alert"}]


@pytest.mark.parametrize(("guardrails", "field"), [
    ([{"metric": "errors", "action": "explode"}], "metrics.guardrails[0].action"),
    ([{"metric": "errors", "margin": -0.1}], "metrics.guardrails[0].margin"),
    ([{"metric": "errors", "margin": "0.1"}], "metrics.guardrails[0].margin"),
    (["ok", {"metric": "errors", "margin": None}], "metrics.guardrails[1].margin"),
    ([{"margin": 0.1}], "metrics.guardrails[0].metric"),
    (["Not A Slug"], "metrics.guardrails[0].metric"),
    ([{"metric": "errors", "when": "now"}], "metrics.guardrails[0].when"),
    (["errors", {"metric": "errors", "action": "pause"}], "metrics.guardrails"),
])
async def test_bad_guardrails_are_422_naming_the_field(app_client: TestClient,
                                                       guardrails: list[Any], field: str) -> None:
    resp = await app_client.post(EXP, json=experiment_payload(
        metrics={"guardrails": guardrails}), headers=ADMIN)
    body = await resp.json()
    assert resp.status == 422, body
    assert field in body["error"]["fields"], body


# -- trips ---------------------------------------------------------------------------------


async def test_a_trip_pauses_once_and_is_recorded_everywhere(
        app_client: TestClient, db: asyncpg.Connection, receiver: Receiver) -> None:
    exp = await launched(app_client, variants=TWO, metrics={
        "primary": "conversion", "definitions": ERRORS,
        "guardrails": [{"metric": "errors", "action": "pause"}]})
    recompute = app_client.app[RECOMPUTE]
    before = prom.GUARDRAIL_TRIPS[("ranker", "errors", "pause")]
    # 1% against 1%: nothing.
    await seed_errors(db, exp["id"], (0.01, 0.01), 2000, prefix="a")
    await recompute.tick()
    snap = await results(app_client, exp["id"])
    [g] = snap["guardrails"]
    assert g["status"] == "ok" and g["ready"] and g["metric"] == "errors"
    assert g["treatment"] == "model_b" and g["control"] == "model_a"
    assert g["direction"] == "decrease" and g["n"] == {"control": 2000, "treatment": 2000}
    assert g["interval"][0] < 0 < g["interval"][1]
    assert (await get(app_client, exp["id"]))["status"] == "running"

    # model_b's error rate jumps: 6000 more units per arm, 1% against 6%.
    await seed_errors(db, exp["id"], (0.01, 0.06), 6000, seed=2, prefix="b")
    await recompute.tick()
    snap = await results(app_client, exp["id"])
    [g] = snap["guardrails"]
    assert g["status"] == "tripped", g
    assert g["interval"][0] > 0 and g["trip"]["interval"] == g["interval"]
    assert g["tripped_at"] == snap["computed_at"]
    assert g["message"].startswith("Paused by guardrail: errors of model_b is +")
    assert snap["status"] == "paused"
    assert (await get(app_client, exp["id"]))["status"] == "paused"
    entries = await history(app_client, exp["id"])
    by_action = {e["action"]: e for e in entries if e["actor"] == "guardrail"}
    assert set(by_action) == {"guardrail_trip", "pause"}
    assert by_action["guardrail_trip"]["changes"]["metric"] == "errors"
    assert by_action["guardrail_trip"]["changes"]["message"] == g["message"]
    assert prom.GUARDRAIL_TRIPS[("ranker", "errors", "pause")] == before + 1
    assert b'litmus_guardrail_trips_total{action="pause",experiment="ranker",metric="errors"}' \
        in prom.exposition()
    await recompute.guardrails.webhook.drain()
    [post] = receiver.posts
    assert post["event"] == "guardrail_tripped" and post["experiment_id"] == exp["id"]
    assert post["metric"] == "errors" and post["treatment"] == "model_b"
    assert post["action"] == "pause" and post["status"] == "paused"
    assert post["message"] == g["message"] and post["interval"] == g["interval"]

    # A person resumes it: the trip stays recorded and does not act again.
    resp = await app_client.post(f"{EXP}/{exp['id']}/launch", headers=ADMIN)
    assert resp.status == 200
    await seed_errors(db, exp["id"], (0.01, 0.06), 2000, seed=3, prefix="c")
    await recompute.tick()
    await recompute.tick()
    snap = await results(app_client, exp["id"])
    assert snap["guardrails"][0]["status"] == "tripped"
    assert snap["guardrails"][0]["tripped_at"] == g["tripped_at"]
    assert (await get(app_client, exp["id"]))["status"] == "running"
    await recompute.guardrails.webhook.drain()
    assert len(receiver.posts) == 1
    assert sum(e["action"] == "guardrail_trip" for e in await history(app_client, exp["id"])) == 1
    assert await db.fetchval("SELECT count(*) FROM guardrail_trips") == 1


async def test_rollback_stops_with_the_control_as_winner(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    exp = await launched(app_client, variants=TWO, metrics={
        "primary": "conversion", "definitions": ERRORS,
        "guardrails": [{"metric": "errors", "action": "rollback", "margin": 0.5}]})
    await seed_errors(db, exp["id"], (0.02, 0.08), 4000)
    await app_client.app[RECOMPUTE].tick()
    body = await get(app_client, exp["id"])
    assert body["status"] == "stopped" and body["winner"] == "model_a"
    resp = await app_client.post("/api/v1/assign", json={"experiment": "ranker", "unit_id": "x"},
                                 headers=CLIENT)
    assert (await resp.json())["variant"] == "model_a"
    snap = await results(app_client, exp["id"])
    assert snap["guardrails"][0]["status"] == "tripped"
    assert snap["guardrails"][0]["message"].startswith("Rolled back to control by guardrail")


async def test_alert_only_records_and_a_margin_holds_back_small_harm(
        app_client: TestClient, db: asyncpg.Connection, receiver: Receiver) -> None:
    # errors: +100% (2% vs 1%) with a 300% margin: no trip; latency (bare name, no definition:
    # higher is good) falls 50%: alert, the experiment keeps running.
    exp = await launched(app_client, variants=TWO, metrics={
        "primary": "conversion", "definitions": ERRORS,
        "guardrails": [{"metric": "errors", "margin": 3.0, "action": "pause"}, "quality"]})
    await seed_errors(db, exp["id"], (0.01, 0.02), 20_000)
    now = datetime.now(UTC)
    await insert(db, exp["id"], [], [(f"u{arm}-{i}", "quality", 1.0, None, now)
                                     for arm, share in ((0, 0.8), (1, 0.4))
                                     for i in range(int(20_000 * share))])
    await app_client.app[RECOMPUTE].tick()
    snap = await results(app_client, exp["id"])
    rows = {g["metric"]: g for g in snap["guardrails"]}
    assert rows["errors"]["status"] == "ok" and rows["errors"]["interval"][0] > 0
    assert rows["quality"]["status"] == "tripped" and rows["quality"]["action"] == "alert"
    assert rows["quality"]["direction"] == "increase"
    assert rows["quality"]["harm"] == pytest.approx(0.5)
    assert (await get(app_client, exp["id"]))["status"] == "running"
    await app_client.app[RECOMPUTE].guardrails.webhook.drain()
    assert [p["metric"] for p in receiver.posts] == ["quality"]
    assert receiver.posts[0]["status"] == "running"


async def test_never_trips_below_the_minimum_units(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    exp = await launched(app_client, variants=TWO, metrics={
        "primary": "conversion", "definitions": ERRORS,
        "guardrails": [{"metric": "errors", "action": "pause"}]})
    # 99 units per arm, 1% against 90% errors: far worse, and still not enough units.
    await seed_errors(db, exp["id"], (0.0101, 0.9), 99)
    await app_client.app[RECOMPUTE].tick()
    [g] = (await results(app_client, exp["id"]))["guardrails"]
    assert g["status"] == "ok" and not g["ready"] and g["n"] == {"control": 99, "treatment": 99}
    assert (await get(app_client, exp["id"]))["status"] == "running"


async def test_a_dead_or_slow_receiver_never_slows_the_recompute(
        settings: Settings, aiohttp_client: Any, db: asyncpg.Connection,
        receiver: Receiver) -> None:
    receiver.delay_s = 30.0  # answers long after anyone waits
    client = await aiohttp_client(create_app(replace(
        settings, recompute_interval_s=3600, alert_webhook_url=receiver.url)))
    exp = await launched(client, variants=TWO, metrics={
        "primary": "conversion", "definitions": ERRORS,
        "guardrails": [{"metric": "errors", "action": "pause"}]})
    await seed_errors(db, exp["id"], (0.01, 0.08), 4000)
    recompute = client.app[RECOMPUTE]
    hook = recompute.guardrails.webhook
    hook.timeout_s = 20.0
    t0 = time.perf_counter()
    await recompute.tick()
    took = time.perf_counter() - t0
    assert (await get(client, exp["id"]))["status"] == "paused"
    assert took < 5.0, took  # the tick did not wait for the 30 s answer
    deadline = time.monotonic() + 5
    while not receiver.posts and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(receiver.posts) == 1  # the try is under way in the background
    t0 = time.perf_counter()
    await hook.close()  # shutdown cancels it at once
    assert time.perf_counter() - t0 < 1.0

    # Every try times out: bounded retries, then given up.
    hook.timeout_s, hook.first_delay_s, hook.attempts = 0.2, 0.05, 3
    hook.send({"event": "test"})
    await hook.drain()
    assert len(receiver.posts) == 4 and hook.failed == 1 and hook.delivered == 0
    # A receiver that is gone (connection refused): the same.
    hook.url = f"http://127.0.0.1:{free_port()}/hook"
    hook.send({"event": "test"})
    t0 = time.perf_counter()
    await hook.drain()
    assert hook.failed == 2 and time.perf_counter() - t0 < 5
    # A 4xx is refused for good: one try. A 503 is retried, and delivered once it answers 200.
    # The receiver answers at once from here, so no try may time out, even on a busy machine:
    # a new session (it takes its timeout when it opens) with a timeout far above an answer.
    await hook.close()
    hook.timeout_s = 10.0
    receiver.delay_s, receiver.status = 0.0, 400
    hook.url = receiver.url
    hook.send({"event": "test"})
    await hook.drain()
    assert len(receiver.posts) == 5 and hook.failed == 3
    receiver.status = 503
    hook.first_delay_s = 0.5
    hook.send({"event": "test"})
    while len(receiver.posts) < 6:
        await asyncio.sleep(0.005)
    receiver.status = 200  # before the retry, half a second later
    await hook.drain()
    assert len(receiver.posts) == 7 and hook.delivered == 1 and hook.failed == 3


async def test_changing_or_removing_a_guardrail_re_arms_it(
        app_client: TestClient, db: asyncpg.Connection, receiver: Receiver) -> None:
    exp = await launched(app_client, variants=TWO, metrics={
        "primary": "conversion", "definitions": ERRORS,
        "guardrails": [{"metric": "errors", "action": "pause"}]})
    recompute = app_client.app[RECOMPUTE]
    await seed_errors(db, exp["id"], (0.01, 0.08), 4000)
    await recompute.tick()
    assert (await get(app_client, exp["id"]))["status"] == "paused"
    first = (await results(app_client, exp["id"]))["guardrails"][0]["tripped_at"]
    # Resumed with the same guardrail: recorded, not acted on again.
    assert (await app_client.post(f"{EXP}/{exp['id']}/launch", headers=ADMIN)).status == 200
    await recompute.tick()
    assert (await get(app_client, exp["id"]))["status"] == "running"
    # A person changes its margin: the guardrail starts afresh, trips again and pauses again.
    resp = await app_client.patch(f"{EXP}/{exp['id']}", headers=ADMIN, json={"metrics": {
        "guardrails": [{"metric": "errors", "action": "pause", "margin": 0.5}]}})
    assert resp.status == 200, await resp.text()
    await recompute.tick()
    [g] = (await results(app_client, exp["id"]))["guardrails"]
    assert g["status"] == "tripped" and g["tripped_at"] != first and g["margin"] == 0.5
    assert (await get(app_client, exp["id"]))["status"] == "paused"
    # Removed: its trip is forgotten.
    assert (await app_client.post(f"{EXP}/{exp['id']}/launch", headers=ADMIN)).status == 200
    resp = await app_client.patch(f"{EXP}/{exp['id']}", headers=ADMIN,
                                  json={"metrics": {"guardrails": []}})
    assert resp.status == 200, await resp.text()
    await recompute.tick()
    assert (await results(app_client, exp["id"]))["guardrails"] == []
    assert await db.fetchval("SELECT count(*) FROM guardrail_trips") == 0
    await recompute.guardrails.webhook.drain()
    assert len(receiver.posts) == 2


async def tick_failing_in(app_client: TestClient, monkeypatch: pytest.MonkeyPatch, owner: Any,
                          name: str, exc: BaseException) -> None:
    """One recompute during which `owner.name` raises `exc` (the only fault injected), which
    the tick lets out; `owner.name` is itself again afterwards."""
    real = getattr(owner, name)

    async def fails(*args: Any, **kw: Any) -> Any:
        raise exc

    monkeypatch.setattr(owner, name, fails)
    with pytest.raises(type(exc)):
        await app_client.app[RECOMPUTE].tick()
    monkeypatch.setattr(owner, name, real)


async def guarded(app_client: TestClient, db: asyncpg.Connection, action: str = "pause",
                  key: str = "ranker") -> dict[str, Any]:
    """A launched experiment whose errors guardrail trips at the next recompute."""
    exp = await launched(app_client, key=key, variants=TWO, metrics={
        "primary": "conversion", "definitions": ERRORS,
        "guardrails": [{"metric": "errors", "action": action}]})
    await seed_errors(db, exp["id"], (0.01, 0.08), 4000, prefix=key)
    return exp


async def test_an_action_that_fails_is_decided_again_at_the_next_recompute(
        app_client: TestClient, db: asyncpg.Connection, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from litmus.services import experiments as service

    exp = await guarded(app_client, db)
    # The database fails under the pause; the loop reports it as an outage and goes on.
    await tick_failing_in(app_client, monkeypatch, service, "pause",
                          ConnectionResetError("the database went away mid-pause"))
    assert (await get(app_client, exp["id"]))["status"] == "running"
    assert await db.fetchval("SELECT count(*) FROM guardrail_trips") == 0
    assert not [e for e in await history(app_client, exp["id"]) if e["actor"] == "guardrail"]
    await app_client.app[RECOMPUTE].tick()
    assert (await get(app_client, exp["id"]))["status"] == "paused"
    assert sorted(e["action"] for e in await history(app_client, exp["id"])
                  if e["actor"] == "guardrail") == ["guardrail_trip", "pause"]
    await app_client.app[RECOMPUTE].guardrails.webhook.drain()
    assert len(receiver.posts) == 1


async def test_a_trip_whose_leader_stopped_before_acting_is_acted_on_by_the_next(
        app_client: TestClient, db: asyncpg.Connection, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader records the trip, then dies before pausing (emulated: its action never runs
    and nothing cleans up). The next recompute finds the trip recorded but never acted on, and
    pauses, audits and alerts once; a second such trip on an experiment a person paused since
    is audited as not acted on and pauses nothing."""
    from litmus.services.guardrails import Guardrails

    exp = await guarded(app_client, db)
    # The process goes away between recording the trip and acting on it.
    await tick_failing_in(app_client, monkeypatch, Guardrails, "_act", asyncio.CancelledError())
    assert await db.fetchval("SELECT count(*) FROM guardrail_trips WHERE acted_at IS NULL") == 1
    assert (await get(app_client, exp["id"]))["status"] == "running"
    await app_client.app[RECOMPUTE].tick()
    assert (await get(app_client, exp["id"]))["status"] == "paused"
    assert sorted(e["action"] for e in await history(app_client, exp["id"])
                  if e["actor"] == "guardrail") == ["guardrail_trip", "pause"]
    assert await db.fetchval("SELECT count(*) FROM guardrail_trips WHERE acted_at IS NULL") == 0
    await app_client.app[RECOMPUTE].tick()  # acted once: nothing more
    await app_client.app[RECOMPUTE].guardrails.webhook.drain()
    assert len(receiver.posts) == 1

    # A trip left unacted, then a person pauses: audited as not acted on, nothing paused again.
    other = await guarded(app_client, db, action="rollback", key="other")
    await tick_failing_in(app_client, monkeypatch, Guardrails, "_act", asyncio.CancelledError())
    resp = await app_client.post(f"{EXP}/{other['id']}/pause", headers=ADMIN)
    assert resp.status == 200
    await app_client.app[RECOMPUTE].tick()
    assert (await get(app_client, other["id"]))["status"] == "paused"
    [trip] = [e for e in await history(app_client, other["id"]) if e["action"] == "guardrail_trip"]
    assert trip["changes"]["outcome"].startswith("not acted on: the experiment was paused")
    assert await db.fetchval("SELECT count(*) FROM guardrail_trips WHERE acted_at IS NULL") == 0


async def test_a_leader_that_stopped_after_pausing_but_before_reporting_is_reported_once(
        app_client: TestClient, db: asyncpg.Connection, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pause went through and the leader died before the trip's audit entry and alert:
    the next recompute audits and alerts it as paused (not "not acted on"), once, and pauses
    nothing again after a person resumes."""
    from litmus.services.guardrails import Guardrails

    exp = await guarded(app_client, db)
    await tick_failing_in(app_client, monkeypatch, Guardrails, "_report", asyncio.CancelledError())
    assert (await get(app_client, exp["id"]))["status"] == "paused"
    assert [e["action"] for e in await history(app_client, exp["id"])
            if e["actor"] == "guardrail"] == ["pause"]
    await app_client.app[RECOMPUTE].tick()
    entries = [e for e in await history(app_client, exp["id"]) if e["actor"] == "guardrail"]
    assert sorted(e["action"] for e in entries) == ["guardrail_trip", "pause"]
    [trip] = [e for e in entries if e["action"] == "guardrail_trip"]
    assert "outcome" not in trip["changes"]  # an ordinary trip entry, not "not acted on"
    await app_client.app[RECOMPUTE].guardrails.webhook.drain()
    [post] = receiver.posts
    assert post["outcome"] == "paused" and post["status"] == "paused"
    # A person resumes: the trip is reported and acted on; nothing pauses it again.
    resp = await app_client.post(f"{EXP}/{exp['id']}/launch", headers=ADMIN)
    assert resp.status == 200
    await app_client.app[RECOMPUTE].tick()
    assert (await get(app_client, exp["id"]))["status"] == "running"
    assert await db.fetchval("SELECT count(*) FROM guardrail_trips WHERE acted_at IS NULL") == 0
