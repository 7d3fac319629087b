"""Every web.AppKey of the application."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from litmus.services.auth import Authenticator
from litmus.services.ingest import Ingestor
from litmus.services.recompute import Recompute
from litmus.services.registry import Registry
from litmus.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
DSN = web.AppKey("dsn", str)
AUTH = web.AppKey("auth", Authenticator)
REGISTRY = web.AppKey("registry", Registry)
RECOMPUTE = web.AppKey("recompute", Recompute)
INGEST = web.AppKey("ingest", Ingestor)
