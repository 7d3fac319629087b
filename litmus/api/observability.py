"""Request metrics, request ids and request logging: the outermost middleware of the app.

The middleware gives every request an id (the caller's `X-Request-Id` when it is sane, else
a new one), makes it visible to every log line written while the request is handled, answers
with it in `X-Request-Id`, and records the latency per route name and status. It runs on the
assignment hot path, so its per-request cost is a counter, two clock reads, a dict update and
one header.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from litmus import keys, metrics
from litmus.logs import REQUEST_ID
from litmus.services.registry import Entry

log = logging.getLogger("litmus.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEADER = "X-Request-Id"
# Ids a caller may pass through (a load balancer's or a router's): short and log-safe only.
_SANE = r"[A-Za-z0-9._:-]{1,128}"
_SANE_ID = re.compile(_SANE)
# The same rule for the fast lane, which reads header values as bytes.
SANE_ID_BYTES = re.compile(_SANE.encode())
SLOW_S = 1.0
# A 5xx line per route and status at most this often, with the count of the ones held back.
_ERROR_LOG_EVERY_S = 10.0
# Requests whose clients went away before the answer; nginx's convention.
CLIENT_CLOSED = 499


_PREFIX = os.urandom(4).hex() + "-"
_COUNTER = itertools.count(1)
_held_back: dict[tuple[str, int], tuple[float, int]] = {}
# Route object -> name; aiohttp's routes live as long as the app, so lookups stay cheap.
_NAMES: dict[AbstractRoute, str] = {}
# Set once at start-up from the logger's level; checking it per request would cost more.
_debug = False
_perf = time.perf_counter


def new_request_id() -> str:
    """A process-unique request id: a random per-process prefix and a counter (cheap to make)."""
    return _PREFIX + str(next(_COUNTER))


_PREFIX_BYTES = _PREFIX.encode()


def new_request_id_bytes() -> bytes:
    """new_request_id() as bytes, from the same prefix and counter (the fast lane's form)."""
    return b"%b%d" % (_PREFIX_BYTES, next(_COUNTER))


def debug_enabled() -> bool:
    """Whether every answer is logged (DEBUG), as decided once at start-up."""
    return _debug


def _route_name(route: AbstractRoute) -> str:
    name: str | None = route.name
    if name:
        _NAMES[route] = name
        return name
    # aiohttp's system routes (404, 405) are new objects each time and have no name: one
    # label for all of them, never the path (unbounded), and nothing cached.
    return "unmatched"


def log_answer(route: str, status: int, elapsed: float, method: str) -> None:
    """Slow requests and 5xx answers are worth a line; 5xx lines are rate-limited per route."""
    extra = {"route": route, "status": status, "duration_ms": round(elapsed * 1e3, 3)}
    if status >= 500:
        key = (route, status)
        now = time.monotonic()
        last, held = _held_back.get(key, (-_ERROR_LOG_EVERY_S, 0))
        if now - last < _ERROR_LOG_EVERY_S:
            _held_back[key] = (last, held + 1)
            return
        _held_back[key] = (now, 0)
        log.warning(
            "answered %d on %s %s in %.1f ms%s", status, method, route, elapsed * 1e3,
            f" ({held} more since the last such line)" if held else "", extra=extra,
        )
    elif elapsed >= SLOW_S:
        log.warning("slow request: %s %s answered %d in %.0f ms", method, route, status,
                    elapsed * 1e3, extra=extra)
    else:
        log.debug("%s %s -> %d in %.2f ms", method, route, status, elapsed * 1e3,
                  extra=extra)


def observe_start(request: web.Request) -> tuple[str, contextvars.Token[str | None], float]:
    """A request begins: its id (made visible to log lines), counted in flight, the clock."""
    given = request.headers.get(HEADER)
    rid = given if given is not None and _SANE_ID.fullmatch(given) else new_request_id()
    metrics.REQUESTS.in_flight += 1
    return rid, REQUEST_ID.set(rid), _perf()


def observe_end(request: web.Request, token: contextvars.Token[str | None], t0: float,
                status: int, streamed: bool) -> None:
    """A request ends: its latency per route and status, and a line if it is worth one."""
    elapsed = _perf() - t0
    stats = metrics.REQUESTS
    stats.in_flight -= 1
    route = request.match_info.route
    name = _NAMES.get(route) or _route_name(route)
    stats.observe(name, status, elapsed)
    if status >= 500 or _debug or (elapsed >= SLOW_S and not streamed):
        log_answer(name, status, elapsed, request.method)
    REQUEST_ID.reset(token)


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, latency per route and status, and a log line for slow or failed answers.

    The app uses it on its own only with CORS open (litmus/app.py); otherwise the same work is
    done by litmus.api.middleware.litmus_middleware, in one pass with the rest."""
    rid, token, t0 = observe_start(request)
    status = 500
    streamed = False
    try:
        resp = await handler(request)
        status = resp.status
        if resp.prepared:
            # A stream (SSE) sent its headers long ago; its duration is the stream's life.
            streamed = True
        else:
            resp.headers[HEADER] = rid
        return resp
    except web.HTTPException as exc:
        # Redirects and the like pass through the error middleware as exceptions.
        status = exc.status
        exc.headers[HEADER] = rid
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        observe_end(request, token, t0, status, streamed)


# -- scrape-time sources and the propagation callback ------------------------------------------


class _Propagation:
    """Observes commit -> served for each new version of an experiment (updated_at is the commit)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __call__(self, entry: Entry | None, exp_id: str) -> None:
        if entry is None:
            self.seen.pop(exp_id, None)
            return
        exp = entry.experiment
        # Bandit weight updates reload an experiment without a new version: not a change.
        if exp.updated_at is None or self.seen.get(exp_id, 0) >= exp.version:
            return
        self.seen[exp_id] = exp.version
        metrics.config_propagated((datetime.now(UTC) - exp.updated_at).total_seconds())


async def _install_sources(app: web.Application) -> None:
    """Point the scrape-time sources at this app's pool, registry and services."""
    global _debug
    _debug = log.isEnabledFor(logging.DEBUG)
    pool = app.get(keys.POOL)
    if pool is not None:
        p = pool
        metrics.SOURCES.pool = lambda: (p.get_size(), p.get_idle_size(), p.get_max_size())
    registry = app.get(keys.REGISTRY)
    if registry is not None:
        reg = registry

        def _registry() -> tuple[str, dict[str, int], int]:
            counts: dict[str, int] = {}
            for e in reg.entries():
                counts[e.experiment.status] = counts.get(e.experiment.status, 0) + 1
            return reg.etag, counts, reg.reloads

        metrics.SOURCES.registry = _registry
        reg.on_change(_Propagation())
    recompute = app.get(keys.RECOMPUTE)
    if recompute is not None:
        rec = recompute
        metrics.SOURCES.recompute = lambda: (rec.is_leader, rec.last_tick_s, rec.ticks)
    ingestor = app.get(keys.INGEST)
    if ingestor is not None:
        ing = ingestor
        metrics.SOURCES.ingest = lambda: (ing.buffered_events, ing.buffered_bytes,
                                          ing.database_up, dataclasses.asdict(ing.stats))


async def _forget_sources(app: web.Application) -> None:
    metrics.reset_sources()


def setup(app: web.Application) -> None:
    """Register the scrape-time sources once every service of the app has started."""
    app.on_startup.append(_install_sources)
    app.on_cleanup.append(_forget_sources)
