"""Covariates for variance reduction: declared on the experiment, sent on exposures, stored by
position; every mistake a clear 422 (or 409 after launch) that stores nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from litmus.api.covariates import _checked_row, covariate_cells
from litmus.db.events import covariate_columns
from tests.conftest import ADMIN, CLIENT, experiment_payload, launched

EXPOSURE = "/api/v1/events/exposure"
TYPED = "/api/v1/events"
METRICS = {"primary": "revenue", "covariates": ["pre_sessions", "pre_revenue"],
           "definitions": {"revenue": {"cuped": "pre_revenue"}}}


async def post(client: TestClient, path: str, body: Any) -> tuple[int, Any]:
    resp = await client.post(path, data=orjson.dumps(body),
                             headers={**CLIENT, "Content-Type": "application/json"})
    return resp.status, await resp.json()


async def test_declared_covariates_are_stored_by_position(client: TestClient,
                                                          db: asyncpg.Connection) -> None:
    exp = await launched(client, metrics=METRICS)
    assert exp["metrics"]["covariates"] == ["pre_sessions", "pre_revenue"]
    assert exp["metrics"]["definitions"]["revenue"] == {"cuped": "pre_revenue"}
    events = [
        {"experiment": "ranker", "unit_id": "a", "variant": "model_a",
         "covariates": {"pre_sessions": 12, "pre_revenue": 31.5}},
        {"experiment": "ranker", "unit_id": "b", "variant": "model_b",
         "covariates": {"pre_revenue": 4}},
        {"experiment": "ranker", "unit_id": "c", "variant": "model_b",
         "covariates": {"pre_sessions": 2}},
        {"experiment": "ranker", "unit_id": "d", "variant": "model_c", "covariates": {}},
        {"experiment": "ranker", "unit_id": "e", "variant": "model_c"},
    ]
    status, body = await post(client, EXPOSURE, {"events": events})
    assert status == 202, body
    rows = {r["unit_id"]: stored(r) for r in await db.fetch(f"SELECT unit_id, {COV} FROM exposures")}
    assert rows == {"a": [12.0, 31.5], "b": [None, 4.0], "c": [2.0], "d": None, "e": None}
    # The typed endpoint takes them on exposures too.
    status, body = await post(client, TYPED, {"type": "exposure", "experiment": "ranker",
                                              "unit_id": "f", "variant": "model_a",
                                              "covariates": {"pre_revenue": 1}})
    assert status == 202, body


async def test_wrong_covariates_are_refused_and_nothing_is_stored(
        client: TestClient, db: asyncpg.Connection) -> None:
    await launched(client, metrics=METRICS)
    ok = {"experiment": "ranker", "unit_id": "ok", "variant": "model_a"}
    cases = [
        ({"pre_visits": 3}, "unknown covariate 'pre_visits'"),
        ({"pre_sessions": "12"}, "pre_sessions: must be a finite number"),
        ({"pre_sessions": True}, "pre_sessions: must be a finite number"),
        ([1, 2], "must be an object"),
        ({f"c{i}": 1 for i in range(6)}, "at most 5 covariates"),
    ]
    for cov, message in cases:
        status, body = await post(client, EXPOSURE, {"events": [
            ok, {"experiment": "ranker", "unit_id": "u", "variant": "model_a",
                 "covariates": cov}]})
        assert status == 422, (cov, body)
        assert message in body["error"]["fields"]["events[1].covariates"], body
    # Metric events carry no covariates.
    status, body = await post(client, TYPED, {"type": "metric", "experiment": "ranker",
                                              "unit_id": "u", "metric": "revenue", "value": 1,
                                              "covariates": {"pre_sessions": 1}})
    assert status == 422 and body["error"]["fields"]["covariates"] == "unknown field", body
    assert await db.fetchval("SELECT count(*) FROM exposures") == 0


async def test_the_declaration_is_checked(client: TestClient) -> None:
    bad = [
        ({"covariates": ["a", "a"]}, "metrics.covariates"),
        ({"covariates": ["a", "b", "c", "d", "e", "f"]}, "metrics.covariates"),
        ({"covariates": ["Pre Sessions"]}, "metrics.covariates[0]"),
        ({"covariates": ["a"], "definitions": {"revenue": {"cuped": "b"}}},
         "metrics.definitions.revenue.cuped"),
        ({"correction": "bonferroni"}, "metrics.correction"),
    ]
    for metrics, field in bad:
        resp = await client.post("/api/v1/experiments", json=experiment_payload(metrics=metrics),
                                 headers=ADMIN)
        body = await resp.json()
        assert resp.status == 422, (metrics, body)
        assert field in body["error"]["fields"], (metrics, body)
    # Defaults are not stored: an experiment without them reads as before.
    resp = await client.post("/api/v1/experiments", json=experiment_payload(key="plain"),
                             headers=ADMIN)
    metrics = (await resp.json())["metrics"]
    assert not {"covariates", "correction", "correct_across_metrics"} & set(metrics)


async def test_after_launch_covariates_can_only_be_added(client: TestClient) -> None:
    exp = await launched(client, metrics=METRICS)
    url = f"/api/v1/experiments/{exp['id']}"
    resp = await client.patch(url, json={"metrics": {**METRICS, "covariates": ["pre_revenue",
                                                                               "pre_sessions"]}},
                              headers=ADMIN)
    assert resp.status == 409, await resp.text()
    assert "pre_sessions, pre_revenue first" in (await resp.json())["error"]["message"]
    resp = await client.patch(url, json={"metrics": {
        **METRICS, "covariates": ["pre_sessions", "pre_revenue", "tenure_days"]}}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["metrics"]["covariates"][-1] == "tenure_days"


COV = "covariate_1, covariate_2, covariate_3, covariate_4, covariate_5"


def stored(row: asyncpg.Record) -> list[float | None] | None:
    """The row's covariate columns up to the last one sent (None: none sent)."""
    values = [row[f"covariate_{i}"] for i in range(1, 6)]
    while values and values[-1] is None:
        values.pop()
    return values or None


async def wait_rows(db: asyncpg.Connection, n: int) -> list[asyncpg.Record]:
    deadline = time.monotonic() + 15
    while ((rows := await db.fetch(f"SELECT unit_id, {COV} FROM exposures ORDER BY unit_id")
           ) and len(rows) < n) or not rows:
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.02)
    return list(rows)


async def test_assign_with_log_exposure_stores_the_covariates(client: TestClient,
                                                              db: asyncpg.Connection) -> None:
    await launched(client, metrics=METRICS)
    resp = await client.post("/api/v1/assign", headers=CLIENT, json={
        "experiment": "ranker", "unit_id": "u1", "log_exposure": True,
        "covariates": {"pre_revenue": 31.5}})
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/v1/assign/batch", headers=CLIENT, json={"requests": [
        {"experiment": "ranker", "unit_id": "u2", "log_exposure": True,
         "covariates": {"pre_sessions": 3, "pre_revenue": 1}},
        {"experiment": "ranker", "unit_id": "u3", "log_exposure": True}]})
    assert resp.status == 200, await resp.text()
    rows = await wait_rows(db, 3)
    assert [(r["unit_id"], stored(r)) for r in rows] == [
        ("u1", [None, 31.5]), ("u2", [3.0, 1.0]), ("u3", None)]


async def test_assign_refuses_wrong_covariates_and_logs_nothing(
        client: TestClient, db: asyncpg.Connection) -> None:
    await launched(client, metrics=METRICS)
    cases = [
        ("/api/v1/assign", {"experiment": "ranker", "unit_id": "u", "log_exposure": True,
                            "covariates": {"tenure": 3}}, "covariates", "unknown covariate"),
        ("/api/v1/assign", {"experiment": "ranker", "unit_id": "u",
                            "covariates": {"pre_revenue": "3"}}, "covariates", "finite number"),
        # One bad item: the batch is refused before any of its exposures is logged.
        ("/api/v1/assign/batch", {"requests": [
            {"experiment": "ranker", "unit_id": "ok", "log_exposure": True,
             "covariates": {"pre_revenue": 1}},
            {"experiment": "ranker", "unit_id": "bad", "log_exposure": True,
             "covariates": {"tenure": 1}}]}, "requests[1].covariates", "unknown covariate"),
        # Covariates are per unit: the shorthand form has none.
        ("/api/v1/assign/batch", {"experiment": "ranker", "unit_ids": ["a"],
                                  "covariates": {"pre_revenue": 1}}, "covariates",
         "unknown field"),
    ]
    for path, body, field, message in cases:
        resp = await client.post(path, headers=CLIENT, json=body)
        got = await resp.json()
        assert resp.status == 422, (body, got)
        assert message in got["error"]["fields"][field], got
    await asyncio.sleep(0.3)  # time for a logged exposure to be flushed, were there one
    assert await db.fetchval("SELECT count(*) FROM exposures") == 0


@settings(max_examples=500, deadline=None)
@given(raw=st.dictionaries(
    st.sampled_from(["pre_sessions", "pre_revenue", "tenure", "Bad Name", "x"]),
    st.integers(-(2**1100), 2**1100) | st.floats() | st.booleans() | st.text(max_size=2)
    | st.none(), max_size=7) | st.none() | st.lists(st.integers(), max_size=2),
    declared=st.lists(st.sampled_from(["pre_sessions", "pre_revenue", "tenure"]), unique=True,
                      max_size=3))
def test_the_fast_path_answers_as_the_full_checks(raw: Any, declared: list[str]) -> None:
    """covariate_cells takes a shortcut for declared names with finite numbers; whatever the
    input, its answer is the one of the full checks, as the row's five covariate columns."""
    row, why = _checked_row(raw, declared)
    cells, problem = covariate_cells(raw, {name: i for i, name in enumerate(declared)})
    assert problem == why
    assert (None if cells is None else tuple(cells)) == (
        None if why is not None else covariate_columns(row))
