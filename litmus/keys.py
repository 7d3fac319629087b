"""Every web.AppKey of the application."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from litmus.db.types import Pool
from litmus.services.auth import Authenticator
from litmus.services.ingest import Ingestor
from litmus.services.recompute import Recompute
from litmus.services.registry import Entry, Registry
from litmus.settings import Settings


class Drain:
    """The start of a shutdown: from `begin()` on, requests that arrive get 503, and the
    callbacks registered in `on_begin` (event ingestion's "flush now") run at once."""

    def __init__(self) -> None:
        self.active = False
        self.on_begin: list[Callable[[], None]] = []

    def begin(self) -> None:
        """Start draining; runs each callback once."""
        if not self.active:
            self.active = True
            for callback in self.on_begin:
                callback()


SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", Pool)
DSN = web.AppKey("dsn", str)
AUTH = web.AppKey("auth", Authenticator)
REGISTRY = web.AppKey("registry", Registry)
RECOMPUTE = web.AppKey("recompute", Recompute)
INGEST = web.AppKey("ingest", Ingestor)
DRAIN = web.AppKey("drain", Drain)
# Ingestion registers a callable here: (entry, unit_id, variant) -> None, non-blocking; the
# assign routes call it for every assignment they answer.
EXPOSURE_HOOK: web.AppKey[Callable[[Entry, str, str], None]] = web.AppKey("exposure_hook")
