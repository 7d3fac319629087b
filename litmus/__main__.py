"""The `litmus` command: serve, migrate, token."""

from __future__ import annotations

import argparse
import asyncio
import logging
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
    from litmus.supervise import run_workers

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
    fast = settings.fast_lane_port
    problem = port_problem(settings.host, fast) if fast is not None else None
    if problem:
        problem = problem.replace("LITMUS_PORT or --port", "LITMUS_ASSIGN_PORT")
        if settings.assign_port is not None:
            print(f"litmus: {problem}", file=sys.stderr)
            return 1
        # Only the default (main port + 1) gives way to whoever holds it; a chosen one must be free.
        print(f"litmus: the fast lane is off: {problem}", file=sys.stderr)
        settings = replace(settings, assign_port=0)
    settings, generated = ensure_admin_token(settings)
    try:
        # This process started the embedded server, so it restarts it if it dies.
        dsn = asyncio.run(resolve_dsn(settings, supervise=True))
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
    if settings.fast_lane_port is not None:
        print(f"  Fast lane (assign, assign/batch, config, healthz): "
              f"http://{settings.host}:{settings.fast_lane_port}", flush=True)
    if generated:
        print(f"  Admin token: {generated}", flush=True)
        print(f"  (kept in {settings.data_dir / 'admin_token'}; set ADMIN_API_TOKENS to choose your own)",
              flush=True)
        print("  For the README's curl flow, in another terminal:", flush=True)
        print(f"    export LITMUS_TOKEN={generated}", flush=True)
    else:
        print("  Admin token: the first of ADMIN_API_TOKENS", flush=True)
    if settings.workers == 1:
        serve_one(settings)
        return 0
    return run_workers(worker, (settings,), settings.workers)


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
