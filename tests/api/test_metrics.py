"""GET /metrics: request latency per route and status, assignments, ingest, registry, pool,
recompute; request ids; JSON logs carrying them; secrets redacted from log lines."""

from __future__ import annotations

import asyncio
import io
import logging
from collections import Counter

import orjson
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from litmus import metrics
from litmus.logs import REQUEST_ID, JsonFormatter, Redactor, RequestIdFilter, TextFormatter
from tests.conftest import ADMIN, ADMIN_SECRET, CLIENT, experiment_payload, launched

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: TestClient) -> Samples:
    """Every sample of GET /metrics keyed by (name, sorted labels)."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: a counter that never moved)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_is_public_prometheus_text(client: TestClient) -> None:
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    names = {f.name for f in text_string_to_metric_families(text)}
    for name in ("litmus_http_request_duration_seconds", "litmus_http_requests",
                 "litmus_http_requests_in_flight", "litmus_assignments",
                 "litmus_db_pool_connections", "litmus_db_pool_max_connections",
                 "litmus_registry_config_info", "litmus_registry_experiments",
                 "litmus_registry_propagation_seconds", "litmus_ingest_buffer_events",
                 "litmus_ingest_flush_duration_seconds", "litmus_ingest_batch_events",
                 "litmus_recompute_duration_seconds", "litmus_recompute_leader",
                 "litmus_db_up", "process_cpu_seconds"):
        assert name in names, name


async def test_requests_counted_per_route_name_and_status(client: TestClient) -> None:
    await launched(client, "lat")
    before = await scrape(client)
    for i in range(7):
        r = await client.post("/api/v1/assign", json={"experiment": "lat", "unit_id": f"u{i}"},
                              headers=CLIENT)
        assert r.status == 200
    r = await client.post("/api/v1/assign", json={"experiment": "nope", "unit_id": "u"},
                          headers=CLIENT)
    assert r.status == 404
    r = await client.post("/api/v1/assign", json={"unit_id": "u"}, headers=CLIENT)
    assert r.status == 422
    assert (await client.get("/no/such/path/123")).status == 404
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("litmus_http_requests_total", route="client.assign", status="200") == 7
    assert delta("litmus_http_requests_total", route="client.assign", status="404") == 1
    assert delta("litmus_http_requests_total", route="client.assign", status="422") == 1
    # The histogram agrees with the counter, its buckets are cumulative and end at +Inf.
    count = value(after, "litmus_http_request_duration_seconds_count",
                  route="client.assign", status="200")
    assert count == value(after, "litmus_http_requests_total", route="client.assign", status="200")
    buckets = [value(after, "litmus_http_request_duration_seconds_bucket", route="client.assign",
                     status="200", le=repr(float(b))) for b in metrics.LATENCY_BUCKETS]
    assert buckets == sorted(buckets)
    assert value(after, "litmus_http_request_duration_seconds_bucket", route="client.assign",
                 status="200", le="+Inf") == count
    assert value(after, "litmus_http_request_duration_seconds_sum",
                 route="client.assign", status="200") > 0
    # Unknown paths are one label value, never the path itself (unbounded cardinality).
    assert delta("litmus_http_requests_total", route="unmatched", status="404") == 1
    assert not any("/no/such" in str(k) for k in after)


async def test_assignments_counted_per_experiment_and_variant(client: TestClient) -> None:
    await launched(client, "cnt")
    before = await scrape(client)
    served: Counter[str] = Counter()
    for i in range(40):
        r = await client.post("/api/v1/assign", json={"experiment": "cnt", "unit_id": f"u{i}"},
                              headers=CLIENT)
        served[(await r.json())["variant"]] += 1
    r = await client.post("/api/v1/assign/batch",
                          json={"experiment": "cnt", "unit_ids": [f"b{i}" for i in range(25)]},
                          headers=CLIENT)
    for a in (await r.json())["assignments"]:
        served[a["variant"]] += 1
    after = await scrape(client)
    for variant in ("model_a", "model_b", "model_c"):
        got = (value(after, "litmus_assignments_total", experiment="cnt", variant=variant)
               - value(before, "litmus_assignments_total", experiment="cnt", variant=variant))
        assert got == served[variant], variant
    assert sum(served.values()) == 65


async def test_null_assignments_counted_under_none(client: TestClient) -> None:
    resp = await client.post("/api/v1/experiments", json=experiment_payload(key="drafty"),
                             headers=ADMIN)
    assert resp.status == 201
    for _ in range(200):
        r = await client.post("/api/v1/assign", json={"experiment": "drafty", "unit_id": "u"},
                              headers=CLIENT)
        if r.status == 200:
            break
        await asyncio.sleep(0.01)
    assert (await r.json())["reason"] == "draft"
    after = await scrape(client)
    assert value(after, "litmus_assignments_total", experiment="drafty",
                 variant=metrics.NO_VARIANT) >= 1


async def test_registry_pool_and_propagation(client: TestClient) -> None:
    exp = await launched(client, "reg")
    samples = await scrape(client)
    cfg = await client.get("/api/v1/config", headers=CLIENT)
    etag = cfg.headers["ETag"].strip('"')
    assert value(samples, "litmus_registry_config_info", version=etag) == 1
    assert value(samples, "litmus_registry_experiments", status="running") == 1
    busy = value(samples, "litmus_db_pool_connections", state="busy")
    idle = value(samples, "litmus_db_pool_connections", state="idle")
    assert busy + idle >= 1
    assert value(samples, "litmus_db_pool_max_connections") >= busy + idle
    assert value(samples, "litmus_db_up") == 1
    # Create and launch were each committed and then served by this process.
    assert value(samples, "litmus_registry_propagation_seconds_count") >= 2
    assert exp["status"] == "running"


async def test_recompute_lag_and_leader(client: TestClient) -> None:
    await launched(client, "rec")
    for _ in range(100):
        samples = await scrape(client)
        if value(samples, "litmus_recompute_passes_total") >= 1:
            break
        await asyncio.sleep(0.1)
    assert value(samples, "litmus_recompute_leader") == 1
    assert value(samples, "litmus_recompute_passes_total") >= 1
    assert value(samples, "litmus_recompute_duration_seconds_count") >= 1
    assert value(samples, "litmus_recompute_last_success_timestamp_seconds") > 0
    age = value(samples, "litmus_results_snapshot_age_seconds")
    assert 0 <= age < 60


async def test_ingest_buffer_and_outcomes(client: TestClient) -> None:
    await launched(client, "ing")
    before = await scrape(client)
    events = [{"experiment": "ing", "unit_id": f"u{i}", "variant": "model_a"} for i in range(30)]
    r = await client.post("/api/v1/events/exposure", json={"events": events}, headers=CLIENT)
    assert r.status == 202
    after = await scrape(client)
    stored = (value(after, "litmus_ingest_events_total", outcome="stored_exposures")
              - value(before, "litmus_ingest_events_total", outcome="stored_exposures"))
    assert stored == 30
    # 202 means durable: nothing of it is still buffered.
    assert value(after, "litmus_ingest_buffer_events") == 0
    assert value(after, "litmus_ingest_database_up") == 1
    assert value(after, "litmus_ingest_flushes_total") > value(before, "litmus_ingest_flushes_total")
    assert (value(after, "litmus_ingest_batch_events_sum")
            - value(before, "litmus_ingest_batch_events_sum")) == 30
    assert (value(after, "litmus_ingest_flush_duration_seconds_count")
            > value(before, "litmus_ingest_flush_duration_seconds_count"))
    assert (value(after, "litmus_events_accepted_total", type="exposure")
            - value(before, "litmus_events_accepted_total", type="exposure")) == 30
    r = await client.post("/api/v1/events/exposure", headers=CLIENT, json={"events": [
        {"experiment": "ing", "unit_id": "u", "variant": "nope"}, events[0]]})
    assert r.status == 422
    last = await scrape(client)
    assert (value(last, "litmus_events_rejected_total", reason="invalid")
            - value(after, "litmus_events_rejected_total", reason="invalid")) == 1


async def test_request_id_is_answered_and_passed_through(client: TestClient) -> None:
    a = await client.get("/healthz")
    b = await client.get("/healthz")
    assert a.headers["X-Request-Id"] and a.headers["X-Request-Id"] != b.headers["X-Request-Id"]
    given = await client.get("/healthz", headers={"X-Request-Id": "lb-1234.abc"})
    assert given.headers["X-Request-Id"] == "lb-1234.abc"
    # Anything that could forge log lines or carry a secret is replaced, not echoed.
    for bad in ("x" * 200, "a b", "evil\"}{", ADMIN_SECRET + "\t"):
        r = await client.get("/healthz", headers={"X-Request-Id": bad})
        assert r.headers["X-Request-Id"] != bad
    # Errors carry it too.
    r = await client.get("/api/v1/experiments")
    assert r.status == 401 and r.headers["X-Request-Id"]


def test_json_log_lines_carry_the_request_id() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(Redactor([ADMIN_SECRET])))
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("litmus.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = REQUEST_ID.set("req-42")
        try:
            logger.warning("flush took %d ms", 12, extra={"route": "client.assign"})
        finally:
            REQUEST_ID.reset(token)
        logger.warning("outside any request")
    finally:
        logger.removeHandler(handler)
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["request_id"] == "req-42"
    assert first["msg"] == "flush took 12 ms" and first["route"] == "client.assign"
    assert first["level"] == "WARNING" and first["logger"] == "litmus.test.json"
    assert "request_id" not in second


def test_redactor_removes_secrets_bearer_values_and_url_passwords() -> None:
    r = Redactor([ADMIN_SECRET])
    line = r(f"token {ADMIN_SECRET} header Authorization: Bearer abc.def-123 "
             "dsn postgresql://litmus:hunter2@db:5432/litmus")
    assert ADMIN_SECRET not in line and "abc.def-123" not in line and "hunter2" not in line
    assert "postgresql://litmus:[redacted]@db:5432/litmus" in line
    record = logging.LogRecord("x", logging.INFO, "f", 1, "secret %s", (ADMIN_SECRET,), None)
    assert ADMIN_SECRET not in TextFormatter(r).format(record)


def test_malformed_requests_are_one_info_line_not_a_traceback() -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    from litmus.logs import MalformedRequestFilter

    try:
        raise BadHttpMessage("Invalid header value char:\n\n  b'X: \\x00'")
    except BadHttpMessage as exc:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, "f", 1,
                                   "Error handling request from %s", ("127.0.0.1",),
                                   (type(exc), exc, exc.__traceback__))
    assert MalformedRequestFilter().filter(record)
    line = TextFormatter(Redactor()).format(record)
    assert record.levelname == "INFO" and "Traceback" not in line
    assert "malformed HTTP request with 400: Invalid header value char:" in line
    other = logging.LogRecord("aiohttp.server", logging.ERROR, "f", 1, "boom", (),
                              (RuntimeError, RuntimeError("x"), None))
    assert MalformedRequestFilter().filter(other) and other.levelname == "ERROR"
