"""The `litmus` command: serve, migrate, token."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from dataclasses import replace

from litmus.settings import Settings, SettingsError

log = logging.getLogger("litmus")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"litmus: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the embedded database when needed, migrate once, and serve."""
    from litmus.db.pool import resolve_dsn, run_migrations
    from litmus.logs import configure
    from litmus.serve import port_problem, serve_one, worker
    from litmus.services.auth import ensure_admin_token

    settings = _settings()
    if args.host:
        settings = replace(settings, host=args.host)
    if args.port is not None:
        settings = replace(settings, port=args.port)
    if args.workers is not None:
        if args.workers < 1:
            print("litmus: --workers must be at least 1", file=sys.stderr)
            return 2
        settings = replace(settings, workers=args.workers)
    configure(settings)
    problem = port_problem(settings.host, settings.port)
    if problem:
        print(f"litmus: {problem}", file=sys.stderr)
        return 1
    settings, generated = ensure_admin_token(settings)
    try:
        dsn = asyncio.run(resolve_dsn(settings))
        applied = asyncio.run(run_migrations(dsn))
    except Exception as exc:
        print(f"litmus: cannot open the database: {exc}", file=sys.stderr)
        return 1
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    # Workers connect to the database this process resolved (and keeps alive).
    settings = replace(settings, database_url=dsn)
    where = f"http://{settings.host}:{settings.port}"
    print(f"Litmus is serving on {where} ({settings.workers} worker(s))", flush=True)
    print(f"  UI:    {where}/experiments", flush=True)
    if generated:
        print(f"  Admin token: {generated}", flush=True)
        print(f"  (kept in {settings.data_dir / 'admin_token'}; set ADMIN_API_TOKENS to choose your own)",
              flush=True)
    else:
        print("  Admin token: the first of ADMIN_API_TOKENS", flush=True)
    if settings.workers == 1:
        serve_one(settings)
        return 0
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(settings,), daemon=False) for _ in range(settings.workers)]
    for p in procs:
        p.start()

    def _forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    code = 0
    for p in procs:
        p.join()
        code = code or (p.exitcode or 0)
    return code


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations and exit."""
    from litmus.db.pool import resolve_dsn, run_migrations
    from litmus.logs import configure

    settings = _settings()
    configure(settings)

    async def run() -> list[str]:
        return await run_migrations(await resolve_dsn(settings))

    try:
        applied = asyncio.run(run())
    except Exception as exc:
        print(f"litmus: migration failed: {exc}", file=sys.stderr)
        return 1
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print a new random token."""
    from litmus.services.auth import new_token

    print(new_token())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `litmus` and `python -m litmus`."""
    parser = argparse.ArgumentParser(prog="litmus", description="Litmus experimentation server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API, assignment, ingestion and UI")
    serve.add_argument("--host", help="address to bind (LITMUS_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (LITMUS_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="processes on one port (LITMUS_WORKERS)")
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("token", help="print a new random token").set_defaults(func=cmd_token)
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
