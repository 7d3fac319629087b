"""Screens that contradicted themselves or the server: locked weights of a launched fixed split,
the results page's status and winner after Stop, a converged bandit's preselected winner, live
bandit weights on the detail page, the confirmation before lowering a ramp, and the empty list
under filters."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.conftest import experiment_payload
from tests.e2e.conftest import LiveServer, Page
from tests.e2e.test_seed_flow import exposures, post_events

pytestmark = pytest.mark.browser

API = "/api/v1/experiments"


def create(server: LiveServer, **over: Any) -> dict[str, Any]:
    _, exp = server.api("POST", API, experiment_payload(**over), expect=201)
    return exp


def launch(server: LiveServer, exp_id: str, ramp: float = 1.0) -> None:
    server.api("POST", f"{API}/{exp_id}/launch", {"ramp": ramp}, expect=200)


def wait_snapshot(server: LiveServer, exp_id: str, ok: Any, timeout: float = 20.0) -> dict[str, Any]:
    """Poll the results until a snapshot satisfies `ok`; returns it."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        status, last = server.api("GET", f"{API}/{exp_id}/results")
        if status == 200 and ok(last):
            return dict(last)
        time.sleep(0.2)
    raise AssertionError(f"no matching snapshot within {timeout} s; last: {str(last)[:300]}")


# Five variants as an equal split leaves them: the last weight is 1 - 0.8 in floating point.
FIVE_WEIGHTS = [0.2, 0.2, 0.2, 0.2, 0.19999999999999996]


def converged_bandit(server: LiveServer) -> tuple[str, dict[str, Any]]:
    """A launched five-arm bandit whose model_e converts far better, once it has converged."""
    _, exp = server.api("POST", API, {
        "name": "Five rankers",
        "description": "Thompson sampling over five ranking models",
        "owner_team": "search",
        "allocation": "bandit",
        "bandit": {"update_interval_s": 0.5, "burn_in_units": 20, "min_units": 50,
                   "convergence_threshold": 0.95, "floor": 0.02},
        "variants": [{"key": f"model_{c}", "weight": w} for c, w in zip("abcde", FIVE_WEIGHTS, strict=True)],
    }, expect=201)
    exp_id = exp["id"]
    launch(server, exp_id)
    rates = {"model_a": 0.02, "model_b": 0.02, "model_c": 0.03, "model_d": 0.03, "model_e": 0.5}
    events: list[dict[str, Any]] = []
    n = 0
    for variant, rate in rates.items():
        for i in range(150):
            unit = f"b{n}"
            n += 1
            events.append({"type": "exposure", "experiment": exp_id, "unit_id": unit, "variant": variant})
            if i < rate * 150:
                events.append({"type": "conversion", "experiment": exp_id, "unit_id": unit})
    post_events(server, "/events", events)
    snap = wait_snapshot(server, exp_id, lambda s: bool((s.get("bandit") or {}).get("converged")))
    assert snap["bandit"]["converged_variant"] == "model_e", snap["bandit"]
    return exp_id, snap


# ------------------------------------------------------------------ 1. locked weights


def test_settings_of_a_running_fixed_split_lock_the_weights_and_say_so(ui: Page) -> None:
    exp = create(ui.server)
    launch(ui.server, exp["id"], 0.5)
    page = ui.page
    ui.goto(f"/experiments/{exp['id']}/settings")
    reason = page.get_by_test_id("variants-locked-reason")
    # The text no longer promises what the server refuses.
    expect(reason).to_contain_text("the weights are locked")
    expect(reason).not_to_contain_text("weight and config can still change")
    expect(reason).to_contain_text("name and config can still change")
    weights = page.get_by_test_id("variant-weight")
    expect(weights).to_have_count(3)
    for i in range(3):
        expect(weights.nth(i)).to_have_attribute("readonly", "")
        expect(weights.nth(i)).not_to_be_editable()
    expect(page.get_by_test_id("equal-weights")).to_be_hidden()
    ui.shot("settings-running-weights-locked")

    # What stays editable still saves: a variant's config.
    page.get_by_test_id("variant-config").nth(1).fill('{"model": "ranker-v2.1"}')
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Saved: variants")
    stored = ui.server.api("GET", f"{API}/{exp['id']}")[1]
    assert [v["weight"] for v in stored["variants"]] == [0.5, 0.3, 0.2]
    assert stored["variants"][1]["config"] == {"model": "ranker-v2.1"}


def test_settings_of_a_running_bandit_keep_starting_weights_but_lock_the_reward(ui: Page) -> None:
    """A bandit's weights are starting weights the server still accepts; its reward is not."""
    exp = create(ui.server, allocation="bandit",
                 variants=[{"key": "model_a", "weight": 0.5}, {"key": "model_b", "weight": 0.5}])
    launch(ui.server, exp["id"])
    page = ui.page
    ui.goto(f"/experiments/{exp['id']}/settings")
    expect(page.get_by_test_id("variants-locked-reason")).to_contain_text("starting weight can still change")
    expect(page.get_by_label("Variant 1 starting weight")).to_be_editable()
    expect(page.get_by_test_id("bandit-reward-type")).to_be_disabled()
    expect(page.get_by_test_id("bandit-goal")).to_be_disabled()
    expect(page.get_by_test_id("bandit-reward-metric")).not_to_be_editable()
    expect(page.get_by_test_id("bandit-floor")).to_be_editable()
    page.get_by_label("Variant 1 starting weight").fill("0.6")
    page.get_by_label("Variant 2 starting weight").fill("0.4")
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Saved: variants")
    stored = ui.server.api("GET", f"{API}/{exp['id']}")[1]
    assert [v["weight"] for v in stored["variants"]] == [0.6, 0.4]


# ------------------------------------------------------------------ 2. results after Stop


def test_results_after_stop_show_stopped_and_the_winner_despite_an_older_snapshot(ui: Page) -> None:
    server = ui.server
    exp = create(server)
    exp_id = exp["id"]
    launch(server, exp_id)
    exposures(server, exp_id, {"model_a": 10, "model_b": 6, "model_c": 4})
    running = wait_snapshot(server, exp_id, lambda s: s["exposures"]["total_units"] == 20)
    assert running["status"] == "running"
    page = ui.page
    # The recompute loop of a real server writes a "stopped" snapshot only on its next round
    # (about 20 s on a busy one); this server's loop is fast, so hold the older snapshot.
    page.route(f"**{API}/{exp_id}/results",
               lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(running)))
    ui.goto(f"/experiments/{exp_id}/results")
    expect(page.get_by_test_id("total-units")).to_have_text("20")
    badge = page.get_by_test_id("status-badge")
    expect(badge).to_have_text("RUNNING")
    expect(page.get_by_test_id("results-outcome")).to_be_hidden()

    server.api("POST", f"{API}/{exp_id}/stop", {"winner": "model_b"}, expect=200)
    expect(badge).to_have_text("STOPPED", timeout=6_000)
    expect(page.get_by_test_id("results-winner")).to_contain_text("Winner: model_b")
    page.wait_for_timeout(2_500)  # another poll with the older snapshot changes nothing
    expect(badge).to_have_text("STOPPED")
    ui.shot("results-stopped-winner")

    # Opened after the stop: STOPPED and the winner straight away.
    page.reload()
    expect(page.get_by_test_id("total-units")).to_have_text("20")
    expect(badge).to_have_text("STOPPED")
    expect(page.get_by_test_id("results-winner")).to_have_attribute("data-winner", "model_b")


def test_results_of_an_experiment_stopped_without_a_winner_say_so(ui: Page) -> None:
    exp = create(ui.server)
    launch(ui.server, exp["id"])
    ui.server.api("POST", f"{API}/{exp['id']}/stop", {}, expect=200)
    ui.goto(f"/experiments/{exp['id']}/results")
    expect(ui.page.get_by_test_id("status-badge")).to_have_text("STOPPED")
    expect(ui.page.get_by_test_id("results-no-winner")).to_contain_text("without a winner")


# ------------------------------------------------------------------ 3. converged bandit's Stop


def test_stop_dialog_of_a_converged_bandit_preselects_its_winner(ui: Page) -> None:
    exp_id, _ = converged_bandit(ui.server)
    page = ui.page
    ui.goto(f"/experiments/{exp_id}")
    page.get_by_test_id("stop-button").click()
    expect(page.get_by_test_id("stop-dialog")).to_be_visible()
    expect(page.get_by_label("Winner (optional)")).to_have_value("model_e")
    expect(page.get_by_test_id("stop-winner-note")).to_contain_text("converged on model_e")
    ui.shot("stop-converged-bandit", full_page=False)
    page.get_by_test_id("stop-confirm").click()
    expect(page.get_by_test_id("status-badge").first).to_have_text("STOPPED")
    stored = ui.server.api("GET", f"{API}/{exp_id}")[1]
    assert stored["status"] == "stopped" and stored["winner"] == "model_e"


def test_stop_dialog_of_a_fixed_split_preselects_no_winner(ui: Page) -> None:
    exp = create(ui.server)
    launch(ui.server, exp["id"])
    ui.goto(f"/experiments/{exp['id']}")
    ui.page.get_by_test_id("stop-button").click()
    expect(ui.page.get_by_label("Winner (optional)")).to_have_value("")
    expect(ui.page.get_by_test_id("stop-winner-note")).to_have_count(0)


# ------------------------------------------------------------------ 4. live bandit weights


def test_bandit_detail_shows_live_weights_and_readable_starting_weights(ui: Page) -> None:
    exp_id, snap = converged_bandit(ui.server)
    page = ui.page
    ui.goto(f"/experiments/{exp_id}")
    table = page.get_by_test_id("variants-table")
    expect(table.get_by_role("columnheader", name="Live weight")).to_be_visible()
    expect(table.get_by_role("columnheader", name="Starting weight")).to_be_visible()
    expect(page.get_by_test_id("live-weights-note")).to_contain_text("Live weights")
    # Starting weights read as configured, without floating-point noise.
    expect(page.locator("body")).not_to_contain_text("0.19999999999999996")
    starting = page.get_by_test_id("variant-weight-cell").evaluate_all("els => els.map(e => e.textContent)")
    assert starting == ["0.2"] * 5
    # Live weights: percentages; the converged arm holds most of the traffic, as the API says.
    for key in ("model_a", "model_e"):
        expect(page.get_by_test_id(f"live-weight-{key}")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    live_e = float(page.get_by_test_id("live-weight-model_e").inner_text().rstrip("%"))
    assert snap["bandit"]["weights"]["model_e"] > 0.5 and live_e > 50
    ui.shot("bandit-detail-live-weights")


# ------------------------------------------------------------------ 5. lowering the ramp


def test_lowering_the_ramp_asks_first_and_raising_does_not(ui: Page) -> None:
    exp = create(ui.server)
    launch(ui.server, exp["id"], 0.6)
    page = ui.page
    ui.goto(f"/experiments/{exp['id']}")
    ramp = page.get_by_label("Ramp (% of traffic)")
    dialog = page.get_by_test_id("ramp-dialog")

    ramp.fill("30")
    page.get_by_role("button", name="Launch / Update Ramp").click()
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("ramp-dialog-text")).to_contain_text(
        "Lowering the ramp from 60% to 30% removes units from the experiment")
    expect(page.get_by_test_id("ramp-cancel")).to_be_focused()
    ui.shot("ramp-lower-confirm", full_page=False)
    page.get_by_test_id("ramp-cancel").click()
    expect(dialog).to_have_count(0)
    assert ui.server.api("GET", f"{API}/{exp['id']}")[1]["ramp"] == 0.6

    page.get_by_role("button", name="Launch / Update Ramp").click()
    page.get_by_test_id("ramp-confirm").click()
    expect(page.get_by_test_id("action-message")).to_contain_text("Ramp updated to 30%")
    assert ui.server.api("GET", f"{API}/{exp['id']}")[1]["ramp"] == 0.3

    # Raising only adds units: no question.
    ramp.fill("80")
    page.get_by_role("button", name="Launch / Update Ramp").click()
    expect(page.get_by_test_id("action-message")).to_contain_text("Ramp updated to 80%")
    expect(dialog).to_have_count(0)
    assert ui.server.api("GET", f"{API}/{exp['id']}")[1]["ramp"] == 0.8


# ------------------------------------------------------------------ 6. filters with no match


def test_a_filter_with_no_match_offers_to_clear_it_not_to_create_the_first(ui: Page) -> None:
    page = ui.page
    empty = page.get_by_test_id("empty-list")
    ui.goto("/experiments")
    expect(empty).to_contain_text("No experiments yet.")
    expect(empty.get_by_role("link", name="Create the first experiment")).to_be_visible()

    create(ui.server, name="Ranker v2")
    ui.goto("/experiments?status=stopped")
    expect(empty).to_contain_text("No experiments match these filters.")
    expect(page.get_by_text("Create the first experiment")).to_have_count(0)
    ui.shot("list-no-match")
    page.get_by_test_id("empty-clear-filters").click()
    expect(page.get_by_test_id("experiment-row")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/experiments$"))
