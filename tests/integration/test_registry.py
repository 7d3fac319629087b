"""The registry's safety nets: a periodic full reload, and reconnecting a dropped LISTEN."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from litmus.app import create_app
from litmus.keys import REGISTRY
from litmus.settings import Settings
from tests.conftest import ADMIN, CLIENT, experiment_payload


async def ramp_seen(client: TestClient, ramp: float, within_s: float) -> bool:
    for _ in range(int(within_s / 0.05)):
        cfg = await (await client.get("/api/v1/config", headers=CLIENT)).json()
        if cfg["experiments"] and cfg["experiments"][0]["ramp"] == ramp:
            return True
        await asyncio.sleep(0.05)
    return False


async def launched(client: TestClient) -> dict[str, Any]:
    exp = await (await client.post("/api/v1/experiments", json=experiment_payload(),
                                   headers=ADMIN)).json()
    resp = await client.post(f"/api/v1/experiments/{exp['id']}/launch", json={"ramp": 0.3},
                             headers=ADMIN)
    assert resp.status == 200
    assert await ramp_seen(client, 0.3, 2)
    out: dict[str, Any] = exp
    return out


async def test_full_reload_catches_a_change_that_sent_no_notice(
    settings: Settings, aiohttp_client: Any, db: asyncpg.Connection
) -> None:
    client = await aiohttp_client(create_app(replace(settings, registry_reload_s=0.5)))
    exp = await launched(client)
    # A change that bypasses the NOTIFY trigger: only the periodic reload can see it.
    await db.execute("ALTER TABLE experiments DISABLE TRIGGER experiments_notify")
    await db.execute("UPDATE experiments SET ramp = 0.8 WHERE id = $1", uuid.UUID(exp["id"]))
    await db.execute("ALTER TABLE experiments ENABLE TRIGGER experiments_notify")
    assert await ramp_seen(client, 0.8, 3)


async def test_dropped_listen_connection_reconnects_and_reloads(
    client: TestClient, db: asyncpg.Connection
) -> None:
    exp = await launched(client)
    registry = client.app[REGISTRY]
    reloads = registry.reloads
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'")
    assert killed == 1
    # The notice of this change may be lost with the connection; the reconnect reloads all.
    await db.execute("UPDATE experiments SET ramp = 0.6 WHERE id = $1", uuid.UUID(exp["id"]))
    assert await ramp_seen(client, 0.6, 5)
    for _ in range(100):
        if registry.reloads > reloads:
            break
        await asyncio.sleep(0.05)
    assert registry.reloads > reloads
    # And notices flow again on the new connection.
    resp = await client.post(f"/api/v1/experiments/{exp['id']}/launch", json={"ramp": 0.9},
                             headers=ADMIN)
    assert resp.status == 200
    assert await ramp_seen(client, 0.9, 2)
