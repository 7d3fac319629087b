"""A binary bandit's successes are units whose reward total is above 0, whichever way the
rewards arrive; and its Monte Carlo draws depend only on the experiment and the update number."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from litmus import payloads, routes
from litmus.app import create_app
from litmus.keys import RECOMPUTE, REGISTRY
from litmus.settings import Settings
from tests.conftest import ADMIN, CLIENT, launched
from tests.integration.test_results import results

VARIANTS = [{"key": f"model_{c}", "weight": 0.25} for c in "abcd"]
RATES = {"model_a": 0.04, "model_b": 0.06, "model_c": 0.08, "model_d": 0.25}
BANDIT = {"reward_metric": "conversion", "reward_type": "binary", "update_interval_s": 1,
          "burn_in_units": 50, "min_units": 100}


@pytest.fixture
async def app_client(settings: Settings, aiohttp_client: Any) -> TestClient:
    # The tests drive recompute ticks themselves: the app's own loop is stopped, or its first
    # tick could take a bandit update (and so an update number) of its own.
    client: TestClient = await aiohttp_client(create_app(replace(settings,
                                                                 recompute_interval_s=3600)))
    await client.app[RECOMPUTE].stop()
    return client


async def bandit_experiment(client: TestClient, key: str) -> dict[str, Any]:
    """A launched four-arm binary bandit; every one shares one salt, so the same unit gets the
    same arm in each and their Monte Carlo draws come from the same seed."""
    return await launched(client, key=key, allocation="bandit", variants=VARIANTS,
                          salt="reward-test", bandit=BANDIT)


async def send_users(client: TestClient, key: str, users: int, zeros: bool,
                     rng: np.random.Generator) -> dict[str, tuple[int, int]]:
    """Assign `users` units through the API, log their exposures and a `conversion` reward of
    1 for each success; with `zeros`, a reward of 0 for each failure too. Returns per arm
    (units, successes)."""
    out = {k: (0, 0) for k in RATES}
    events: list[dict[str, Any]] = []
    for start in range(0, users, 500):
        ids = [f"user-{i}" for i in range(start, min(start + 500, users))]
        resp = await client.post(routes.ASSIGN_BATCH, json=payloads.assign_batch(key, ids),
                                 headers=CLIENT)
        assert resp.status == 200, await resp.text()
        for unit, a in zip(ids, (await resp.json())["assignments"], strict=True):
            variant = a["variant"]
            success = bool(rng.random() < RATES[variant])
            units, wins = out[variant]
            out[variant] = (units + 1, wins + success)
            events.append(payloads.exposure(key, unit, variant))
            if success or zeros:
                events.append(payloads.metric(key, unit, "conversion", 1.0 if success else 0.0))
    for start in range(0, len(events), 5000):
        resp = await client.post(routes.EVENTS, json=payloads.events(events[start:start + 5000]),
                                 headers=CLIENT)
        assert resp.status == 202, await resp.text()
    return out


async def test_zero_one_rewards_and_success_only_rewards_give_the_same_p_best(
        app_client: TestClient) -> None:
    """The same simulated users, once sending a reward event for every user (0 or 1), once only
    the 1s: the bandit sees the same successes, so the same P(best) on the same seed, and it
    learns that model_d is best. (It used to count every unit with a reward event as a success:
    with 0/1 rewards every unit, and P(best) stayed 1/k.)"""
    both = await bandit_experiment(app_client, "zero-one")
    ones = await bandit_experiment(app_client, "ones-only")
    seen_both = await send_users(app_client, "zero-one", 2000, True, np.random.default_rng(3))
    seen_ones = await send_users(app_client, "ones-only", 2000, False, np.random.default_rng(3))
    assert seen_both == seen_ones
    await app_client.app[RECOMPUTE].tick(datetime.now(UTC) + timedelta(seconds=2))
    a, b = await results(app_client, both["id"]), await results(app_client, ones["id"])
    # The lift table was already right: the mean of 0/1 totals is the conversion rate.
    for k, (units, wins) in seen_both.items():
        assert a["metrics"]["conversion"][k]["unit_mean"] == pytest.approx(wins / units)
    assert a["bandit"]["p_best"] == b["bandit"]["p_best"]
    assert a["bandit"]["weights"] == b["bandit"]["weights"]
    assert a["bandit"]["top_variant"] == "model_d"
    assert a["bandit"]["p_best"]["model_d"] > 0.95


async def test_a_unit_is_one_success_whatever_its_reward_events_add_up_to(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """Per arm, the successes are the units whose reward total is above 0: a unit rewarded
    twice is one success, a 0 then a 1 is one, a 1 then a -1 is none, a 0 alone is none."""
    exp = await bandit_experiment(app_client, "totals")
    assigned: dict[str, str] = {}
    resp = await app_client.post(routes.ASSIGN_BATCH, headers=CLIENT, json=payloads.assign_batch(
        "totals", [f"t{i}" for i in range(400)]))
    for a in (await resp.json())["assignments"]:
        assigned[a["unit_id"]] = a["variant"]
    values = [(1.0, 1.0), (0.0, 1.0), (1.0, -1.0), (0.0,), (0.5,), (2.0, -3.0)]
    events: list[dict[str, Any]] = []
    want = dict.fromkeys(RATES, 0)
    for i, (unit, variant) in enumerate(assigned.items()):
        events.append(payloads.exposure("totals", unit, variant))
        pattern = values[i % len(values)]
        events += [payloads.metric("totals", unit, "conversion", v) for v in pattern]
        want[variant] += sum(pattern) > 0
    resp = await app_client.post(routes.EVENTS, json=payloads.events(events), headers=CLIENT)
    assert resp.status == 202, await resp.text()
    await app_client.app[RECOMPUTE].tick()
    got = {r["variant"]: r["positive"] for r in await db.fetch(
        "SELECT variant, positive FROM arm_metrics WHERE experiment_id = $1 AND metric = "
        "'conversion'", uuid.UUID(exp["id"]))}
    assert got == {i: want[k] for i, k in enumerate(RATES)}


CLOSE = {"model_a": 0.05, "model_b": 0.06, "model_c": 0.09, "model_d": 0.10}


async def send_round(client: TestClient, key: str, first: int, users: int,
                     rng: np.random.Generator) -> None:
    """Assign `users` new units through the API and log their exposures and conversions, with
    arms close enough that P(best) is uncertain (its Monte Carlo noise shows)."""
    events: list[dict[str, Any]] = []
    for start in range(first, first + users, 500):
        ids = [f"r-{i}" for i in range(start, min(start + 500, first + users))]
        resp = await client.post(routes.ASSIGN_BATCH, json=payloads.assign_batch(key, ids),
                                 headers=CLIENT)
        assert resp.status == 200, await resp.text()
        for unit, a in zip(ids, (await resp.json())["assignments"], strict=True):
            events.append(payloads.exposure(key, unit, a["variant"]))
            if rng.random() < CLOSE[a["variant"]]:
                events.append(payloads.conversion(key, unit))
    resp = await client.post(routes.EVENTS, json=payloads.events(events), headers=CLIENT)
    assert resp.status == 202, await resp.text()


async def test_two_recomputes_of_the_same_events_from_the_same_state_give_the_same_weights(
        app_client: TestClient, db: asyncpg.Connection) -> None:
    """The bandit's Monte Carlo is seeded by the experiment and the update number, not the
    clock: an update recomputed from the same previous state (here: none) at another time
    draws exactly the same weights; the next update, with the same events, draws anew."""
    exp = await bandit_experiment(app_client, "again")
    uid = uuid.UUID(exp["id"])
    await send_round(app_client, "again", 0, 1600, np.random.default_rng(5))
    rec = app_client.app[RECOMPUTE]
    t = datetime.now(UTC) + timedelta(seconds=2)
    await rec.tick(t)
    first = (await results(app_client, exp["id"]))["bandit"]
    assert not first["burn_in"] and 0.05 < max(first["p_best"].values()) < 0.95
    await db.execute("DELETE FROM bandit_history WHERE experiment_id = $1", uid)
    await db.execute("DELETE FROM bandit_state WHERE experiment_id = $1", uid)
    await rec.tick(t + timedelta(seconds=37.123))
    second = (await results(app_client, exp["id"]))["bandit"]
    assert second["updated_at"] != first["updated_at"]
    assert (second["weights"], second["p_best"]) == (first["weights"], first["p_best"])
    await rec.tick(t + timedelta(seconds=40))
    third = (await results(app_client, exp["id"]))["bandit"]
    assert len(third["history"]) == 2 and third["p_best"] != second["p_best"]


async def wait_weights(client: TestClient, exp: dict[str, Any]) -> None:
    """Wait until assignment uses the experiment's latest bandit weights (they travel by NOTIFY)."""
    want = (await results(client, exp["id"]))["bandit"]["weights"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        entry = client.app[REGISTRY].get(exp["key"])
        if entry is not None and entry.weights == want:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the registry never took the weights of {exp['key']}")


async def test_the_same_events_per_update_give_the_same_bandit_history(
        app_client: TestClient) -> None:
    """What makes a seeded simulation reproducible on the server's side: two experiments with
    the same salt (the assignment hash and the Monte Carlo seed) that receive the same events
    between updates go through exactly the same weights at every update."""
    runs = [await bandit_experiment(app_client, key) for key in ("run-1", "run-2")]
    rngs = {e["key"]: np.random.default_rng(9) for e in runs}
    rec = app_client.app[RECOMPUTE]
    t = datetime.now(UTC)
    for n in range(4):
        for e in runs:
            await send_round(app_client, e["key"], 400 * n, 400, rngs[e["key"]])
        t += timedelta(seconds=2)
        await rec.tick(t)
        for e in runs:  # the next round's assignments follow the new weights in both
            await wait_weights(app_client, e)
    a, b = [(await results(app_client, e["id"]))["bandit"]["history"] for e in runs]
    assert len(a) == 4
    assert [(h["weights"], h["p_best"]) for h in a] == [(h["weights"], h["p_best"]) for h in b]
    assert a[-1]["weights"] != a[-2]["weights"]


async def test_auto_stop_goes_the_way_a_persons_stop_goes(app_client: TestClient) -> None:
    """A converged bandit with auto_stop stops itself through the experiments service: the
    winner is set, the audit log names the bandit, and this process's registry serves the
    winner at once."""
    exp = await launched(app_client, key="auto", allocation="bandit", variants=VARIANTS,
                         salt="reward-test", bandit={**BANDIT, "auto_stop": True})
    await send_users(app_client, "auto", 2000, True, np.random.default_rng(3))
    await app_client.app[RECOMPUTE].tick(datetime.now(UTC) + timedelta(seconds=2))
    entry = app_client.app[REGISTRY].get("auto")
    assert entry is not None and entry.experiment.status == "stopped"
    assert entry.experiment.winner == "model_d"
    resp = await app_client.get(f"/api/v1/experiments/{exp['id']}/history", headers=ADMIN)
    last = (await resp.json())["history"][0]
    assert (last["actor"], last["action"]) == ("litmus-bandit", "stop")
