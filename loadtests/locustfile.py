"""A model router's traffic against Litmus, for locust (FastHttpUser).

The mix, by task weight: mostly single assigns; some batch assigns (100 units) and per-unit
assignments across experiments; exposures, metric values and conversions sent in batches the way
a router buffers them; now and then a config poll (304 when unchanged). Paths and bodies come
from litmus.routes and litmus.payloads, the same ones the simulation uses.

Run by loadtests/run_load.py (`make load`), or by hand:
    LITMUS_TOKEN=<client token> LITMUS_EXPERIMENTS=a,b locust -f loadtests/locustfile.py \\
        --host http://127.0.0.1:8000
"""

from __future__ import annotations

import os
import random
import sys
from collections import deque
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from litmus import payloads, routes

TOKEN = os.environ.get("LITMUS_TOKEN", "")
EXPERIMENTS = [k for k in os.environ.get("LITMUS_EXPERIMENTS", "").split(",") if k]
UNITS = int(os.environ.get("LITMUS_UNITS", "200000"))
BATCH_UNITS = 100
EVENT_BATCH = 50
COUNTRIES = ("fr", "de", "us", "br", "jp", "in")


class ModelRouter(FastHttpUser):
    """One router process: asks which model to serve, then reports what happened."""

    wait_time = constant(0)

    def on_start(self) -> None:
        """Per-user state: the auth header and the served (experiment, unit, variant) not yet
        reported."""
        if not EXPERIMENTS:
            raise RuntimeError("set LITMUS_EXPERIMENTS to the keys of running experiments")
        self.headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        self.served: deque[tuple[str, str, str]] = deque(maxlen=5000)
        self.exposed: deque[tuple[str, str, str]] = deque(maxlen=5000)
        self.config_etag = ""

    def _unit(self) -> str:
        return f"user-{random.randrange(UNITS)}"

    def _post(self, path: str, body: Any, name: str) -> Any:
        with self.client.post(path, json=body, headers=self.headers, name=name,
                              catch_response=True) as resp:
            if resp.status_code not in (200, 202):
                resp.failure(f"{resp.status_code}: {(resp.text or '')[:200]}")
                return None
            return resp.json()

    @task(60)
    def assign(self) -> None:
        """One unit, one experiment: the hot path."""
        exp = random.choice(EXPERIMENTS)
        unit = self._unit()
        a = self._post(routes.ASSIGN, payloads.assign(exp, unit, {"country": random.choice(
            COUNTRIES)}), name="assign")
        if a and a.get("variant"):
            self.served.append((exp, unit, a["variant"]))

    @task(5)
    def assign_batch(self) -> None:
        """A page of 100 units (pre-computing, or a fan-out)."""
        exp = random.choice(EXPERIMENTS)
        units = [self._unit() for _ in range(BATCH_UNITS)]
        out = self._post(routes.ASSIGN_BATCH, payloads.assign_batch(exp, units),
                         name="assign/batch (100)")
        if out:
            for a in out["assignments"][:10]:
                if a.get("variant"):
                    self.served.append((exp, a["unit_id"], a["variant"]))

    @task(5)
    def assignments(self) -> None:
        """One unit in every running experiment."""
        self._post(routes.ASSIGNMENTS, payloads.assignments(self._unit(), {"country": "fr"}),
                   name="assignments")

    @task(10)
    def exposures(self) -> None:
        """The router flushes its buffer of served units as exposures."""
        batch = [self.served.popleft() for _ in range(min(EVENT_BATCH, len(self.served)))]
        if not batch:
            return
        events = [payloads.untyped(payloads.exposure(e, u, v)) for e, u, v in batch]
        if self._post(routes.EVENTS_EXPOSURE, payloads.events(events),
                      name="events/exposure (batch)") is not None:
            self.exposed.extend(batch)

    @task(5)
    def metrics(self) -> None:
        """Latency of the served model, per exposed unit."""
        picked = random.sample(list(self.exposed), min(EVENT_BATCH, len(self.exposed)))
        if not picked:
            return
        events = [payloads.untyped(payloads.metric(e, u, "latency_ms", random.gauss(120, 30)))
                  for e, u, _ in picked]
        self._post(routes.EVENTS_METRIC, payloads.events(events), name="events/metric (batch)")

    @task(5)
    def conversions(self) -> None:
        """Some exposed units convert (typed events, several experiments in one body)."""
        picked = random.sample(list(self.exposed), min(EVENT_BATCH // 5, len(self.exposed)))
        if not picked:
            return
        events = [payloads.conversion(e, u) for e, u, _ in picked]
        self._post(routes.EVENTS, payloads.events(events), name="events (conversions)")

    @task(2)
    def config(self) -> None:
        """Local-evaluation clients poll the config; unchanged -> 304."""
        headers = {**self.headers, "If-None-Match": self.config_etag}
        with self.client.get(routes.CONFIG, headers=headers, name="config",
                             catch_response=True) as resp:
            if resp.status_code == 200:
                self.config_etag = resp.headers.get("ETag", "")
            elif resp.status_code != 304:
                resp.failure(f"{resp.status_code}")
