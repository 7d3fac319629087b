"""Prometheus metrics of one Litmus process.

Hot-path counters (requests, assignments, events) are plain Python integers in dicts, bumped
from the event loop's single thread: a dict lookup and an add, no lock and no label
resolution. They are turned into Prometheus families only when /metrics is scraped, by a
custom collector. Rare observations (flushes, recompute passes, propagation) use ordinary
prometheus-client objects. Values that already live somewhere (pool size, registry version,
recompute state, ingest buffer) are read at scrape time from the sources registered with
`watch_app`, so nobody has to push them.

Other modules call the small functions below (`count_assignment`, `events_accepted`,
`events_rejected`, `ingest_flushed`, `recompute_finished`,
`config_propagated`); each is safe to call from anywhere in the event loop thread.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; the assign path answers in well under a millisecond, admin routes in tens.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# A null assignment (draft, paused, ramp, targeting, ...) is counted under this variant label;
# it can never collide with a real variant key, which is a slug starting with [a-z0-9].
NO_VARIANT = "(none)"

PROM_REGISTRY = CollectorRegistry(auto_describe=True)


class Hist:
    """One latency histogram as plain numbers: non-cumulative bucket counts and a sum."""

    __slots__ = ("counts", "total")

    def __init__(self, n_buckets: int) -> None:
        self.counts = [0] * (n_buckets + 1)  # the last slot is +Inf
        self.total = 0.0


class RequestStats:
    """Latency histograms per (route name, status); `observe` is a lookup, a bisect and adds."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.hists: dict[tuple[str, int], Hist] = {}
        self.in_flight = 0

    def hist(self, route: str, status: int) -> Hist:
        """The histogram of (route, status), made at its first use; it lives as long as this
        object, so a caller may keep it and `add` to it (the fast lane's usual answer)."""
        key = (route, status)
        h = self.hists.get(key)
        if h is None:
            h = self.hists[key] = Hist(len(self.bounds))
        return h

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        h = self.hists.get((route, status)) or self.hist(route, status)
        # Prometheus buckets are "less than or equal": bisect_left finds the first bound >= x.
        h.counts[bisect_left(self.bounds, seconds)] += 1
        h.total += seconds


REQUESTS = RequestStats()
ASSIGNMENTS: defaultdict[tuple[str, str], int] = defaultdict(int)
EVENTS_ACCEPTED: defaultdict[str, int] = defaultdict(int)
EVENTS_REJECTED: defaultdict[str, int] = defaultdict(int)
# (experiment key, metric, action) -> guardrail trips this process recorded (the leader's).
GUARDRAIL_TRIPS: defaultdict[tuple[str, str, str], int] = defaultdict(int)

INGEST_FLUSH_SECONDS = Histogram(
    "litmus_ingest_flush_duration_seconds",
    "Time of one group commit (COPY of a batch and its commit)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=PROM_REGISTRY,
)
INGEST_BATCH_EVENTS = Histogram(
    "litmus_ingest_batch_events",
    "Events written by one group commit",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000),
    registry=PROM_REGISTRY,
)
RECOMPUTE_SECONDS = Histogram(
    "litmus_recompute_duration_seconds",
    "Time of one recompute pass over every experiment (leader only)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=PROM_REGISTRY,
)
PROPAGATION_SECONDS = Histogram(
    "litmus_registry_propagation_seconds",
    "From an experiment change's commit to this process serving it (LISTEN/NOTIFY path)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=PROM_REGISTRY,
)

@dataclass
class _Recompute:
    """The last recompute pass this process ran."""

    last_finished: float | None = None  # time.time() of the last successful pass
    failures: int = 0
    last_checkpoint: float | None = None  # time.time() of the last results checkpoint
    checkpoint_failures: int = 0


RECOMPUTE = _Recompute()


# -- calls from other modules -----------------------------------------------------------------


def count_assignment(experiment: str, variant: str | None) -> None:
    """One assignment answered (variant None: not in the experiment)."""
    ASSIGNMENTS[(experiment, variant or NO_VARIANT)] += 1


def events_accepted(kind: str, n: int = 1) -> None:
    """`n` events of `kind` (exposure, metric, conversion) were acknowledged (202)."""
    EVENTS_ACCEPTED[kind] += n


def events_rejected(reason: str, n: int = 1) -> None:
    """`n` events were refused; `reason` is a short stable code (unknown_experiment, ...)."""
    EVENTS_REJECTED[reason] += n


def guardrail_tripped(experiment: str, metric: str, action: str) -> None:
    """A guardrail tripped (recorded once per treatment and metric)."""
    GUARDRAIL_TRIPS[(experiment, metric, action)] += 1


def ingest_flushed(events: int, seconds: float) -> None:
    """One group commit of `events` events took `seconds`."""
    INGEST_BATCH_EVENTS.observe(events)
    INGEST_FLUSH_SECONDS.observe(seconds)


def recompute_finished(seconds: float, ok: bool = True) -> None:
    """The recompute leader finished one pass in `seconds`."""
    if ok:
        RECOMPUTE_SECONDS.observe(seconds)
        RECOMPUTE.last_finished = time.time()
    else:
        RECOMPUTE.failures += 1


def checkpoint_finished(ok: bool) -> None:
    """The recompute leader wrote (or failed to write) its per-unit checkpoint."""
    if ok:
        RECOMPUTE.last_checkpoint = time.time()
    else:
        RECOMPUTE.checkpoint_failures += 1


def config_propagated(seconds: float) -> None:
    """An experiment change committed `seconds` ago is now served by this process."""
    PROPAGATION_SECONDS.observe(max(seconds, 0.0))


# -- scrape-time sources ----------------------------------------------------------------------


@dataclass
class Sources:
    """Callables read at scrape time; each returns None when its part is not running."""

    pool: Callable[[], tuple[int, int, int] | None] = lambda: None  # (size, idle, max)
    registry: Callable[[], tuple[str, dict[str, int], int] | None] = lambda: None
    recompute: Callable[[], tuple[bool, float, int] | None] = lambda: None  # leader, last s, ticks
    # (buffered events, buffered bytes, database reachable, the ingest service's counters)
    ingest: Callable[[], tuple[int, int, bool, dict[str, int]] | None] = lambda: None
    snapshot_age_s: float | None = None  # refreshed by the /metrics handler from the database
    db_up: bool | None = None
    extra: list[Callable[[], Iterable[Metric]]] = field(default_factory=list)


SOURCES = Sources()


def _family_requests() -> Iterator[Metric]:
    bounds = REQUESTS.bounds
    hist = HistogramMetricFamily(
        "litmus_http_request_duration_seconds",
        "Time from the request reaching the app to its answer, per route name and status",
        labels=("route", "status"),
    )
    total = CounterMetricFamily(
        "litmus_http_requests", "Requests answered, per route name and status",
        labels=("route", "status"),
    )
    for (route, status), h in sorted(REQUESTS.hists.items()):
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip(bounds, h.counts, strict=False):
            cumulative += n
            buckets.append((_le(bound), cumulative))
        cumulative += h.counts[-1]
        buckets.append(("+Inf", cumulative))
        labels = (route, str(status))
        hist.add_metric(labels, buckets, h.total)
        total.add_metric(labels, cumulative)
    yield hist
    yield total
    yield GaugeMetricFamily(
        "litmus_http_requests_in_flight", "Requests being handled right now",
        value=REQUESTS.in_flight,
    )


def _le(bound: float) -> str:
    return repr(float(bound))


def _family_counters() -> Iterator[Metric]:
    a = CounterMetricFamily(
        "litmus_assignments", "Assignments answered, per experiment key and variant "
        f"('{NO_VARIANT}': the unit is not in the experiment)", labels=("experiment", "variant"),
    )
    for (exp, variant), n in sorted(ASSIGNMENTS.items()):
        a.add_metric((exp, variant), n)
    yield a
    acc = CounterMetricFamily(
        "litmus_events_accepted", "Events acknowledged (durable), per type", labels=("type",)
    )
    for kind, n in sorted(EVENTS_ACCEPTED.items()):
        acc.add_metric((kind,), n)
    yield acc
    rej = CounterMetricFamily(
        "litmus_events_rejected", "Events refused, per reason", labels=("reason",)
    )
    for reason, n in sorted(EVENTS_REJECTED.items()):
        rej.add_metric((reason,), n)
    yield rej
    trips = CounterMetricFamily(
        "litmus_guardrail_trips", "Guardrail trips recorded by this process (the recompute "
        "leader), per experiment key, metric and action", labels=("experiment", "metric", "action"),
    )
    for labels, n in sorted(GUARDRAIL_TRIPS.items()):
        trips.add_metric(labels, n)
    yield trips


def _family_sources() -> Iterator[Metric]:
    s = SOURCES
    ingest = s.ingest()
    if ingest is not None:
        events, size, up, counters = ingest
        yield GaugeMetricFamily("litmus_ingest_buffer_events",
                                "Events accepted into the buffer and not yet committed",
                                value=events)
        yield GaugeMetricFamily("litmus_ingest_buffer_bytes",
                                "Approximate size of the buffered events", value=size)
        yield GaugeMetricFamily("litmus_ingest_database_up",
                                "0 while the ingest writer cannot reach PostgreSQL",
                                value=1.0 if up else 0.0)
        c = CounterMetricFamily("litmus_ingest_events",
                                "Events through the ingest buffer, per outcome "
                                "(stored_exposures, stored_metrics, duplicates, refused_full, ...)",
                                labels=("outcome",))
        for outcome in sorted(k for k in counters if k not in ("flushes", "retries")):
            c.add_metric((outcome,), counters[outcome])
        yield c
        yield CounterMetricFamily("litmus_ingest_flushes", "Group commits that succeeded",
                                  value=counters.get("flushes", 0))
        yield CounterMetricFamily("litmus_ingest_flush_retries",
                                  "Group commits retried after a transient database error",
                                  value=counters.get("retries", 0))
    pool = s.pool()
    if pool is not None:
        size, idle, max_size = pool
        conns = GaugeMetricFamily("litmus_db_pool_connections",
                                  "Connections of this process's asyncpg pool", labels=("state",))
        conns.add_metric(("busy",), size - idle)
        conns.add_metric(("idle",), idle)
        yield conns
        yield GaugeMetricFamily("litmus_db_pool_max_connections",
                                "The pool's upper bound", value=max_size)
    if s.db_up is not None:
        yield GaugeMetricFamily("litmus_db_up", "1 when the database answered the last scrape",
                                value=1.0 if s.db_up else 0.0)
    reg = s.registry()
    if reg is not None:
        version, by_status, reloads = reg
        info = InfoMetricFamily("litmus_registry_config",
                                "The config version (ETag of /api/v1/config) this process serves")
        info.add_metric((), {"version": version})
        yield info
        exps = GaugeMetricFamily("litmus_registry_experiments",
                                 "Experiments held in memory, per status", labels=("status",))
        for status in ("draft", "running", "paused", "stopped"):
            exps.add_metric((status,), by_status.get(status, 0))
        yield exps
        yield CounterMetricFamily("litmus_registry_full_reloads",
                                  "Full reloads of the registry (start, safety net, reconnect)",
                                  value=reloads)
    rec = s.recompute()
    if rec is not None:
        leader, last_s, ticks = rec
        yield GaugeMetricFamily("litmus_recompute_leader",
                                "1 when this process holds the recompute lock",
                                value=1.0 if leader else 0.0)
        yield GaugeMetricFamily("litmus_recompute_last_duration_seconds",
                                "Duration of the last recompute pass of this process",
                                value=last_s)
        yield CounterMetricFamily("litmus_recompute_passes",
                                  "Recompute passes this process ran", value=ticks)
    if RECOMPUTE.last_finished is not None:
        yield GaugeMetricFamily("litmus_recompute_last_success_timestamp_seconds",
                                "Unix time of this process's last successful recompute pass",
                                value=RECOMPUTE.last_finished)
    yield CounterMetricFamily("litmus_recompute_failures",
                              "Recompute passes that failed", value=RECOMPUTE.failures)
    if RECOMPUTE.last_checkpoint is not None:
        yield GaugeMetricFamily("litmus_recompute_last_checkpoint_timestamp_seconds",
                                "Unix time of this process's last per-unit state checkpoint",
                                value=RECOMPUTE.last_checkpoint)
    yield CounterMetricFamily("litmus_recompute_checkpoint_failures",
                              "Per-unit state checkpoints that failed",
                              value=RECOMPUTE.checkpoint_failures)
    if s.snapshot_age_s is not None:
        yield GaugeMetricFamily(
            "litmus_results_snapshot_age_seconds",
            "Age of the stalest results snapshot of a running experiment (recompute lag)",
            value=s.snapshot_age_s,
        )
    for fn in s.extra:
        yield from fn()


class _LitmusCollector(Collector):
    """Turns the plain counters and the scrape-time sources into metric families."""

    def collect(self) -> Iterable[Metric]:
        """Every Litmus family, computed now."""
        yield from _family_requests()
        yield from _family_counters()
        yield from _family_sources()

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families depend on what is running (no name clash checks)."""
        return []


PROM_REGISTRY.register(_LitmusCollector())
ProcessCollector(registry=PROM_REGISTRY)
PlatformCollector(registry=PROM_REGISTRY)


def exposition() -> bytes:
    """The whole registry in the Prometheus text format."""
    return generate_latest(PROM_REGISTRY)


def reset_sources() -> None:
    """Forget the scrape-time sources (an app is shutting down)."""
    SOURCES.pool = lambda: None
    SOURCES.registry = lambda: None
    SOURCES.recompute = lambda: None
    SOURCES.ingest = lambda: None
    SOURCES.snapshot_age_s = None
    SOURCES.db_up = None
    SOURCES.extra.clear()
