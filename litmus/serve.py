"""Running the app: one process, or one of N workers sharing a port."""

from __future__ import annotations

import signal
import socket

from litmus.settings import Settings


def serve_one(settings: Settings, sock: socket.socket | None = None) -> None:
    """Run one full app in this process until SIGTERM/SIGINT."""
    import gc

    import uvloop
    from aiohttp import web

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
    kwargs: dict[str, object] = {"access_log": None, "print": None, "shutdown_timeout": 30}
    if sock is not None:
        web.run_app(app, sock=sock, loop=uvloop.new_event_loop(), **kwargs)  # type: ignore[arg-type]
    else:
        web.run_app(
            app, host=settings.host, port=settings.port, reuse_port=settings.workers > 1,
            loop=uvloop.new_event_loop(), **kwargs,  # type: ignore[arg-type]
        )


def worker(settings: Settings) -> None:
    """One of N processes sharing the port (SO_REUSEPORT)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    serve_one(settings)
