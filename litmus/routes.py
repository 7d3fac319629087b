"""API paths, shared by the server's tests, the load tests, the simulation and clients."""

from __future__ import annotations

API = "/api/v1"
EXPERIMENTS = f"{API}/experiments"
ASSIGN = f"{API}/assign"
ASSIGN_BATCH = f"{API}/assign/batch"
ASSIGNMENTS = f"{API}/assignments"
CONFIG = f"{API}/config"
CONFIG_STREAM = f"{API}/config/stream"
EVENTS = f"{API}/events"
EVENTS_EXPOSURE = f"{API}/events/exposure"
EVENTS_METRIC = f"{API}/events/metric"
OPENAPI = f"{API}/openapi.json"
HEALTHZ = "/healthz"
READYZ = "/readyz"
METRICS = "/metrics"


def experiment(exp_id: str) -> str:
    """One experiment."""
    return f"{EXPERIMENTS}/{exp_id}"


def experiment_action(exp_id: str, action: str) -> str:
    """launch, pause, stop, history, results or results.csv of one experiment."""
    return f"{EXPERIMENTS}/{exp_id}/{action}"
