"""Segments: exposure attributes are stored and checked, and GET .../results?segment=KEY gives
per segment exactly the results of an experiment that received that segment's units alone
(same events through the real fold and recompute), then `other` past the tracked values and
`unset`; with the heterogeneity test across segments."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from litmus.app import create_app
from litmus.core.stats import cochran_q
from litmus.keys import RECOMPUTE
from litmus.services import segments as segments_service
from litmus.settings import Settings
from tests.conftest import ADMIN, CLIENT, launched

ARMS = [{"key": "control", "weight": 0.34, "is_control": True},
        {"key": "model_b", "weight": 0.33}, {"key": "model_c", "weight": 0.33}]
METRICS = {"primary": "revenue",
           "definitions": {"revenue": {"direction": "increase"},
                           "spend": {"direction": "decrease", "cap": 5.0}}}
COUNTRIES = ["DE", "FR", "US"]
T0 = int(time.time() * 1000) - 3_600_000
LIFT_FIELDS = ("metric", "control", "treatment", "control_mean", "treatment_mean", "abs_lift",
               "abs_ci", "rel_lift", "rel_ci", "p_value", "p_value_adjusted",
               "anytime_abs_ci", "anytime_p_value", "chance_to_beat", "risk_control",
               "risk_treatment", "control_units", "treatment_units", "se", "df", "reason")


@pytest.fixture
async def app_client(settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(replace(settings, recompute_interval_s=3600)))


def unit_events(key: str, i: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """A unit's events: its exposure with a country (none for every 7th unit), for some a
    second exposure elsewhere (it must not count: a unit's attributes are its first
    exposure's), revenue whose effect depends on the country, and capped spend."""
    country = COUNTRIES[i % 3]
    arm = (i // 3) % 3
    unit = f"u{i}"
    first: dict[str, Any] = {"type": "exposure", "experiment": key, "unit_id": unit,
                             "variant": ARMS[arm]["key"], "ts": T0 + i * 10}
    if i % 7:
        first["attributes"] = {"country": country, "device": "ios" if i % 2 else "web"}
    events = [first]
    if i % 5 == 0:
        events.append({**first, "ts": first["ts"] + 5, "attributes": {"country": "ZZ"}})
    effect = {"DE": 2.0, "FR": 0.0, "US": -1.0}[country] * arm
    for _ in range(1 + i % 3):
        events.append({"type": "metric", "experiment": key, "unit_id": unit, "metric": "revenue",
                       "value": float(rng.normal(10 + effect, 3))})
    if i % 2:
        events.append({"type": "metric", "experiment": key, "unit_id": unit, "metric": "spend",
                       "value": float(rng.exponential(3))})
    return events


async def send(c: TestClient, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 5000):
        resp = await c.post("/api/v1/events", json={"events": events[start:start + 5000]},
                            headers=CLIENT)
        assert resp.status == 202, (await resp.text())[:500]


async def get(c: TestClient, path: str, status: int = 200) -> Any:
    resp = await c.get(path, headers=ADMIN)
    assert resp.status == status, (await resp.text())[:500]
    return await resp.json()


def approx(value: Any) -> Any:
    """`value` with every float compared to 1e-9 relative (and lists, dicts walked)."""
    if isinstance(value, dict):
        return {k: approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [approx(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-9, abs=1e-12)
    return value


def pick(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in LIFT_FIELDS}


async def test_each_segment_equals_an_experiment_of_its_units_alone(
        app_client: TestClient) -> None:
    c = app_client
    whole = await launched(c, key="seg", variants=ARMS, metrics=METRICS)
    alone = {country: await launched(c, key=f"seg-{country.lower()}", variants=ARMS,
                                     metrics=METRICS) for country in COUNTRIES}
    rng = np.random.default_rng(5)
    events: list[dict[str, Any]] = []
    for i in range(1800):
        mine = unit_events("seg", i, rng)
        events += mine
        if i % 7:  # the same events, into the experiment of the unit's country only
            country = COUNTRIES[i % 3]
            events += [{**e, "experiment": f"seg-{country.lower()}"} for e in mine]
    await send(c, events)
    await c.app[RECOMPUTE].tick()

    base = f"/api/v1/experiments/{whole['id']}"
    assert (await get(c, base + "/results/segments"))["keys"] == ["country", "device"]
    plain = await get(c, base + "/results")
    out = await get(c, base + "/results?segment=country")
    assert {k: v for k, v in out.items() if k != "segments"} == plain  # the snapshot, unchanged
    seg = out["segments"]
    assert seg["segment"] == "country" and seg["exploratory"] and "exploratory" in seg["warning"]
    # Values in the order their first unit arrived (u0 has none, u1 is in FR, u2 in US).
    assert [(s["kind"], s["value"]) for s in seg["segments"]] == [
        ("value", "FR"), ("value", "US"), ("value", "DE"), ("unset", None)]
    for s in seg["segments"][:3]:
        ref = await get(c, f"/api/v1/experiments/{alone[s['value']]['id']}/results")
        # Equal up to the order of floating-point sums (the fold adds per event, SQL per unit).
        assert len(s["lift"]) == len(ref["lift"])
        for a, b in zip(s["lift"], ref["lift"], strict=True):
            assert pick(a) == approx(pick(b)), s["value"]
        assert s["exposures"] == {k: v for k, v in ref["exposures"].items() if k != "timeline"}
        assert s["metrics"] == approx(ref["metrics"])
        assert s["srm"]["p_value"] == pytest.approx(ref["srm"]["p_value"], rel=1e-12)
    # The segments' units add up to the experiment's.
    assert sum(s["units"] for s in seg["segments"]) == plain["exposures"]["total_units"] == 1800
    # Heterogeneity: Cochran's Q over the value and unset segments' absolute lifts.
    het = {(h["metric"], h["treatment"]): h for h in seg["heterogeneity"]}
    for (metric, treatment), h in het.items():
        rows = [next(r for r in s["lift"] if (r["metric"], r["treatment"]) == (metric, treatment))
                for s in seg["segments"]]
        want = cochran_q([r["abs_lift"] for r in rows], [r["se"] for r in rows])
        assert h["q"] == pytest.approx(want.q, rel=1e-12) and h["df"] == want.df
    # The effect on revenue differs by country (+2 per arm in DE, 0 in FR, -1 in US).
    assert het[("revenue", "model_c")]["p_value"] < 1e-6


async def test_values_past_the_tracked_count_are_other(
        app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments_service, "MAX_SEGMENT_VALUES", 2)
    c = app_client
    exp = await launched(c, key="seg", variants=ARMS, metrics=METRICS)
    rng = np.random.default_rng(6)
    await send(c, [e for i in range(300) for e in unit_events("seg", i, rng)])
    await c.app[RECOMPUTE].tick()
    out = await get(c, f"/api/v1/experiments/{exp['id']}/results?segment=country")
    got = {(s["kind"], s["value"]): s["units"] for s in out["segments"]["segments"]}
    # FR and US arrived first (units 1 and 2); DE units are `other`; every 7th unit has none.
    assert list(got) == [("value", "FR"), ("value", "US"), ("other", None), ("unset", None)]
    unset = sum(1 for i in range(300) if i % 7 == 0)
    de = sum(1 for i in range(300) if i % 7 and i % 3 == 0)
    assert got[("unset", None)] == unset and got[("other", None)] == de


async def test_bad_segments_and_attributes_are_refused_and_store_nothing(
        app_client: TestClient) -> None:
    c = app_client
    exp = await launched(c, key="seg", variants=ARMS, metrics=METRICS)
    base = f"/api/v1/experiments/{exp['id']}"
    await c.app[RECOMPUTE].tick()
    await send(c, [{"type": "exposure", "experiment": "seg", "unit_id": "ok",
                    "variant": "control", "attributes": {"country": "DE"}}])
    await c.app[RECOMPUTE].tick()
    body = await get(c, base + "/results?segment=Country!", 422)
    assert "segment" in body["error"]["fields"]
    body = await get(c, base + "/results?segment=plan", 422)
    assert "country" in body["error"]["message"] and "plan" in body["error"]["message"]
    bad_attributes = [
        ({"country": 49}, "must be a string"),
        ({f"a{i}": "x" for i in range(6)}, "at most 5 attributes"),
        ({"Country": "DE"}, "attribute name"),
        ({"country": ""}, "non-empty string"),
        ({"country": "x" * 129}, "at most 128"),
        (["DE"], "must be an object"),
    ]
    for attributes, why in bad_attributes:
        batch = [{"type": "exposure", "experiment": "seg", "unit_id": "a", "variant": "control"},
                 {"type": "exposure", "experiment": "seg", "unit_id": "b", "variant": "control",
                  "attributes": attributes}]
        resp = await c.post("/api/v1/events", json={"events": batch}, headers=CLIENT)
        assert resp.status == 422, attributes
        err = (await resp.json())["error"]
        assert why in err["fields"]["events[1].attributes"], (attributes, err)
    # A metric event has no attributes.
    resp = await c.post("/api/v1/events/metric", headers=CLIENT, json={
        "experiment": "seg", "unit_id": "a", "metric": "revenue", "value": 1,
        "attributes": {"country": "DE"}})
    assert resp.status == 422
    await c.app[RECOMPUTE].tick()
    snap = await get(c, base + "/results")
    assert snap["exposures"]["total_units"] == 1  # only "ok"


async def test_events_after_a_stop_are_left_out_as_the_fold_leaves_them_out(
        app_client: TestClient) -> None:
    """After a stop with a winner every unit gets the winner; the fold leaves those events out
    of the analysis, and so does the breakdown: segments still add up to the snapshot's units
    and keep their numbers."""
    c = app_client
    exp = await launched(c, key="seg", variants=ARMS, metrics=METRICS)
    rng = np.random.default_rng(8)
    await send(c, [e for i in range(600) for e in unit_events("seg", i, rng)])
    await c.app[RECOMPUTE].tick()
    base = f"/api/v1/experiments/{exp['id']}"
    before = (await get(c, base + "/results?segment=country"))["segments"]
    resp = await c.post(f"{base}/stop", json={"winner": "model_b"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await c.app[RECOMPUTE].tick()  # pins the stop for the fold
    late = [{"type": "exposure", "experiment": "seg", "unit_id": f"late{i}",
             "variant": "model_b", "attributes": {"country": "DE"}} for i in range(300)]
    late += [{"type": "metric", "experiment": "seg", "unit_id": f"late{i}", "metric": "revenue",
              "value": 100.0} for i in range(300)]
    await send(c, late)
    await c.app[RECOMPUTE].tick()
    out = await get(c, base + "/results?segment=country")
    assert out["exposures"]["total_units"] == 600
    after = out["segments"]
    assert sum(s["units"] for s in after["segments"]) == 600
    assert [(s["value"], s["units"]) for s in after["segments"]] == [
        (s["value"], s["units"]) for s in before["segments"]]
    for a, b in zip(after["segments"], before["segments"], strict=True):
        assert [pick(r) for r in a["lift"]] == approx([pick(r) for r in b["lift"]])
