"""Guardrails in the browser: a treatment whose error rate jumps trips a pausing guardrail; the
results page shows the trip's sentence at the top and the guardrail card with its state, and the
experiment page shows the same banner above its status, with the experiment paused."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, Page
from tests.e2e.test_seed_flow import post_events

pytestmark = pytest.mark.browser

API = "/api/v1"
UNITS = 400  # per arm; a trip needs 100 per arm (litmus/core/guardrails.py MIN_UNITS)
RATES = {"model_a": 0.20, "model_b": 0.60}


def guarded_experiment(server: LiveServer) -> dict[str, Any]:
    body = {
        "name": "Safe ranker",
        "description": "model_b must not raise the error rate",
        "owner_team": "search",
        "metrics": {"primary": "conversion", "definitions": {"errors": {"direction": "decrease"}},
                    "guardrails": [{"metric": "errors", "margin": 0, "action": "pause"}]},
        "variants": [{"key": "model_a", "weight": 0.5}, {"key": "model_b", "weight": 0.5}],
    }
    _, exp = server.api("POST", f"{API}/experiments", body, expect=201)
    server.api("POST", f"{API}/experiments/{exp['id']}/launch", {"ramp": 1}, expect=200)
    return dict(exp)


def error_traffic(server: LiveServer, exp_id: str) -> None:
    """UNITS exposed units per arm; exactly round(UNITS * rate) of them log an error."""
    events: list[dict[str, Any]] = []
    for arm, rate in RATES.items():
        failing = round(UNITS * rate)
        for i in range(UNITS):
            unit = f"{arm}-u{i}"
            events.append({"type": "exposure", "experiment": exp_id, "unit_id": unit, "variant": arm})
            if i < failing:
                events.append({"type": "metric", "experiment": exp_id, "unit_id": unit,
                               "metric": "errors", "value": 1.0})
    post_events(server, "/events", events)


def tripped_snapshot(server: LiveServer, exp_id: str, page: Any) -> dict[str, Any]:
    """The API's snapshot once the guardrail has tripped (the page is used only to wait)."""
    for _ in range(120):
        status, snap = server.api("GET", f"{API}/experiments/{exp_id}/results")
        if status == 200 and any(g.get("status") == "tripped" for g in snap.get("guardrails") or []):
            return dict(snap)
        page.wait_for_timeout(250)
    raise AssertionError(f"the guardrail did not trip: {snap}")


def test_a_tripped_guardrail_shows_at_the_top_of_results_and_detail(ui: Page) -> None:
    server = ui.server
    page = ui.page
    exp = guarded_experiment(server)
    ui.goto(f"/experiments/{exp['id']}/results")
    expect(page.get_by_test_id("no-results").or_(page.get_by_test_id("total-units"))).to_be_visible()
    # No trip yet: no banner.
    expect(page.get_by_test_id("guardrail-banner")).to_have_count(0)

    error_traffic(server, exp["id"])
    snap = tripped_snapshot(server, exp["id"], page)
    [g] = [g for g in snap["guardrails"] if g["status"] == "tripped"]
    assert g["metric"] == "errors" and g["treatment"] == "model_b" and g["action"] == "pause"
    message = g["message"]
    assert message.startswith("Paused by guardrail: errors of model_b is +"), message

    # Results: the banner is the first thing after the heading, above the outcome and poll error.
    banner = page.get_by_test_id("guardrail-banner")
    expect(banner).to_be_visible(timeout=20_000)
    tripped = banner.get_by_test_id("guardrail-tripped")
    expect(tripped).to_have_count(1)
    expect(tripped).to_have_text(message)
    expect(tripped).to_have_attribute("data-treatment", "model_b")
    expect(banner.get_by_role("alert")).to_have_count(1)
    order = page.evaluate("""() => {
        const slot = document.querySelector('[data-testid=guardrail-slot]');
        const after = (sel) => !!(slot.compareDocumentPosition(document.querySelector(sel)) & Node.DOCUMENT_POSITION_FOLLOWING);
        return [after('[data-testid=results-outcome]'), after('[data-testid=poll-error]'), after('[data-testid=results-content]')];
    }""")
    assert order == [True, True, True], order
    # The card: one row, tripped, with its time; the status badge follows the experiment.
    card = page.get_by_test_id("guardrails")
    row = card.get_by_test_id("guardrail-row")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", "tripped")
    expect(row).to_contain_text("tripped at")
    expect(row).to_contain_text("rise")
    expect(page.get_by_test_id("status-badge").first).to_have_attribute("data-status", "paused", timeout=20_000)
    # The card comes right after the SRM line, before the exposures.
    assert page.evaluate("""() => {
        const card = document.querySelector('[data-testid=guardrails]');
        const ex = document.querySelector('[data-testid=exposures]');
        return !!(card.compareDocumentPosition(ex) & Node.DOCUMENT_POSITION_FOLLOWING);
    }""")
    ui.shot("results-tripped")

    # The experiment page: the same banner at the top, the experiment paused, the label kept.
    page.get_by_test_id("detail-link").click()
    dbanner = page.get_by_test_id("guardrail-banner")
    expect(dbanner).to_be_visible()
    expect(dbanner.get_by_test_id("guardrail-tripped")).to_have_text(message)
    expect(page.get_by_test_id("status-line")).to_contain_text("Paused")
    expect(page.get_by_test_id("pause-button")).to_be_disabled()
    expect(page.locator("dl.kv")).to_contain_text("errors (pause)")
    # The history lists the trip (its recorded values are plain, not before/after) and the pause.
    trip = page.locator("[data-testid=history-entry][data-action=guardrail_trip]")
    expect(trip).to_have_count(1)
    expect(trip).to_contain_text("guardrail")
    expect(page.locator("[data-testid=history-entry][data-action=pause]")).to_have_count(1)
    assert page.evaluate("""() => {
        const slot = document.querySelector('[data-testid=guardrail-slot]');
        const status = document.querySelector('[data-testid=status-line]');
        return !!(slot.compareDocumentPosition(status) & Node.DOCUMENT_POSITION_FOLLOWING);
    }""")
    ui.shot("detail-tripped")


def test_detail_page_without_a_snapshot_shows_no_banner(ui: Page) -> None:
    """A guarded experiment with no results yet (the 404 is expected): no banner, no error."""
    server = ui.server
    page = ui.page
    exp = guarded_experiment(server)
    server.api("POST", f"{API}/experiments/{exp['id']}/pause", {}, expect=200)
    ui.goto(f"/experiments/{exp['id']}")
    expect(page.get_by_test_id("status-line")).to_contain_text("Paused")
    expect(page.get_by_test_id("guardrail-slot")).to_be_attached()
    expect(page.get_by_test_id("guardrail-banner")).to_have_count(0)
    expect(page.locator("dl.kv")).to_contain_text("errors (pause)")
