"""Running the app: one process, or one of N workers sharing a port."""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import TYPE_CHECKING

from litmus.settings import Settings

if TYPE_CHECKING:
    from aiohttp import web


def port_problem(host: str, port: int) -> str | None:
    """Why the address cannot be listened on (in use, unknown host), or None."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve LITMUS_HOST {host!r}: {exc.strerror}"
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror} (set LITMUS_PORT or --port)"
    return None


# After SIGTERM, how long connections still open may keep sending (each request answered 503
# with Connection: close) before the rest of the shutdown closes them (docs/OPERATIONS.md).
DRAIN_GRACE_S = 2.0
# How long requests in flight may take to finish once the drain closes connections.
SHUTDOWN_TIMEOUT_S = 30.0


def serve_one(settings: Settings) -> None:
    """Run one full app in this process until SIGTERM/SIGINT, then drain and exit."""
    import gc

    import uvloop

    from litmus.app import create_app
    from litmus.logs import configure

    configure(settings)
    app = create_app(settings)

    async def _freeze(_: web.Application) -> None:
        # Start-up objects live forever: keep them out of the young generations.
        gc.collect()
        gc.freeze()

    app.on_startup.append(_freeze)
    gc.set_threshold(50_000, 50, 100)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(app, settings))


async def _serve(app: web.Application, settings: Settings) -> None:
    """Listen until the first SIGTERM/SIGINT, then drain: stop listening, answer what still
    arrives on open connections with 503 and Connection: close for a short grace, and shut down
    (requests in flight finish, accepted events are flushed)."""
    from aiohttp import web

    from litmus.api.fastlane import FastLane, FrontSite
    from litmus.keys import DRAIN

    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        # A connection with no complete request head for this long is closed: idle keep-alive
        # connections and clients that send their headers slowly alike.
        keepalive_timeout=settings.idle_timeout_s,
    )
    await runner.setup()
    # The fast lane's code also answers the router routes on the main port (litmus/api/
    # fastlane.py, "the main port's front"), unless CORS is open: its headers are aiohttp's.
    lane = FastLane(app, settings.port)
    try:
        site: web.TCPSite
        if settings.cors_origins:
            site = web.TCPSite(runner, settings.host, settings.port,
                               reuse_port=settings.workers > 1)
        else:
            site = FrontSite(runner, lane, settings.host, settings.port,
                             reuse_port=settings.workers > 1)
        await site.start()
        lane.start_clock()
        if settings.fast_lane_port is not None:
            await lane.start(settings.host, settings.fast_lane_port,
                             reuse_port=settings.workers > 1)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # With --workers, a SIGTERM to the process group reaches a worker twice (directly and
        # forwarded by the parent): setting an event twice is harmless.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        app[DRAIN].begin()
        await site.stop()
        lane.stop_listening()
        server = runner.server
        deadline = loop.time() + DRAIN_GRACE_S
        while (((server is not None and server.connections) or lane.connections)
               and loop.time() < deadline):
            await asyncio.sleep(0.05)
    finally:
        await lane.close()
        await runner.cleanup()


def worker(settings: Settings) -> None:
    """One of N processes sharing the port (SO_REUSEPORT)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    serve_one(settings)
