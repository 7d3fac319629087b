"""Running the app: one process, or one of N workers sharing a port."""

from __future__ import annotations

import asyncio
import signal
import socket

from litmus.settings import Settings


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


def serve_one(settings: Settings) -> None:
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

    async def _stop_once(_: web.Application) -> None:
        # With --workers, a SIGTERM to the process group reaches a worker twice (directly and
        # forwarded by the parent); a second GracefulExit in the middle of the drain would
        # abort it. Replace aiohttp's handlers with ones that fire only once.
        from aiohttp.web_runner import GracefulExit

        loop = asyncio.get_running_loop()
        fired = False

        def stop() -> None:
            nonlocal fired
            if not fired:
                fired = True
                raise GracefulExit()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)

    app.on_startup.append(_freeze)
    app.on_startup.append(_stop_once)
    gc.set_threshold(50_000, 50, 100)
    kwargs: dict[str, object] = {"access_log": None, "print": None, "shutdown_timeout": 30}
    web.run_app(
        app, host=settings.host, port=settings.port, reuse_port=settings.workers > 1,
        loop=uvloop.new_event_loop(), **kwargs,  # type: ignore[arg-type]
    )


def worker(settings: Settings) -> None:
    """One of N processes sharing the port (SO_REUSEPORT)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    serve_one(settings)
