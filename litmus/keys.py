"""Every web.AppKey of the application."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from litmus.services.auth import Authenticator
from litmus.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
DSN = web.AppKey("dsn", str)
AUTH = web.AppKey("auth", Authenticator)
