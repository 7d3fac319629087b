"""create_app(settings): routes, middlewares and cleanup contexts; no I/O itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from litmus.api import experiments, ops, ui
from litmus.api.middleware import auth_middleware, error_middleware
from litmus.db.pool import open_database
from litmus.keys import AUTH, DSN, POOL, SETTINGS
from litmus.services.auth import Authenticator
from litmus.settings import Settings


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the database (embedded when DATABASE_URL is unset), migrate, pool."""
    async with open_database(app[SETTINGS]) as (dsn, pool):
        app[DSN] = dsn
        app[POOL] = pool
        yield


def create_app(settings: Settings) -> web.Application:
    """The whole Litmus application for one process."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[AUTH] = Authenticator(settings.admin_tokens, settings.client_tokens)
    # Order matters: aiohttp exits these in reverse, so later services stop first.
    app.cleanup_ctx.append(database_ctx)
    app.add_routes(ops.routes)
    app.add_routes(experiments.routes)
    app.add_routes(ui.routes)
    return app
