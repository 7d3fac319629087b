"""create_app(settings): routes, middlewares and cleanup contexts; no I/O itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from litmus.api import assign, events, experiments, openapi, ops, results, ui
from litmus.api.cors import cors_middlewares
from litmus.api.middleware import auth_middleware, error_middleware
from litmus.api.observability import observe_middleware
from litmus.api.observability import setup as setup_observability
from litmus.db.pool import open_database
from litmus.keys import AUTH, DSN, POOL, RECOMPUTE, REGISTRY, SETTINGS
from litmus.services.auth import Authenticator
from litmus.services.recompute import Recompute
from litmus.services.registry import Registry
from litmus.settings import Settings


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the database (embedded when DATABASE_URL is unset), migrate, pool."""
    async with open_database(app[SETTINGS]) as (dsn, pool):
        app[DSN] = dsn
        app[POOL] = pool
        yield


async def registry_ctx(app: web.Application) -> AsyncIterator[None]:
    """Every experiment in memory, kept fresh by LISTEN/NOTIFY."""
    registry = Registry(app[POOL], app[DSN], app[SETTINGS].registry_reload_s)
    await registry.start()
    app[REGISTRY] = registry

    async def end_streams(_: web.Application) -> None:
        # Open /config/stream requests would otherwise hold the shutdown for its whole timeout.
        registry.close_subscribers()

    app.on_shutdown.append(end_streams)
    try:
        yield
    finally:
        await registry.stop()


async def recompute_ctx(app: web.Application) -> AsyncIterator[None]:
    """The leader-elected results and bandit loop (every process competes for the lock)."""
    recompute = Recompute(app[POOL], app[DSN], app[REGISTRY], app[SETTINGS].recompute_interval_s)
    app[RECOMPUTE] = recompute
    await recompute.start()
    try:
        yield
    finally:
        await recompute.stop()


def create_app(settings: Settings) -> web.Application:
    """The whole Litmus application for one process."""
    app = web.Application(
        middlewares=[observe_middleware, *cors_middlewares(settings), error_middleware,
                     auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[AUTH] = Authenticator(settings.admin_tokens, settings.client_tokens)
    # Order matters: aiohttp exits these in reverse, so later services stop first.
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(registry_ctx)
    app.cleanup_ctx.append(events.ingest_ctx)
    app.cleanup_ctx.append(recompute_ctx)
    setup_observability(app)
    app.add_routes(ops.routes)
    app.add_routes(openapi.routes)
    app.add_routes(experiments.routes)
    app.add_routes(assign.routes)
    app.add_routes(events.routes)
    app.add_routes(results.routes)
    app.add_routes(ui.routes)
    return app
