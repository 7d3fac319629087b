#!/usr/bin/env python3
"""Live bandit simulation: a 5-model Thompson-sampling experiment driven through the real API.

It creates a bandit experiment (`model_a` ... one model per rate), launches it, and sends
simulated users at the requested rate: each user is assigned a model (POST /api/v1/assign),
its exposure is logged with the answer's probability, and it converts with the model's true
rate. Every few seconds it prints a `live_snapshot` line (top model, its win probability,
exposures per model) read from the results endpoint, and a `converged` line once the server
declares convergence, then a `counterfactual` line: each model's conversion rate as the doubly
robust estimate from the logged probabilities (POST /api/v1/experiments/{id}/counterfactual,
one model-alone policy per model) with its 95% interval, beside the rate simulated. The
experiment is left running for a person to stop (UI `Stop` button, or POST
/api/v1/experiments/{id}/stop), unless --stop-on-converge.

`--scenario router` is a model router instead: 4 models with quality 0.70/0.76/0.80/0.82 (0/1
per request), cost per request about 0.2/0.5/1.0/3.0 and p95 latency about 400/700/1300/2600 ms;
the bandit maximises quality subject to mean cost <= 1.5 and p95 latency <= 1500 ms, so the
third model (`model_c`) is the right answer, not the best on quality alone. Each request sends
its `quality`, `cost_usd` and `latency_ms`; `live_snapshot` lines add each model's chance of
meeting each bound (the results' `bandit.p_feasible`).

`--scenario incident` is a guardrail drill: 3 models on an even fixed split, each failing 1% of
requests (an `errors` event of 1, direction decrease) under a guardrail that pauses. After
`--warmup` seconds `model_b` starts failing 3%; a `guardrail` line is printed when Litmus trips
the guardrail and pauses the experiment, with how long after the incident began.

    python3 scripts/live_bandit_simulation.py --base-url http://localhost:8000
    python3 scripts/live_bandit_simulation.py --scenario router
    python3 scripts/live_bandit_simulation.py --scenario incident
"""

from __future__ import annotations

import argparse
import asyncio
import math
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

# The router scenario: per model its quality (chance a request is good), mean cost per request
# and p95 latency. Costs spread 10% around their mean, latencies are lognormal with sigma 0.5.
ROUTER_QUALITY = (0.70, 0.76, 0.80, 0.82)
ROUTER_COST = (0.2, 0.5, 1.0, 3.0)
ROUTER_LATENCY_P95 = (400.0, 700.0, 1300.0, 2600.0)
ROUTER_COST_SIGMA = 0.1
ROUTER_LATENCY_SIGMA = 0.5
Z_P95 = 1.6448536269514722
ROUTER_COST_MAX = 1.5
ROUTER_LATENCY_MAX = 1500.0
ROUTER_METRICS = {
    "primary": "quality",
    "definitions": {"latency_ms": {"stat": "p95", "direction": "decrease"},
                    "cost_usd": {"direction": "decrease"}},
}
# The incident scenario: every model fails 1% of requests until the warm-up ends, then the
# faulty one fails 3%; the guardrail on `errors` pauses the experiment when it trips.
INCIDENT_MODELS = ("model_a", "model_b", "model_c")
INCIDENT_FAULTY = "model_b"
INCIDENT_ERROR_RATE = 0.01
INCIDENT_ERROR_RATE_AFTER = 0.03
INCIDENT_METRICS = {
    "primary": "errors",
    "definitions": {"errors": {"direction": "decrease"}},
    "guardrails": [{"metric": "errors", "margin": 0.0, "action": "pause"}],
}
ROUTER_OBJECTIVE = {
    "metric": "quality",
    "constraints": [{"metric": "cost_usd", "max": ROUTER_COST_MAX},
                    {"metric": "latency_ms", "max": ROUTER_LATENCY_MAX}],
}


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
    """The command line (README, "From clone to a converged bandit")."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--base-url", type=base_url, default="http://localhost:8000",
                   help="Litmus server address")
    p.add_argument("--token", default=None,
                   help="admin token (default: first of ADMIN_API_TOKENS, else .litmus/admin_token)")
    p.add_argument("--scenario", choices=("conversion", "router", "incident"), default="conversion",
                   help="conversion: one conversion rate per model (--rates); router: 4 models "
                        "chosen on quality within cost and p95 latency bounds")
    p.add_argument("--rates", type=parse_rates, default=parse_rates("0.04,0.05,0.06,0.07,0.10"),
                   help="true conversion rate per model; the count sets the number of models "
                        "(conversion scenario)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the simulated users")
    p.add_argument("--warmup", type=positive(float), default=20.0,
                   help="seconds before the faulty model's error rate rises (incident scenario)")
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
        self.router = args.scenario == "router"
        self.incident = args.scenario == "incident"
        self.incident_at: float | None = None  # monotonic time the error rate rose
        rates = (list(ROUTER_QUALITY) if self.router
                 else [INCIDENT_ERROR_RATE] * len(INCIDENT_MODELS) if self.incident else args.rates)
        self.keys = [f"model_{chr(ord('a') + i)}" for i in range(len(rates))]
        self.rate = dict(zip(self.keys, rates, strict=True))
        self.cost = dict(zip(self.keys, ROUTER_COST, strict=False))
        # Lognormal latency whose p95 is the model's: mu = ln(p95) - z95 * sigma.
        self.latency_mu = {k: math.log(p95) - Z_P95 * ROUTER_LATENCY_SIGMA
                           for k, p95 in zip(self.keys, ROUTER_LATENCY_P95, strict=False)}
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

    def expected_winner(self) -> str:
        """The model the experiment should find: the best rate, within the bounds for a router."""
        if not self.router:
            return max(self.keys, key=self.rate.__getitem__)
        feasible = [k for k, p95 in zip(self.keys, ROUTER_LATENCY_P95, strict=True)
                    if self.cost[k] <= ROUTER_COST_MAX and p95 <= ROUTER_LATENCY_MAX]
        return max(feasible, key=self.rate.__getitem__)

    async def create(self) -> None:
        """Create and launch the bandit experiment."""
        if self.incident:
            await self.create_incident()
            return
        n = len(self.keys)
        key = f"{'router' if self.router else 'bandit'}-sim-{int(time.time())}-{self.rng.randrange(1000):03d}"
        weights = [round(1 / n, 12)] * (n - 1)
        weights.append(1 - sum(weights))
        bandit: dict[str, Any] = {"reward_metric": "conversion", "reward_type": "binary",
                                  "update_interval_s": self.args.update_interval}
        extra: dict[str, Any] = {}
        if self.router:
            configs = {k: {"model": k, "quality": self.rate[k], "cost_usd": self.cost[k],
                           "latency_p95_ms": p95}
                       for k, p95 in zip(self.keys, ROUTER_LATENCY_P95, strict=True)}
            bandit.update(reward_metric="quality", objective=ROUTER_OBJECTIVE)
            extra["metrics"] = ROUTER_METRICS
            name = f"Live router simulation ({n} models, quality within cost and latency bounds)"
            hypothesis = (f"{self.expected_winner()} has the best quality with mean cost <= "
                          f"{ROUTER_COST_MAX:g} and p95 latency <= {ROUTER_LATENCY_MAX:g} ms")
        else:
            configs = {k: {"model": k, "true_rate": self.rate[k]} for k in self.keys}
            name = f"Live bandit simulation ({n} models)"
            hypothesis = f"{self.expected_winner()} converts best"
        body = payloads.experiment(
            key, name,
            [(k, w, configs[k]) for k, w in zip(self.keys, weights, strict=True)],
            description="Simulated users through the public API (scripts/live_bandit_simulation.py)",
            owner_team="ml-platform", allocation="bandit", hypothesis=hypothesis, bandit=bandit,
            # With --seed, assignment and the server's Monte Carlo (seeded by the salt and the
            # update number) repeat from run to run as well as the simulated users do.
            **({"salt": f"{'router' if self.router else 'bandit'}-sim-{self.args.seed}"}
               if self.args.seed is not None else {}),
            **extra,
        )
        self.exp = await self.call("POST", routes.EXPERIMENTS, body)
        await self.call("POST", routes.experiment_action(self.exp["id"], "launch"), {"ramp": 1.0})
        url = f"{self.base}/experiments/{self.exp['id']}/results"
        rates = ",".join(f"{self.rate[k]:g}" for k in self.keys)
        if self.router:
            self.out("started", f"experiment={self.exp['key']} id={self.exp['id']} models={n} "
                     f"scenario=router quality={rates} "
                     f"cost={','.join(f'{c:g}' for c in ROUTER_COST)} "
                     f"latency_p95={','.join(f'{x:g}' for x in ROUTER_LATENCY_P95)} "
                     f"objective=quality cost_usd<={ROUTER_COST_MAX:g} "
                     f"p95(latency_ms)<={ROUTER_LATENCY_MAX:g} expected={self.expected_winner()} "
                     f"results={url}",
                     experiment_id=self.exp["id"], key=self.exp["key"], scenario="router",
                     quality=self.rate, cost_usd=self.cost,
                     latency_p95_ms=dict(zip(self.keys, ROUTER_LATENCY_P95, strict=True)),
                     objective=ROUTER_OBJECTIVE, expected_winner=self.expected_winner(),
                     results_url=url)
        else:
            self.out("started", f"experiment={self.exp['key']} id={self.exp['id']} models={n} "
                     f"rates={rates} results={url}",
                     experiment_id=self.exp["id"], key=self.exp["key"], rates=self.rate,
                     results_url=url)

    async def create_incident(self) -> None:
        """Create and launch the guarded fixed-split experiment of the incident scenario."""
        n = len(self.keys)
        key = f"incident-sim-{int(time.time())}-{self.rng.randrange(1000):03d}"
        weights = [round(1 / n, 12)] * (n - 1)
        weights.append(1 - sum(weights))
        body = payloads.experiment(
            key, f"Guardrail drill ({n} models, {INCIDENT_FAULTY} starts failing)",
            [(k, w, {"model": k}) for k, w in zip(self.keys, weights, strict=True)],
            description="Simulated requests through the public API "
                        "(scripts/live_bandit_simulation.py --scenario incident)",
            owner_team="ml-platform", hypothesis="the errors guardrail pauses a failing model",
            metrics=INCIDENT_METRICS,
            salt=f"incident-sim-{self.args.seed}" if self.args.seed is not None else None,
        )
        self.exp = await self.call("POST", routes.EXPERIMENTS, body)
        await self.call("POST", routes.experiment_action(self.exp["id"], "launch"), {"ramp": 1.0})
        url = f"{self.base}/experiments/{self.exp['id']}/results"
        self.out("started", f"experiment={self.exp['key']} id={self.exp['id']} models={n} "
                 f"scenario=incident errors={INCIDENT_ERROR_RATE:g} then "
                 f"{INCIDENT_FAULTY}={INCIDENT_ERROR_RATE_AFTER:g} after {self.args.warmup:g}s "
                 f"guardrail=errors action=pause results={url}",
                 experiment_id=self.exp["id"], key=self.exp["key"], scenario="incident",
                 faulty=INCIDENT_FAULTY, error_rate=INCIDENT_ERROR_RATE,
                 error_rate_after=INCIDENT_ERROR_RATE_AFTER, warmup_s=self.args.warmup,
                 results_url=url)

    def error_rate(self, variant: str) -> float:
        """The variant's error rate now (the faulty one's rises once the warm-up is over)."""
        if variant == INCIDENT_FAULTY and self.incident_at is not None:
            return INCIDENT_ERROR_RATE_AFTER
        return float(self.rate[variant])

    async def incident_snapshot(self, elapsed: float) -> bool:
        """Print a live_snapshot of the guardrail; True once it paused the experiment."""
        try:
            snap = await self.call("GET", routes.experiment_action(self.exp["id"], "results"))
        except SimulationError as exc:
            if "no results yet" in str(exc):
                return False
            raise
        exposures = {k: v["units"] for k, v in snap["exposures"]["variants"].items()}
        guards = snap.get("guardrails") or []
        errors = {k: (snap.get("estimates", {}).get("errors", {}).get(k) or {}).get("value")
                  for k in self.keys}
        shown = " ".join(f"{k}={exposures.get(k, 0)}/{(errors[k] or 0) * 100:.2f}%"
                         for k in self.keys)
        self.out("live_snapshot", f"t={elapsed:.0f}s users={self.users} status={snap['status']} "
                 f"units/error_rate {shown}", t=round(elapsed, 1), users=self.users,
                 status=snap["status"], exposures=exposures, error_rate=errors,
                 guardrails=guards, computed_at=snap.get("computed_at"))
        tripped = [g for g in guards if g.get("status") == "tripped"]
        if not tripped:
            return False
        exp = await self.call("GET", routes.experiment(self.exp["id"]))
        if exp["status"] != "paused":
            return False
        g = tripped[0]
        since = (time.monotonic() - self.incident_at) if self.incident_at is not None else None
        lo, hi = g["interval"] or (None, None)
        after = f"; {since:.0f} s after the incident began" if since is not None else ""
        self.out("guardrail", f"t={elapsed:.0f}s {g['message']} -> experiment {exp['status']}{after}",
                 t=round(elapsed, 1), metric=g["metric"], treatment=g["treatment"],
                 action=g["action"], harm=g["harm"], interval=[lo, hi],
                 tripped_at=g["tripped_at"], status=exp["status"],
                 seconds_after_incident=None if since is None else round(since, 1),
                 message=g["message"], experiment_id=self.exp["id"])
        return True

    async def user(self, sem: asyncio.Semaphore) -> None:
        """One simulated user: assign, log the exposure, maybe convert."""
        async with sem:
            self.users += 1
            unit = f"sim-{self.users}-{self.rng.randrange(1 << 30)}"
            # Drawn before the request: answers complete in any order, the draws must not.
            draw = self.rng.random()
            if self.router:
                z_cost, z_latency = self.rng.gauss(0.0, 1.0), self.rng.gauss(0.0, 1.0)
            a = await self.call("POST", routes.ASSIGN, payloads.assign(self.exp["key"], unit))
            variant = a["variant"]
            if variant is None:
                return
            exp = self.exp["key"]
            # The answer's probability goes with the exposure: the propensity counterfactual
            # estimates divide by (docs/COUNTERFACTUAL.md).
            self.pending.append(payloads.exposure(exp, unit, variant,
                                                  probability=a.get("probability")))
            if self.router:
                # Every request reports its quality, 0 or 1, as a router does.
                cost = self.cost[variant] * math.exp(ROUTER_COST_SIGMA * z_cost
                                                     - ROUTER_COST_SIGMA ** 2 / 2)
                latency = math.exp(self.latency_mu[variant] + ROUTER_LATENCY_SIGMA * z_latency)
                self.pending += [
                    payloads.metric(exp, unit, "quality", 1.0 if draw < self.rate[variant] else 0.0),
                    payloads.metric(exp, unit, "cost_usd", round(cost, 6)),
                    payloads.metric(exp, unit, "latency_ms", round(latency, 3)),
                ]
            elif self.incident:
                # A request that fails reports an `errors` event of 1; the others none.
                if draw < self.error_rate(variant):
                    self.pending.append(payloads.metric(exp, unit, "errors", 1.0))
            elif draw < self.rate[variant]:
                self.pending.append(payloads.conversion(exp, unit))

    async def flush(self) -> None:
        """Send the buffered exposures and conversions as one batch."""
        batch, self.pending = self.pending, []
        if batch:
            await self.call("POST", routes.EVENTS, payloads.events(batch))

    async def snapshot(self, elapsed: float) -> bool:
        """Print a live_snapshot; True once the server says the bandit converged."""
        if self.incident:
            return await self.incident_snapshot(elapsed)
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
        feasible: dict[str, dict[str, float]] = band.get("p_feasible") or {}
        extra: dict[str, Any] = {}
        text = ""
        if self.router:
            # Each model's chance of meeting each bound, e.g. model_d=cost_usd:0.00,latency_ms:0.00
            text = " p_feasible " + (" ".join(
                f"{k}=" + ",".join(f"{m}:{p:.2f}" for m, p in feasible[k].items())
                for k in self.keys if feasible.get(k)) or "(none yet)")
            extra["p_feasible"] = feasible
        self.out(
            "live_snapshot",
            f"t={elapsed:.0f}s top={top} win_probability={win:.3f} users={self.users} exposures "
            + " ".join(f"{k}={exposures.get(k, 0)}" for k in self.keys) + text,
            t=round(elapsed, 1), top_variant=top, win_probability=win, users=self.users,
            exposures=exposures, weights=weights, p_best=p_best, computed_at=snap.get("computed_at"),
            **extra,
        )
        if band.get("converged"):
            winner = band.get("converged_variant") or top
            if self.router:
                text = (f" expected={self.expected_winner()} p_feasible "
                        + ",".join(f"{m}:{p:.2f}" for m, p in (feasible.get(str(winner)) or {}).items()))
                extra["expected_winner"] = self.expected_winner()
                extra["winner_p_feasible"] = feasible.get(str(winner)) or {}
            self.out(
                "converged",
                f"t={elapsed:.0f}s winner={winner} win_probability={p_best.get(winner, 0):.3f} "
                f"converged_at={band.get('converged_at')} exposures "
                + " ".join(f"{k}={exposures.get(k, 0)}" for k in self.keys) + text,
                t=round(elapsed, 1), winner=winner, top_variant=top,
                win_probability=p_best.get(winner, 0.0), converged_at=band.get("converged_at"),
                exposures=exposures, experiment_id=self.exp["id"], **extra,
            )
            return True
        return False

    async def counterfactual(self) -> None:
        """Print a `counterfactual` line: each model-alone policy's DR estimate of the conversion
        rate from the logged probabilities, its 95% interval, and the rate simulated."""
        body = {"metric": "conversion", "policies": {k: {k: 1.0} for k in self.keys}}
        cf = await self.call("POST", routes.experiment_action(self.exp["id"], "counterfactual"),
                             body)
        out: dict[str, Any] = {}
        for k in self.keys:
            dr = cf["policies"][k]["dr"]
            lo, hi = dr["ci"] or (None, None)
            out[k] = {"dr": dr["value"], "ci": dr["ci"], "anytime_ci": dr["anytime_ci"],
                      "ess": cf["policies"][k]["ess"], "true_rate": self.rate[k],
                      "covered": lo is not None and lo <= self.rate[k] <= hi}
        shown = " ".join(
            f"{k}={v['dr']:.4f}[{v['ci'][0]:.4f},{v['ci'][1]:.4f}]/true={v['true_rate']:g}"
            if v["dr"] is not None else f"{k}=none/true={v['true_rate']:g}"
            for k, v in out.items())
        covered = sum(v["covered"] for v in out.values())
        self.out("counterfactual",
                 f"metric=conversion units={cf['units']} logged={cf['logged_value'] or 0:.4f} "
                 f"dr {shown} covered={covered}/{len(out)}",
                 metric="conversion", units=cf["units"], logged_value=cf["logged_value"],
                 server_filled_units=cf.get("server_filled_units"),
                 forced_units=cf.get("forced_units"), policies=out, covered=covered,
                 experiment_id=self.exp["id"])

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
                if self.incident and self.incident_at is None and elapsed >= self.args.warmup:
                    self.incident_at = now
                    self.out("incident", f"t={elapsed:.0f}s {INCIDENT_FAULTY} now fails "
                             f"{INCIDENT_ERROR_RATE_AFTER:.0%} of requests",
                             t=round(elapsed, 1), variant=INCIDENT_FAULTY,
                             error_rate=INCIDENT_ERROR_RATE_AFTER)
                if elapsed >= self.args.max_seconds:
                    self.out("timeout", f"t={elapsed:.0f}s no "
                             f"{'guardrail trip' if self.incident else 'convergence'} within --max-seconds "
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
            if self.incident:
                self.out("next", f"the experiment is paused: resume it in the UI or with POST "
                         f"{self.base}{routes.experiment_action(self.exp['id'], 'launch')}",
                         experiment_id=self.exp["id"])
                return EXIT_OK
            if not self.router:
                await self.counterfactual()
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
