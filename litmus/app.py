"""create_app(settings): routes, middlewares and cleanup contexts; no I/O itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from litmus.api import assign, events, experiments, openapi, ops, plan, results, ui
from litmus.api.cors import cors_middlewares
from litmus.api.middleware import error_middleware, litmus_middleware
from litmus.api.observability import observe_middleware
from litmus.api.observability import setup as setup_observability
from litmus.core.assignment import served_probability
from litmus.db.pool import open_database
from litmus.keys import (
    AUTH,
    DRAIN,
    DSN,
    EXPOSURE_HOOK,
    INGEST,
    POOL,
    RECOMPUTE,
    REGISTRY,
    SETTINGS,
    Drain,
)
from litmus.services.auth import Authenticator
from litmus.services.ingest import Ingestor, exposure_row
from litmus.services.recompute import Recompute
from litmus.services.registry import Entry, Registry
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
    recompute = Recompute(app[POOL], app[DSN], app[REGISTRY], app[SETTINGS].recompute_interval_s,
                          alert_webhook_url=app[SETTINGS].alert_webhook_url)
    app[RECOMPUTE] = recompute
    await recompute.start()
    try:
        yield
    finally:
        await recompute.stop()


async def ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    """The ingest writer: started after the registry, drained before the pool closes; it logs
    every exposure the assign routes answer."""
    ingestor = Ingestor.from_settings(app[DSN], app[SETTINGS])
    await ingestor.start()
    app[INGEST] = ingestor

    def log_exposure(entry: Entry, unit_id: str, variant: str,
                     covariates: Sequence[float | None] | None = None) -> None:
        index = entry.variant_index.get(variant)
        if index is not None:
            # The answer's own probability: the same compiled experiment decided it.
            p = served_probability(entry.compiled, unit_id, index)
            ingestor.offer_exposures([exposure_row(entry.experiment.id, unit_id, index,
                                                   probability=p, covariates=covariates)])

    app[EXPOSURE_HOOK] = log_exposure
    # When the drain begins, ingestion refuses new events and flushes what it holds at once,
    # while connections still open get their 503s (litmus/serve.py).
    app[DRAIN].on_begin.append(ingestor.stop_accepting)

    async def refuse_new(_: web.Application) -> None:
        # Shutdown began: in-flight requests finish, new events get 503 until we exit.
        ingestor.stop_accepting()

    app.on_shutdown.append(refuse_new)
    try:
        yield
    finally:
        await ingestor.close()


def create_app(settings: Settings) -> web.Application:
    """The whole Litmus application for one process."""
    auth = Authenticator(settings.admin_tokens, settings.client_tokens)
    drain = Drain()
    cors = cors_middlewares(settings)
    # One middleware does it all, unless CORS must sit between the metrics and the rest.
    app = web.Application(
        middlewares=[observe_middleware, *cors, error_middleware] if cors
        else [litmus_middleware(drain, auth)],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[AUTH] = auth
    app[DRAIN] = drain
    # Order matters: aiohttp exits these in reverse, so later services stop first.
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(registry_ctx)
    app.cleanup_ctx.append(ingest_ctx)
    app.cleanup_ctx.append(recompute_ctx)
    setup_observability(app)
    app.add_routes(ops.routes)
    app.add_routes(openapi.routes)
    app.add_routes(experiments.routes)
    app.add_routes(assign.routes)
    app.add_routes(events.routes)
    app.add_routes(results.routes)
    app.add_routes(plan.routes)
    app.add_routes(ui.routes)
    return app
