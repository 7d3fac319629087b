"""POST /api/v1/plan: units per arm for an MDE, the MDE for units or days, both analyses; the
answers conform to the OpenAPI document; every wrong input is a 422 naming its field; it needs
an admin token like every non-client route."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from scipy import stats

from litmus.api import openapi
from litmus.app import create_app
from litmus.settings import Settings
from tests.api.test_openapi import conforms
from tests.conftest import ADMIN, CLIENT

URL = "/api/v1/plan"


async def post(client: TestClient, body: Any, headers: dict[str, str] = ADMIN,
               status: int = 200, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = await client.post(URL, json=body, headers=headers)
    raw = await resp.read()
    assert resp.status == status, raw
    if doc is not None:
        conforms(doc, "plan.create", resp.status, resp.headers["Content-Type"], raw)
    out: dict[str, Any] = orjson.loads(raw)
    return out


async def test_rate_mde_in_units_out_for_both_analyses(client: TestClient,
                                                       settings: Settings) -> None:
    doc = openapi.build(create_app(settings))
    out = await post(client, {"metric": "rate", "rate": 0.1, "mde": 0.1,
                              "traffic_per_day": 20_000}, doc=doc)
    assert out["direction"] == "units"
    assert out["inputs"] == {"metric": "rate", "rate": 0.1, "mde": 0.1, "mde_type": "relative",
                             "variants": 2, "power": 0.8, "alpha": 0.05,
                             "traffic_per_day": 20_000, "analysis": "both"}
    fixed, seq = out["fixed"], out["sequential"]
    # Independently: (z_.975 + z_.8)² (p1 q1 + p2 q2) / δ².
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    n_ref = z ** 2 * (0.1 * 0.9 + 0.11 * 0.89) / 0.01 ** 2
    assert abs(fixed["units_per_arm"] / n_ref - 1) < 0.01
    assert fixed["total_units"] == 2 * fixed["units_per_arm"]
    assert fixed["days"] == math.ceil(fixed["total_units"] / 20_000 * 100) / 100
    assert abs(fixed["mde"]["relative"] - 0.1) < 1e-9
    assert abs(fixed["treatment"] - 0.11) < 1e-12
    assert 1.5 < seq["ratio_to_fixed"] < 2.0
    assert seq["units_per_arm"] > fixed["units_per_arm"] and seq["days"] > fixed["days"]
    assert out["correction"] == "none" and out["alpha_per_comparison"] == 0.05
    # The test app recomputes every 0.3 s: at 20,000 units/day that is under a unit a look.
    assert out["look_every_units"] is None


async def test_mean_with_treatments_is_bonferroni_and_says_so(client: TestClient) -> None:
    out = await post(client, {"metric": "mean", "mean": 10, "sd": 4, "mde": 0.5,
                              "mde_type": "absolute", "variants": 4, "analysis": "fixed"})
    assert "sequential" not in out
    assert out["correction"] == "bonferroni" and out["comparisons"] == 3
    assert abs(out["alpha_per_comparison"] - 0.05 / 3) < 1e-15
    assert any("Bonferroni" in n and "Holm" in n for n in out["notes"])
    z = stats.norm.ppf(1 - 0.05 / 3 / 2) + stats.norm.ppf(0.8)
    n_ref = z ** 2 * 2 * 16 / 0.25
    assert abs(out["fixed"]["units_per_arm"] / n_ref - 1) < 0.01
    assert out["fixed"]["total_units"] == 4 * out["fixed"]["units_per_arm"]
    assert out["fixed"]["days"] is None


async def test_units_or_days_in_the_mde_out(client: TestClient, settings: Settings) -> None:
    doc = openapi.build(create_app(settings))
    out = await post(client, {"metric": "rate", "rate": 0.1, "units_per_arm": 20_000}, doc=doc)
    assert out["direction"] == "mde"
    fixed, seq = out["fixed"], out["sequential"]
    assert fixed["units_per_arm"] == seq["units_per_arm"] == 20_000
    # The fixed MDE gives the z-test its power at 20,000 per arm (scipy, independently).
    p1, p2 = 0.1, fixed["treatment"]
    se = math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / 20_000)
    power = stats.norm.cdf((p2 - p1) / se - stats.norm.ppf(0.975))
    assert abs(power - 0.8) < 0.001
    assert abs(fixed["mde"]["relative"] - fixed["mde"]["absolute"] / 0.1) < 1e-12
    assert seq["mde"]["absolute"] > fixed["mde"]["absolute"]
    # Days: 14 days of 5,000 units over 4 variants is 17,500 per arm.
    out = await post(client, {"metric": "rate", "rate": 0.1, "days": 14, "variants": 4,
                              "traffic_per_day": 5_000, "analysis": "sequential"}, doc=doc)
    assert out["sequential"]["units_per_arm"] == 17_500 and out["sequential"]["days"] == 14.0
    # The MDE round-trips: planning for it gives back about the units.
    back = await post(client, {"metric": "rate", "rate": 0.1, "variants": 4,
                               "mde": out["sequential"]["mde"]["absolute"],
                               "mde_type": "absolute", "analysis": "sequential",
                               "traffic_per_day": 5_000})
    assert abs(back["sequential"]["units_per_arm"] / 17_500 - 1) < 0.01


async def test_looks_every_recompute_or_as_given(client: TestClient) -> None:
    base = {"metric": "rate", "rate": 0.1, "mde": 0.1, "analysis": "sequential"}
    cont = await post(client, base)
    sparse = await post(client, {**base, "look_every_units": 2_000})
    assert sparse["look_every_units"] == 2_000
    assert sparse["sequential"]["units_per_arm"] > cont["sequential"]["units_per_arm"]
    # 0.3 s recomputes at 576 M units a day: 2,000 units a look.
    busy = await post(client, {**base, "traffic_per_day": 576_000_000})
    assert abs(busy["look_every_units"] - 2_000) < 1e-6
    assert busy["sequential"]["units_per_arm"] == sparse["sequential"]["units_per_arm"]


BAD: list[tuple[dict[str, Any], str]] = [
    ({"metric": "rate", "rate": 1.5, "mde": 0.1}, "rate"),
    ({"metric": "rate", "rate": 0, "mde": 0.1}, "rate"),
    ({"metric": "rate", "mde": 0.1}, "rate"),
    ({"metric": "mean", "mean": 3, "sd": 0, "mde": 0.1}, "sd"),
    ({"metric": "mean", "mean": 3, "sd": -1, "mde": 0.1}, "sd"),
    ({"metric": "mean", "mean": 3, "mde": 0.1}, "sd"),
    ({"metric": "rate", "rate": 0.1, "sd": 2, "mde": 0.1}, "sd"),
    ({"metric": "rate", "rate": 0.1, "mde": 0.1, "units_per_arm": 1000}, "units_per_arm"),
    ({"metric": "rate", "rate": 0.1}, "mde"),
    ({"metric": "rate", "rate": 0.1, "mde": 0.1, "power": 1}, "power"),
    ({"metric": "rate", "rate": 0.1, "mde": 0.1, "power": 0}, "power"),
    ({"metric": "rate", "rate": 0.1, "mde": 0.1, "power": 0.9999}, "power"),
    ({"metric": "rate", "rate": 0.1, "mde": 0.1, "alpha": 0.7}, "alpha"),
    ({"metric": "rate", "rate": 0.1, "mde": 1e-9}, "mde"),
    ({"metric": "rate", "rate": 0.1, "units_per_arm": 10**13}, "units_per_arm"),
    ({"metric": "rate", "rate": 0.5, "units_per_arm": 10}, "units_per_arm"),
    ({"metric": "rate", "rate": 0.9, "mde": 0.2}, "mde"),
    ({"metric": "rate", "rate": 0.1, "mde": -0.2, "mde_type": "absolute"}, "mde"),
    ({"metric": "rate", "rate": 0.1, "mde": 0}, "mde"),
    ({"metric": "mean", "mean": 0, "sd": 1, "mde": 0.1}, "mde"),
    ({"metric": "rate", "rate": 0.1, "days": 7}, "traffic_per_day"),
    ({"metric": "rate", "rate": 0.1, "days": 0.0001, "traffic_per_day": 1000}, "days"),
    ({"metric": "rate", "rate": 0.1, "mde": 0.1, "variants": 1}, "variants"),
    ({"metric": "ratio", "rate": 0.1, "mde": 0.1}, "metric"),
    ({"metric": "rate", "rate": "0.1", "mde": 0.1}, "rate"),
    ({"metric": "rate", "rate": 0.1, "mde": 0.1, "analysis": "bayes"}, "analysis"),
    ({"metric": "rate", "rate": 0.1, "mde": 0.1, "lift": 2}, "lift"),
]


async def test_every_wrong_input_is_a_422_naming_its_field(client: TestClient,
                                                           settings: Settings) -> None:
    doc = openapi.build(create_app(settings))
    for body, field in BAD:
        out = await post(client, body, status=422, doc=doc)
        err = out["error"]
        assert err["code"] == "validation_error"
        assert field in err["fields"], (body, err)
        assert err["message"], body


async def test_plan_needs_an_admin_token(client: TestClient) -> None:
    body = {"metric": "rate", "rate": 0.1, "mde": 0.1}
    resp = await client.post(URL, json=body)
    assert resp.status == 401
    resp = await client.post(URL, json=body, headers=CLIENT)
    assert resp.status == 403
    resp = await client.post(URL, data=b"not json", headers=ADMIN)
    assert resp.status == 400
