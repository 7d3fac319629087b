"""Shared fixtures: one PostgreSQL per session, a fresh database per test (template copy)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from litmus.app import create_app
from litmus.db.embedded import embedded_server
from litmus.db.pool import run_migrations, start_embedded
from litmus.settings import Settings, Token

ADMIN_SECRET = "admin-secret-0123456789"
CLIENT_SECRET = "client-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}
CLIENT = {"Authorization": f"Bearer {CLIENT_SECRET}"}


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """LITMUS_TEST_DATABASE_URL, else an embedded PostgreSQL for this session."""
    url = os.environ.get("LITMUS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="litmus-test-"))
    url = start_embedded(folder, cleanup_mode="delete")

    async def fast() -> None:
        # A throwaway server: durability costs time here and buys nothing.
        conn = await asyncpg.connect(url)
        try:
            for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
                await conn.execute(f"ALTER SYSTEM SET {setting}")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    asyncio.run(fast())
    yield url
    embedded_server(folder).close()  # stops the server and deletes its data
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> Iterator[str]:
    """A database migrated once, copied for every test."""
    name = f"litmus_tpl_{secrets.token_hex(4)}"

    async def setup() -> None:
        conn = await asyncpg.connect(pg_server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        await run_migrations(with_database(pg_server_url, name))

    async def teardown() -> None:
        conn = await asyncpg.connect(pg_server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(setup())
    yield name
    asyncio.run(teardown())


async def make_database(server_url: str, template: str) -> str:
    """A fresh database copied from the template; returns its name."""
    name = f"litmus_t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return name


async def drop_database(server_url: str, name: str) -> None:
    """Drop a test database, closing whatever still uses it."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def database_url(pg_server_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = await make_database(pg_server_url, template_db)
    yield with_database(pg_server_url, name)
    await drop_database(pg_server_url, name)


def make_settings(database_url: str, tmp: Path, **over: Any) -> Settings:
    """Test settings: known tokens, quick loops."""
    base: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": tmp,
        "admin_tokens": (Token("admin", ADMIN_SECRET),),
        "client_tokens": (Token("router", CLIENT_SECRET),),
        "recompute_interval_s": 0.3,
        "registry_reload_s": 30.0,
    }
    base.update(over)
    return Settings(**base)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for an app on this test's database."""
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def client(settings: Settings, aiohttp_client: Any) -> TestClient:
    """An aiohttp test client on a full app."""
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to this test's database, for checking what was stored."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


def experiment_payload(**over: Any) -> dict[str, Any]:
    """A valid create payload with three variants."""
    body: dict[str, Any] = {
        "name": "Ranker v2",
        "description": "New ranking model against the current one",
        "owner_team": "search",
        "hypothesis": "model_b lifts conversion by 2%",
        "variants": [
            {"key": "model_a", "weight": 0.5, "config": {"model": "ranker-v1"}},
            {"key": "model_b", "weight": 0.3, "config": {"model": "ranker-v2"}},
            {"key": "model_c", "weight": 0.2, "config": {"model": "ranker-v3"}},
        ],
    }
    body.update(over)
    return body


async def wait_registry(client: TestClient, key: str, status: str) -> None:
    """Wait until the client's app's registry sees the experiment in `status`."""
    from litmus.keys import REGISTRY

    registry = client.app[REGISTRY]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        entry = registry.get(key)
        if entry is not None and entry.experiment.status == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"registry never saw {key} as {status}")


async def launched(client: TestClient, key: str = "ranker", ramp: float = 1.0,
                   **over: Any) -> dict[str, Any]:
    """Create and launch an experiment (variants model_a, model_b, model_c) and wait until
    the app's registry serves it running; returns the launched experiment."""
    resp = await client.post("/api/v1/experiments", json=experiment_payload(key=key, **over),
                             headers=ADMIN)
    assert resp.status == 201, await resp.text()
    exp: dict[str, Any] = await resp.json()
    resp = await client.post(f"/api/v1/experiments/{exp['id']}/launch", json={"ramp": ramp},
                             headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await wait_registry(client, key, "running")
    out: dict[str, Any] = await resp.json()
    return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last: Playwright's sync API runs an event loop of its own, which must not
    be alive while the async tests set up their fixtures."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
