"""The results page's "What if" card in the browser: a running bandit whose exposures carry the
probability they were served with; pick policies, press Estimate, and the sentences carry the
numbers the counterfactual API answers for the same request. A policy resting on a few units
with small probabilities is flagged (small ESS); custom weights that do not sum to 1 are refused
before anything is sent; a server 422 lands next to the field it names; forced and server-filled
units are explained; the bandit's arm table shows the weighted mean beside the plain one.
Desktop (1440 px) and phone (390 px, nothing scrolls sideways)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, Page
from tests.e2e.test_seed_flow import post_events
from tests.e2e.test_tradeoff import card_shot

pytestmark = pytest.mark.browser

API = "/api/v1"
# (units, probability logged with each exposure, conversion rate) per arm: model_c was served
# rarely and with a small probability, so "only model_c" rests on an ESS of about 30.
ARMS = {"model_a": (600, 0.6, 0.10), "model_b": (400, 0.35, 0.15), "model_c": (30, 0.05, 0.30)}
FILLED = 12  # exposures sent without a probability: the server fills in the weight
FORCED = 4   # exposures with probability 1 (an override): left out of the estimates
NUMBER = re.compile(r"-?\d[\d,]*\.?\d*(?:e[-+]?\d+)?")


def bandit_with_propensities(server: LiveServer) -> dict[str, Any]:
    body = {
        "name": "Model router",
        "description": "Three models behind a Thompson-sampling bandit",
        "owner_team": "platform",
        "allocation": "bandit",
        "bandit": {"update_interval_s": 0.5, "burn_in_units": 20, "min_units": 50, "floor": 0.02},
        "variants": [{"key": "model_a", "weight": 0.4}, {"key": "model_b", "weight": 0.3},
                     {"key": "model_c", "weight": 0.3}],
    }
    _, exp = server.api("POST", f"{API}/experiments", body, expect=201)
    server.api("POST", f"{API}/experiments/{exp['id']}/launch", {"ramp": 1}, expect=200)
    events: list[dict[str, Any]] = []
    for arm, (units, p, rate) in ARMS.items():
        converting = round(units * rate)
        for i in range(units):
            unit = f"{arm}-u{i}"
            events.append({"type": "exposure", "experiment": exp["id"], "unit_id": unit,
                           "variant": arm, "probability": p})
            if i < converting:
                events.append({"type": "conversion", "experiment": exp["id"], "unit_id": unit})
    for i in range(FILLED):
        events.append({"type": "exposure", "experiment": exp["id"], "unit_id": f"filled-{i}", "variant": "model_a"})
    for i in range(FORCED):
        events.append({"type": "exposure", "experiment": exp["id"], "unit_id": f"forced-{i}",
                       "variant": "model_b", "probability": 1.0})
    post_events(server, "/events", events)
    total = sum(u for u, _, _ in ARMS.values()) + FILLED + FORCED
    deadline = time.monotonic() + 30
    while True:
        status, snap = server.api("GET", f"{API}/experiments/{exp['id']}/results")
        if (status == 200 and snap["exposures"]["total_units"] == total
                and "conversion" in (snap.get("propensity") or {}).get("metrics", {})
                and snap["metrics"]["conversion"]["model_c"]["count"] == round(30 * 0.30)):
            break
        assert time.monotonic() < deadline, f"no snapshot with every event: {status} {str(snap)[:300]}"
        time.sleep(0.3)
    return dict(exp)


def numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in NUMBER.findall(text)]


def close(shown: float, exact: float) -> bool:
    """A number shown with 4 significant digits against the API's."""
    return abs(shown - exact) <= 6e-4 * max(abs(exact), 1e-9) + 1e-12


def set_checks(page: Any, on: set[str]) -> None:
    for name in ("only_model_a", "only_model_b", "only_model_c", "equal", "today", "custom"):
        box = page.get_by_test_id(f"whatif-policy-{name}")
        if box.is_enabled():
            box.set_checked(name in on)


def test_whatif_estimates_equal_the_api_and_flag_small_ess(ui: Page) -> None:
    server = ui.server
    page = ui.page
    page.set_viewport_size({"width": 1440, "height": 900})
    exp = bandit_with_propensities(server)
    sent: list[dict[str, Any]] = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data or "{}"))
            if r.method == "POST" and r.url.endswith("/counterfactual") else None)
    ui.goto(f"/experiments/{exp['id']}/results")
    card = page.get_by_test_id("whatif")
    expect(card).to_be_visible(timeout=20_000)
    expect(page.get_by_label("Metric", exact=True)).to_have_value("conversion")
    expect(card.get_by_test_id("whatif-status")).to_contain_text("Not estimated yet")

    # The bandit's arm table: the weighted mean beside the plain one, and which the lift uses.
    bandit = page.get_by_test_id("bandit-table")
    _, snap = server.api("GET", f"{API}/experiments/{exp['id']}/results", expect=200)
    cell = snap["propensity"]["metrics"]["conversion"]["model_c"]
    expect(bandit.get_by_test_id("plain-mean-model_c")).to_have_text(f"{cell['mean']:g}")
    assert close(numbers(bandit.get_by_test_id("weighted-mean-model_c").inner_text())[0], cell["weighted_mean"])
    expect(page.get_by_test_id("bandit-means-note")).to_contain_text("The lift table and the metric summaries use the plain per-unit means")

    # Custom weights that do not sum to 1: an error next to them, and nothing is sent.
    set_checks(page, {"only_model_a", "custom"})
    expect(card.get_by_test_id("whatif-custom")).to_be_visible()
    for key, w in (("model_a", "0.5"), ("model_b", "0.3"), ("model_c", "0.1")):
        page.get_by_label(f"Weight of {key}").fill(w)
    expect(card.get_by_test_id("whatif-custom-sum")).to_contain_text("must be 1")
    card.get_by_test_id("whatif-run").click()
    expect(card.get_by_test_id("whatif-custom-error")).to_have_text("The custom weights must sum to 1; they sum to 0.9")
    expect(page.get_by_label("Weight of model_a")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Weight of model_a")).to_be_focused()
    page.wait_for_timeout(300)
    assert sent == [], sent
    expect(card.get_by_test_id("whatif-policy")).to_have_count(0)

    # A 422 from the server is placed next to the field it names (answered here by a stub).
    page.get_by_label("Weight of model_c").fill("0.2")
    expect(card.get_by_test_id("whatif-custom-error")).to_be_hidden()
    page.route("**/counterfactual", lambda route: route.fulfill(status=422, content_type="application/json", body=json.dumps(
        {"error": {"code": "validation_failed", "message": "invalid counterfactual request",
                   "fields": {"policies.custom.model_b": "unknown variant 'model_b'"}}})))
    card.get_by_test_id("whatif-run").click()
    err_b = card.locator("[data-error-for='policies.custom.model_b']")
    expect(err_b).to_have_text("unknown variant 'model_b'")
    expect(page.get_by_label("Weight of model_b")).to_be_focused()
    page.unroute("**/counterfactual")
    sent.clear()

    # The real thing: each variant alone, an equal split and the custom weights.
    set_checks(page, {"only_model_a", "only_model_c", "equal", "custom"})
    card.get_by_test_id("whatif-run").click()
    rows = card.get_by_test_id("whatif-policy")
    expect(rows).to_have_count(4, timeout=20_000)
    expect(err_b).to_be_hidden()
    assert len(sent) == 1, sent
    request = sent[0]
    assert request["metric"] == "conversion"
    assert set(request["policies"]) == {"only_model_a", "only_model_c", "equal", "custom"}
    assert request["policies"]["custom"] == {"model_a": 0.5, "model_b": 0.3, "model_c": 0.2}
    _, answer = server.api("POST", f"{API}/experiments/{exp['id']}/counterfactual", request, expect=200)
    for name, p in answer["policies"].items():
        row = card.locator(f"[data-testid=whatif-policy][data-policy={name}]")
        text = row.get_by_test_id("whatif-sentence").inner_text()
        dr = p["dr"]
        shown = numbers(text.split("would have given", 1)[1])
        assert len(shown) == 4, text
        for got, want in zip(shown, [dr["value"], dr["ci"][0], dr["ci"][1], answer["logged_value"]], strict=True):
            assert close(got, want), (name, text, got, want)
        assert " conversion [" in text and text.endswith(" (DR), against " + text.rsplit("against ", 1)[1]), text
        assert text.endswith(" logged."), text
        # The plot: three estimators and the logged value on one axis.
        plot = row.get_by_test_id("whatif-plot")
        for est in ("ips", "snips", "dr"):
            expect(plot.get_by_test_id(f"whatif-mark-{est}").locator("circle.point")).to_have_count(1)
        assert float(plot.get_by_test_id("whatif-logged-line").get_attribute("data-value")) == answer["logged_value"]
        # The table has the same numbers for every estimator.
        for est in ("ips", "snips", "dr"):
            v = card.locator(f"[data-testid=whatif-table-row][data-policy={name}][data-estimator={est}] [data-testid=whatif-value]")
            assert close(numbers(v.inner_text())[0], p[est]["value"]), (name, est)
    assert "Serving model_a to everyone would have given" in card.locator("[data-policy=only_model_a] [data-testid=whatif-sentence]").inner_text()
    assert "Your weights (model_a 50%, model_b 30%, model_c 20%)" in card.locator("[data-policy=custom] [data-testid=whatif-sentence]").inner_text()

    # ESS: model_c alone rests on ~30 units with p = 0.05 -> flagged; model_a alone is not.
    assert answer["policies"]["only_model_c"]["ess"] < 100 <= answer["policies"]["only_model_a"]["ess"]
    expect(card.locator("[data-policy=only_model_c]").get_by_test_id("whatif-ess-warning")).to_contain_text("Small effective sample")
    expect(card.locator("[data-policy=only_model_a]").get_by_test_id("whatif-ess-warning")).to_have_count(0)
    # Forced and server-filled units are explained; the answer says when it was computed.
    assert answer["forced_units"] == FORCED and answer["server_filled_units"] == FILLED
    expect(card.get_by_test_id("whatif-forced-note")).to_contain_text(f"{FORCED} units were served with probability 1")
    expect(card.get_by_test_id("whatif-filled-note")).to_contain_text(f"{FILLED} exposures arrived without a probability")
    expect(card.get_by_test_id("whatif-status")).to_contain_text("Estimated at")
    # The 2 s poll does not estimate again by itself.
    page.wait_for_timeout(2500)
    assert len(sent) == 1, sent
    expect(card.get_by_test_id("whatif-status")).not_to_contain_text("New data has arrived")
    ui.shot("desktop-1440")
    card_shot(ui, card, "desktop-1440-whatif-card")
    # New exposures: the estimates say they are older than the data, until Estimate is pressed.
    post_events(server, "/events", [{"type": "exposure", "experiment": exp["id"], "unit_id": f"late-{i}",
                                     "variant": "model_b", "probability": 0.3} for i in range(5)])
    expect(card.get_by_test_id("whatif-status")).to_contain_text("New data has arrived since", timeout=20_000)
    assert len(sent) == 1, sent
    card.get_by_test_id("whatif-run").click()
    expect(card.get_by_test_id("whatif-status")).not_to_contain_text("New data has arrived", timeout=20_000)
    assert len(sent) == 2, sent


def test_whatif_at_phone_width(phone: Page) -> None:
    server = phone.server
    page = phone.page
    exp = bandit_with_propensities(server)
    phone.goto(f"/experiments/{exp['id']}/results")
    card = page.get_by_test_id("whatif")
    expect(card).to_be_visible(timeout=20_000)
    set_checks(page, {"only_model_b", "only_model_c", "today"})
    card.get_by_test_id("whatif-run").click()
    expect(card.get_by_test_id("whatif-policy")).to_have_count(3, timeout=20_000)
    expect(card.locator("[data-policy=today] [data-testid=whatif-sentence]")).to_contain_text("The bandit\u2019s current weights (")
    expect(card.locator("[data-policy=only_model_c]").get_by_test_id("whatif-ess-warning")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the results page scrolls sideways at 390 px: scrollWidth {width}"
    phone.shot("phone-390")
    card_shot(phone, card, "phone-390-whatif-card")
