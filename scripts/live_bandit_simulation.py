#!/usr/bin/env python3
"""Live bandit simulation: a 5-model Thompson-sampling experiment driven through the real API.

It creates a bandit experiment (`model_a` ... one model per rate), launches it, and sends
simulated users at the requested rate: each user is assigned a model (POST /api/v1/assign),
its exposure is logged, and it converts with the model's true rate. Every few seconds it prints
a `live_snapshot` line (top model, its win probability, exposures per model) read from the
results endpoint, and a `converged` line once the server declares convergence. The experiment
is left running for a person to stop (UI `Stop` button, or POST /api/v1/experiments/{id}/stop),
unless --stop-on-converge.

    python3 scripts/live_bandit_simulation.py --base-url http://localhost:8000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:
    import aiohttp
    import orjson

    from litmus import payloads, routes
except ImportError:
    # Run as `python3 scripts/...` outside the venv: use the project's venv when there is one.
    venv_python = ROOT / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        os.execv(str(venv_python), [str(venv_python), __file__, *sys.argv[1:]])
    sys.exit("error: Litmus's dependencies are not installed: run `make install` (or `make run`) first")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3


class SimulationError(Exception):
    """A failure worth one clear line and a non-zero exit."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def default_token() -> str | None:
    """The first of ADMIN_API_TOKENS, else the token `litmus serve` generated and keeps."""
    raw = os.environ.get("ADMIN_API_TOKENS", "")
    first = next((t.strip() for t in raw.split(",") if t.strip()), None)
    if first:
        return first.split(":", 1)[1] if ":" in first else first
    path = Path(os.environ.get("LITMUS_DATA_DIR") or ROOT / ".litmus") / "admin_token"
    if path.exists():
        saved = path.read_text(encoding="utf-8").strip()
        return saved.split(":", 1)[1] if ":" in saved else saved
    return None


def parse_rates(text: str) -> list[float]:
    """`0.04,0.05,...` -> floats in [0, 1], at least two."""
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rates must be numbers separated by commas: {text!r}") from None
    if len(rates) < 2 or len(rates) > 20:
        raise argparse.ArgumentTypeError("--rates needs between 2 and 20 conversion rates")
    if any(not 0 <= r <= 1 for r in rates):
        raise argparse.ArgumentTypeError("--rates must each be between 0 and 1")
    return rates


def positive(kind: type) -> Any:
    """An argparse type for positive numbers."""
    def conv(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return v
    return conv


def base_url(text: str) -> str:
    """An http(s) address."""
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"--base-url must start with http:// or https://: {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command line (SPEC section 5)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--base-url", type=base_url, default="http://localhost:8000",
                   help="Litmus server address")
    p.add_argument("--token", default=None,
                   help="admin token (default: first of ADMIN_API_TOKENS, else .litmus/admin_token)")
    p.add_argument("--rates", type=parse_rates, default=parse_rates("0.04,0.05,0.06,0.07,0.10"),
                   help="true conversion rate per model; the count sets the number of models")
    p.add_argument("--seed", type=int, default=None, help="random seed of the simulated users")
    p.add_argument("--users-per-second", type=positive(float), default=300.0)
    p.add_argument("--snapshot-every", type=positive(float), default=3.0, help="seconds")
    p.add_argument("--max-seconds", type=positive(float), default=300.0)
    p.add_argument("--update-interval", type=positive(float), default=2.0,
                   help="bandit weight update interval in seconds (server side)")
    p.add_argument("--concurrency", type=positive(int), default=32, help="requests in flight")
    p.add_argument("--stop-on-converge", action="store_true",
                   help="stop the experiment with the winner once it converges")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


class Printer:
    """`event key=value ...` lines, or JSON lines with an `event` field."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, event: str, text: str, **fields: Any) -> None:
        if self.as_json:
            line = orjson.dumps({"event": event, **fields}).decode()
        else:
            line = f"{event:<14} {text}"
        print(line, flush=True)


class Simulation:
    """Creates the experiment, drives users, watches results."""

    def __init__(self, args: argparse.Namespace, token: str) -> None:
        self.args = args
        self.base = args.base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.rng = random.Random(args.seed)
        self.keys = [f"model_{chr(ord('a') + i)}" for i in range(len(args.rates))]
        self.rate = dict(zip(self.keys, args.rates, strict=True))
        self.out = Printer(args.json)
        self.exp: dict[str, Any] = {}
        self.users = 0
        self.pending: list[dict[str, Any]] = []
        self.session: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; clear errors for refusals and server failures."""
        try:
            async with self.session.request(method, self.base + path, json=body,
                                            headers=self.headers) as resp:
                data = await resp.read()
                if resp.status in (401, 403):
                    raise SimulationError(
                        f"the server refused the token (HTTP {resp.status}): pass --token or set "
                        "ADMIN_API_TOKENS to an admin token (`make run` prints one)", EXIT_USAGE)
                if resp.status >= 400:
                    try:
                        msg = orjson.loads(data)["error"]["message"]
                    except (ValueError, KeyError, TypeError):
                        msg = data[:200].decode(errors="replace")
                    raise SimulationError(f"{method} {path} failed with HTTP {resp.status}: {msg}")
                return orjson.loads(data) if data else None
        except aiohttp.ClientConnectionError as exc:
            raise SimulationError(f"cannot reach Litmus at {self.base}: {exc}. Is `make run` running?",
                                  EXIT_USAGE) from None
        except TimeoutError:
            raise SimulationError(f"Litmus at {self.base} did not answer in time") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise SimulationError(f"{method} {path} failed: {exc}") from None

    async def create(self) -> None:
        """Create and launch the bandit experiment."""
        n = len(self.keys)
        key = f"bandit-sim-{int(time.time())}-{self.rng.randrange(1000):03d}"
        weights = [round(1 / n, 12)] * (n - 1)
        weights.append(1 - sum(weights))
        body = payloads.experiment(
            key, f"Live bandit simulation ({n} models)",
            [(k, w, {"model": k, "true_rate": self.rate[k]}) for k, w in zip(self.keys, weights, strict=True)],
            description="Simulated users through the public API (scripts/live_bandit_simulation.py)",
            owner_team="ml-platform", allocation="bandit",
            hypothesis=f"{self.keys[self.args.rates.index(max(self.args.rates))]} converts best",
            bandit={"reward_metric": "conversion", "reward_type": "binary",
                    "update_interval_s": self.args.update_interval},
        )
        self.exp = await self.call("POST", routes.EXPERIMENTS, body)
        await self.call("POST", routes.experiment_action(self.exp["id"], "launch"), {"ramp": 1.0})
        url = f"{self.base}/experiments/{self.exp['id']}/results"
        self.out("started", f"experiment={self.exp['key']} id={self.exp['id']} models={n} "
                 f"rates={','.join(f'{r:g}' for r in self.args.rates)} results={url}",
                 experiment_id=self.exp["id"], key=self.exp["key"], rates=self.rate, results_url=url)

    async def user(self, sem: asyncio.Semaphore) -> None:
        """One simulated user: assign, log the exposure, maybe convert."""
        async with sem:
            self.users += 1
            unit = f"sim-{self.users}-{self.rng.randrange(1 << 30)}"
            a = await self.call("POST", routes.ASSIGN, payloads.assign(self.exp["key"], unit))
            variant = a["variant"]
            if variant is None:
                return
            self.pending.append(payloads.exposure(self.exp["key"], unit, variant))
            if self.rng.random() < self.rate[variant]:
                self.pending.append(payloads.conversion(self.exp["key"], unit))

    async def flush(self) -> None:
        """Send the buffered exposures and conversions as one batch."""
        batch, self.pending = self.pending, []
        if batch:
            await self.call("POST", routes.EVENTS, payloads.events(batch))

    async def snapshot(self, elapsed: float) -> bool:
        """Print a live_snapshot; True once the server says the bandit converged."""
        try:
            snap = await self.call("GET", routes.experiment_action(self.exp["id"], "results"))
        except SimulationError as exc:
            if "no results yet" in str(exc):
                self.out("live_snapshot", f"t={elapsed:.0f}s users={self.users} (no results yet)",
                         t=round(elapsed, 1), users=self.users, results=None)
                return False
            raise
        exposures = {k: v["units"] for k, v in snap["exposures"]["variants"].items()}
        band = snap.get("bandit") or {}
        p_best = band.get("p_best") or {}
        top = band.get("top_variant") or (max(p_best, key=p_best.__getitem__) if p_best else None)
        win = p_best.get(top, 0.0) if top else 0.0
        weights = band.get("weights") or {}
        self.out(
            "live_snapshot",
            f"t={elapsed:.0f}s top={top} win_probability={win:.3f} users={self.users} exposures "
            + " ".join(f"{k}={exposures.get(k, 0)}" for k in self.keys),
            t=round(elapsed, 1), top_variant=top, win_probability=win, users=self.users,
            exposures=exposures, weights=weights, p_best=p_best, computed_at=snap.get("computed_at"),
        )
        if band.get("converged"):
            winner = band.get("converged_variant") or top
            self.out(
                "converged",
                f"t={elapsed:.0f}s winner={winner} win_probability={p_best.get(winner, 0):.3f} "
                f"converged_at={band.get('converged_at')} exposures "
                + " ".join(f"{k}={exposures.get(k, 0)}" for k in self.keys),
                t=round(elapsed, 1), winner=winner, top_variant=top,
                win_probability=p_best.get(winner, 0.0), converged_at=band.get("converged_at"),
                exposures=exposures, experiment_id=self.exp["id"],
            )
            return True
        return False

    async def run(self) -> int:
        """The whole simulation; returns the exit code."""
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as self.session:
            await self.call("GET", routes.EXPERIMENTS + "?limit=1")  # token check up front
            await self.create()
            sem = asyncio.Semaphore(self.args.concurrency)
            start = time.monotonic()
            next_snap = start + self.args.snapshot_every
            tick = 0.1
            tasks: set[asyncio.Task[None]] = set()
            failures: list[BaseException] = []

            def done(t: asyncio.Task[None]) -> None:
                tasks.discard(t)
                if not t.cancelled() and t.exception() is not None:
                    failures.append(t.exception())  # type: ignore[arg-type]

            debt = 0.0
            last = start
            while True:
                if failures:
                    raise failures[0]
                now = time.monotonic()
                elapsed = now - start
                if elapsed >= self.args.max_seconds:
                    self.out("timeout", f"t={elapsed:.0f}s no convergence within --max-seconds "
                             f"{self.args.max_seconds:g}; the experiment is left running",
                             t=round(elapsed, 1), experiment_id=self.exp["id"])
                    return EXIT_TIMEOUT
                # Users owed for the time that really passed (flushes and snapshots take time too).
                debt += self.args.users_per_second * (now - last)
                last = now
                for _ in range(int(debt)):
                    t = asyncio.create_task(self.user(sem))
                    tasks.add(t)
                    t.add_done_callback(done)
                debt -= int(debt)
                await asyncio.sleep(tick)
                await self.flush()
                if time.monotonic() >= next_snap:
                    next_snap += self.args.snapshot_every
                    if await self.snapshot(time.monotonic() - start):
                        break
            await asyncio.gather(*tasks)
            if failures:
                raise failures[0]
            await self.flush()
            if self.args.stop_on_converge:
                snap = await self.call("GET", routes.experiment_action(self.exp["id"], "results"))
                winner = snap["bandit"].get("converged_variant") or snap["bandit"]["top_variant"]
                await self.call("POST", routes.experiment_action(self.exp["id"], "stop"),
                                {"winner": winner})
                self.out("stopped", f"experiment={self.exp['key']} winner={winner}",
                         experiment_id=self.exp["id"], winner=winner)
            else:
                self.out("next", f"the experiment keeps running: stop it in the UI "
                         f"({self.base}/experiments/{self.exp['id']}) or with "
                         f"POST {self.base}{routes.experiment_action(self.exp['id'], 'stop')}",
                         experiment_id=self.exp["id"])
            return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse flags, run, map failures to one line and an exit code."""
    args = build_parser().parse_args(argv)
    token = args.token or default_token()
    if not token:
        print("error: no token: pass --token, set ADMIN_API_TOKENS, or start `make run` once "
              "(it keeps one in .litmus/admin_token)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(Simulation(args, token).run())
    except SimulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
