"""The web UI in headless Chromium: token sign-in, list, new draft, detail lifecycle, settings."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.conftest import experiment_payload
from tests.e2e.conftest import LiveServer, Page

pytestmark = pytest.mark.browser

API = "/api/v1/experiments"


def create(server: LiveServer, **over: Any) -> dict[str, Any]:
    _, exp = server.api("POST", API, experiment_payload(**over), expect=201)
    return exp


def weights(page: Any) -> list[str]:
    return page.get_by_test_id("variant-weight").evaluate_all("els => els.map(e => e.value)")


def test_token_prompt_keeps_the_token_and_sign_out_forgets_it(ui_signed_out: Page) -> None:
    ui = ui_signed_out
    create(ui.server, name="Ranker v2")
    page = ui.page
    ui.goto("/experiments")
    dialog = page.get_by_test_id("token-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_label("API token")).to_be_focused()
    ui.shot("token-prompt", full_page=False)

    page.get_by_label("API token").fill("not-the-token")
    page.get_by_test_id("token-submit").click()
    expect(page.get_by_test_id("token-error")).to_contain_text("refused")
    ui.shot("token-refused", full_page=False)

    page.get_by_label("API token").fill(ui.server.token)
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    # The call that got 401 was retried with the token: the list is there.
    expect(page.get_by_test_id("experiment-row")).to_have_count(1)
    assert page.evaluate("localStorage.getItem('litmus.token')") == ui.server.token
    expect(page.get_by_test_id("session-state")).to_have_text("Signed in")

    # Kept in the browser: a reload does not ask again.
    page.reload()
    expect(page.get_by_test_id("experiment-row")).to_have_count(1)
    expect(dialog).to_be_hidden()

    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("signed-out")).to_be_visible()
    assert page.evaluate("localStorage.getItem('litmus.token')") is None
    expect(page.get_by_test_id("session-state")).to_have_text("Not signed in")
    ui.shot("signed-out", full_page=False)

    # The next API call asks again; cancelling shows a sign-in-needed message.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Experiments").click()
    expect(dialog).to_be_visible()
    page.get_by_test_id("token-cancel").click()
    expect(page.get_by_test_id("retry-sign-in")).to_be_visible()
    page.get_by_test_id("retry-sign-in").click()
    page.get_by_label("API token").fill(ui.server.token)
    page.get_by_test_id("token-submit").click()
    expect(page.get_by_test_id("experiment-row")).to_have_count(1)


def test_client_token_is_refused_with_a_clear_message(ui_signed_out: Page) -> None:
    from tests.conftest import CLIENT_SECRET

    ui = ui_signed_out
    ui.goto("/experiments")
    ui.page.get_by_label("API token").fill(CLIENT_SECRET)
    ui.page.get_by_test_id("token-submit").click()
    expect(ui.page.get_by_test_id("token-error")).to_contain_text("client token")


def test_list_shows_badges_and_filters_by_status_and_team(ui: Page) -> None:
    a = create(ui.server, name="Ranker v2", owner_team="search")
    b = create(ui.server, name="Recs bandit", owner_team="recs", allocation="bandit")
    create(ui.server, name="Checkout copy", owner_team="growth")
    ui.server.api("POST", f"{API}/{a['id']}/launch", {"ramp": 0.25}, expect=200)
    ui.server.api("POST", f"{API}/{b['id']}/launch", {"ramp": 1}, expect=200)
    ui.server.api("POST", f"{API}/{b['id']}/pause", {}, expect=200)
    page = ui.page
    ui.goto("/experiments")
    rows = page.get_by_test_id("experiment-row")
    expect(rows).to_have_count(3)
    row = rows.filter(has_text="Ranker v2")
    expect(row.get_by_test_id("status-badge")).to_have_text("RUNNING")
    expect(row).to_contain_text("ranker-v2")
    expect(row).to_contain_text("search")
    expect(row).to_contain_text("25%")
    expect(row).to_contain_text("fixed")
    expect(rows.filter(has_text="Recs bandit").get_by_test_id("status-badge")).to_have_text("PAUSED")
    expect(rows.filter(has_text="Recs bandit")).to_contain_text("bandit")
    expect(rows.filter(has_text="Checkout copy").get_by_test_id("status-badge")).to_have_text("DRAFT")
    ui.shot("list")

    page.get_by_label("Status").select_option("running")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Ranker v2")
    assert "status=running" in page.url

    page.get_by_test_id("clear-filters").click()
    expect(rows).to_have_count(3)
    page.get_by_label("Owner team", exact=True).fill("recs")
    page.get_by_label("Owner team", exact=True).press("Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Recs bandit")

    # A filtered deep link works on reload.
    page.reload()
    expect(rows).to_have_count(1)
    expect(page.get_by_label("Owner team", exact=True)).to_have_value("recs")

    page.get_by_test_id("clear-filters").click()
    page.get_by_test_id("new-experiment-link").click()
    expect(page).to_have_url(re.compile(r"/experiments/new$"))


def test_new_form_requires_fields_and_checks_the_weight_sum(ui: Page) -> None:
    page = ui.page
    ui.goto("/experiments/new")
    save = page.get_by_test_id("save-draft")
    expect(page.get_by_test_id("weight-sum")).to_have_attribute("data-state", "ok")

    # Required fields: inline errors, nothing saved.
    save.click()
    expect(page.locator("[data-field=name] .field-error")).to_have_text("Enter a name")
    expect(page.locator("[data-field=description] .field-error")).to_have_text("Enter a description")
    expect(page.locator("[data-field=owner_team] .field-error")).to_have_text("Enter the owner team")
    expect(page.get_by_label("Name", exact=True)).to_be_focused()
    ui.shot("required-errors")
    _, listing = ui.server.api("GET", API)
    assert listing["experiments"] == []

    # Config must be valid JSON.
    config = page.get_by_test_id("variant-config").first
    config.fill("{not json")
    expect(page.get_by_test_id("variant-row").first.locator(".vcell-config .field-error")).to_contain_text("Not valid JSON")
    config.fill('{"model": "ranker-v1"}')
    expect(page.get_by_test_id("variant-row").first.locator(".vcell-config .field-error")).to_be_hidden()

    # Equal weights over four rows, then remove one: the sum is off until equalised again.
    page.get_by_test_id("add-variant").click()
    page.get_by_test_id("add-variant").click()
    expect(page.get_by_test_id("variant-row")).to_have_count(4)
    page.get_by_test_id("equal-weights").click()
    assert weights(page) == ["0.25", "0.25", "0.25", "0.25"]
    expect(page.get_by_test_id("weight-sum")).to_have_attribute("data-state", "ok")
    page.get_by_test_id("remove-variant").nth(3).click()
    expect(page.get_by_test_id("variant-row")).to_have_count(3)
    expect(page.get_by_test_id("weight-sum")).to_have_attribute("data-state", "error")
    expect(page.get_by_test_id("weight-sum-value")).to_have_text("0.75")
    expect(save).to_be_disabled()
    page.get_by_test_id("equal-weights").click()
    assert weights(page) == ["0.3333", "0.3333", "0.3334"]
    expect(save).to_be_enabled()


def test_server_field_errors_show_next_to_the_named_field(ui: Page) -> None:
    page = ui.page
    ui.goto("/experiments/new")
    page.get_by_label("Name", exact=True).fill("Long names")
    page.get_by_label("Description", exact=True).fill("A variant name that is too long for the server")
    page.get_by_label("Owner team", exact=True).fill("search")
    page.get_by_test_id("variant-name").nth(1).fill("x" * 250)
    page.get_by_test_id("save-draft").click()
    row = page.get_by_test_id("variant-row").nth(1)
    expect(row.locator(".vcell-name .field-error")).to_contain_text("at most 200 characters")
    expect(page.get_by_test_id("form-errors")).to_contain_text("variants[1].name")
    ui.shot("server-field-error")

    # A bandit floor too high for the number of variants: bandit.floor is named.
    page.get_by_test_id("variant-name").nth(1).fill("")
    page.get_by_text("Bandit (Thompson sampling)").click()
    expect(page.get_by_test_id("bandit-settings")).to_be_visible()
    for _ in range(4):
        page.get_by_test_id("add-variant").click()
    page.get_by_test_id("equal-weights").click()
    page.get_by_label("Weight floor per variant").fill("0.2")
    page.get_by_test_id("save-draft").click()
    expect(page.locator("[data-field='bandit.floor'] .field-error")).to_contain_text("floor")
    expect(page.get_by_label("Weight floor per variant")).to_be_focused()


def test_create_draft_launch_pause_stop(ui: Page) -> None:
    """The seed's flow without traffic: draft with three variants, ramp, pause, stop."""
    page = ui.page
    ui.goto("/experiments")
    page.get_by_test_id("new-experiment-link").click()
    expect(page.get_by_role("heading", name="New experiment")).to_be_visible()

    page.get_by_label("Name", exact=True).fill("Ranker v2")
    page.get_by_label("Description", exact=True).fill("New ranking model against the current one")
    page.get_by_label("Owner team", exact=True).fill("search")
    page.get_by_label("Hypothesis", exact=True).fill("model_b lifts conversion by 2%")
    page.get_by_test_id("add-variant").click()
    rows = page.get_by_test_id("variant-row")
    expect(rows).to_have_count(3)
    expect(rows.nth(2).get_by_test_id("variant-key")).to_have_value("model_c")
    for i, (weight, model) in enumerate([("0.5", "ranker-v1"), ("0.3", "ranker-v2"), ("0.3", "ranker-v3")]):
        rows.nth(i).get_by_test_id("variant-weight").fill(weight)
        rows.nth(i).get_by_test_id("variant-config").fill(f'{{"model": "{model}", "temperature": 0.2}}')
    # The weight-sum error: 1.1, and saving is blocked.
    expect(page.get_by_test_id("weight-sum")).to_have_attribute("data-state", "error")
    expect(page.get_by_test_id("weight-sum")).to_contain_text("1.1")
    expect(page.get_by_test_id("weight-sum-error")).to_contain_text("must sum to 1.0")
    expect(page.get_by_test_id("save-draft")).to_be_disabled()
    expect(page.get_by_test_id("save-block-reason")).to_contain_text("1.1")
    ui.shot("new-weight-sum-error")

    rows.nth(2).get_by_test_id("variant-weight").fill("0.2")
    expect(page.get_by_test_id("weight-sum")).to_have_attribute("data-state", "ok")
    expect(page.get_by_test_id("save-draft")).to_be_enabled()
    ui.shot("new-ready")
    page.get_by_test_id("save-draft").click()

    expect(page).to_have_url(re.compile(r"/experiments/[0-9a-f-]{36}$"))
    exp_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_test_id("status-badge").first).to_have_text("DRAFT")
    expect(page.get_by_test_id("variant")).to_have_count(3)
    expect(page.get_by_test_id("variant").first).to_contain_text("ranker-v1")
    expect(page.get_by_test_id("variant").first).to_contain_text("control")
    expect(page.get_by_test_id("history-entry")).to_have_count(1)
    ui.shot("detail-draft")
    _, stored = ui.server.api("GET", f"{API}/{exp_id}")
    assert [v["weight"] for v in stored["variants"]] == [0.5, 0.3, 0.2]
    assert stored["variants"][2]["config"] == {"model": "ranker-v3", "temperature": 0.2}
    assert stored["hypothesis"] == "model_b lifts conversion by 2%"

    # Launch with a ramp of 30%.
    expect(page.get_by_test_id("pause-button")).to_be_disabled()
    page.get_by_label("Ramp (% of traffic)").fill("30")
    page.get_by_role("button", name="Launch / Update Ramp").click()
    expect(page.get_by_test_id("status-badge").first).to_have_text("RUNNING")
    expect(page.get_by_test_id("status-line")).to_contain_text("30%")
    expect(page.get_by_test_id("action-message")).to_contain_text("Launched on 30%")
    expect(page.get_by_test_id("history-entry").first).to_have_attribute("data-action", "launch")
    ui.shot("detail-running")
    assert ui.server.api("GET", f"{API}/{exp_id}")[1]["ramp"] == 0.3

    # Update the ramp while running.
    page.get_by_label("Ramp (% of traffic)").fill("60")
    page.get_by_role("button", name="Launch / Update Ramp").click()
    expect(page.get_by_test_id("action-message")).to_contain_text("Ramp updated to 60%")
    assert ui.server.api("GET", f"{API}/{exp_id}")[1]["ramp"] == 0.6

    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_test_id("status-badge").first).to_have_text("PAUSED")
    expect(page.get_by_test_id("pause-button")).to_be_disabled()

    # Stop: cancel first, then confirm with a winner.
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.get_by_test_id("stop-dialog")).to_be_visible()
    page.get_by_test_id("stop-cancel").click()
    expect(page.get_by_test_id("stop-dialog")).to_have_count(0)
    expect(page.get_by_test_id("status-badge").first).to_have_text("PAUSED")
    page.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_label("Winner (optional)").select_option("model_b")
    ui.shot("stop-confirm", full_page=False)
    page.get_by_test_id("stop-confirm").click()
    expect(page.get_by_test_id("status-badge").first).to_have_text("STOPPED")
    expect(page.get_by_test_id("status-line")).to_contain_text("model_b")
    expect(page.get_by_test_id("launch-button")).to_be_disabled()
    expect(page.get_by_test_id("stop-button")).to_be_disabled()
    actions = page.get_by_test_id("history-entry").evaluate_all("els => els.map(e => e.dataset.action)")
    assert actions == ["stop", "pause", "launch", "launch", "create"]
    ui.shot("detail-stopped")
    stored = ui.server.api("GET", f"{API}/{exp_id}")[1]
    assert stored["status"] == "stopped" and stored["winner"] == "model_b"

    # The list shows it stopped; deep links work on reload.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Experiments").click()
    expect(page.get_by_test_id("experiment-row").get_by_test_id("status-badge")).to_have_text("STOPPED")
    for suffix, marker in (("", "history-list"), ("/settings", "settings-form"), ("/results", "results-content")):
        ui.goto(f"/experiments/{exp_id}{suffix}")
        expect(page.get_by_test_id(marker)).to_be_visible()


def test_settings_edit_targeting_overrides_and_locked_variants(ui: Page) -> None:
    exp = create(ui.server)
    ui.server.api("POST", f"{API}/{exp['id']}/launch", {"ramp": 0.5}, expect=200)
    page = ui.page
    ui.goto(f"/experiments/{exp['id']}")
    page.get_by_test_id("settings-link").click()
    expect(page).to_have_url(re.compile(r"/settings$"))

    # Variant keys are locked after launch, with the reason.
    expect(page.get_by_test_id("variants-locked-reason")).to_contain_text("locked because the experiment has launched")
    expect(page.get_by_test_id("variant-key").first).to_have_attribute("readonly", "")
    expect(page.get_by_test_id("add-variant")).to_be_disabled()

    page.get_by_label("Description", exact=True).fill("Ranker v2 against v1, now with targeting")
    page.get_by_test_id("add-rule").click()
    rule = page.get_by_test_id("rule-row").last
    rule.get_by_label("Attribute").fill("country")
    rule.get_by_label("Operator").select_option("in")
    rule.get_by_label("Value").fill("US, CA")
    page.get_by_test_id("add-rule").click()
    rule2 = page.get_by_test_id("rule-row").last
    rule2.get_by_label("Attribute").fill("app_version")
    rule2.get_by_label("Operator").select_option("gte")
    rule2.get_by_label("Value").fill("42")
    page.get_by_test_id("add-override").click()
    ovr = page.get_by_test_id("override-row").last
    ovr.get_by_label("Unit id").fill("qa-user-1")
    ovr.get_by_label("Always gets variant").select_option("model_c")
    page.get_by_test_id("variant-config").nth(1).fill('{"model": "ranker-v2.1"}')
    ui.shot("settings-edited")
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Saved")
    expect(page.get_by_test_id("settings-version")).to_contain_text("version 3")

    stored = ui.server.api("GET", f"{API}/{exp['id']}")[1]
    assert stored["description"] == "Ranker v2 against v1, now with targeting"
    assert stored["targeting"] == [
        {"attribute": "country", "op": "in", "value": ["US", "CA"]},
        {"attribute": "app_version", "op": "gte", "value": 42},
    ]
    assert stored["overrides"] == {"qa-user-1": "model_c"}
    assert stored["variants"][1]["config"] == {"model": "ranker-v2.1"}
    assert stored["version"] == 3

    # A server-side rule error lands next to the rule.
    rule2.get_by_label("Operator").select_option("regex")
    rule2.get_by_label("Value").fill("(unclosed")
    page.get_by_test_id("save-settings").click()
    expect(rule2.locator(".field-error")).to_contain_text("regular expression")
    rule2.get_by_label("Value").fill("^4[0-9]$")

    # Someone else saves meanwhile: our save gets 412 and says what to do.
    ui.server.api("PATCH", f"{API}/{exp['id']}", {"hypothesis": "changed elsewhere"}, expect=200)
    page.get_by_label("Owner team", exact=True).fill("search-quality")
    page.get_by_test_id("save-settings").click()
    conflict = page.get_by_test_id("conflict")
    expect(conflict).to_contain_text("someone else changed this experiment")
    expect(conflict).to_contain_text("version 3")
    expect(conflict).to_contain_text("version 4")
    ui.shot("settings-412")
    assert ui.server.api("GET", f"{API}/{exp['id']}")[1]["owner_team"] == "search"
    page.get_by_test_id("reload-settings").click()
    expect(page.get_by_label("Hypothesis", exact=True)).to_have_value("changed elsewhere")
    expect(page.get_by_label("Owner team", exact=True)).to_have_value("search")
    page.get_by_label("Owner team", exact=True).fill("search-quality")
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Saved: owner_team")
    assert ui.server.api("GET", f"{API}/{exp['id']}")[1]["owner_team"] == "search-quality"


def test_results_page_says_no_results_yet_before_the_first_snapshot(ui: Page) -> None:
    exp = create(ui.server)
    ui.goto(f"/experiments/{exp['id']}/results")
    expect(ui.page.get_by_test_id("no-results")).to_contain_text("No results yet")
    expect(ui.page.get_by_test_id("no-results")).to_contain_text("launch it")
    expect(ui.page.get_by_test_id("poll-state")).to_contain_text("every 2 s")
    ui.shot("results-empty")


def test_phone_width_screens_are_usable(phone: Page) -> None:
    exp = create(phone.server)
    page = phone.page
    phone.goto("/experiments")
    expect(page.get_by_test_id("experiment-row")).to_have_count(1)
    phone.shot("list")
    phone.goto("/experiments/new")
    expect(page.get_by_test_id("variant-row")).to_have_count(2)
    phone.shot("new")
    phone.goto(f"/experiments/{exp['id']}")
    expect(page.get_by_role("button", name="Launch / Update Ramp")).to_be_visible()
    phone.shot("detail")
    # Nothing forces a horizontal scroll of the whole page.
    for path in ("/experiments", "/experiments/new", f"/experiments/{exp['id']}", f"/experiments/{exp['id']}/settings"):
        phone.goto(path)
        page.wait_for_load_state("networkidle")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{path} scrolls sideways by {overflow}px at phone width"


def test_keyboard_launch_and_stop_dialog(ui: Page) -> None:
    exp = create(ui.server)
    page = ui.page
    ui.goto(f"/experiments/{exp['id']}")
    ramp = page.get_by_label("Ramp (% of traffic)")
    ramp.focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("40")
    page.keyboard.press("Enter")  # submits the lifecycle form: Launch / Update Ramp
    expect(page.get_by_test_id("status-badge").first).to_have_text("RUNNING")
    assert ui.server.api("GET", f"{API}/{exp['id']}")[1]["ramp"] == 0.4

    page.get_by_test_id("stop-button").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_test_id("stop-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("stop-cancel")).to_be_focused()  # the safe choice has focus
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(page.get_by_test_id("stop-button")).to_be_focused()
    expect(page.get_by_test_id("status-badge").first).to_have_text("RUNNING")

    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_test_id("stop-confirm")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("status-badge").first).to_have_text("STOPPED")


def test_results_poll_every_2_s_and_slower_while_the_tab_is_hidden(ui: Page) -> None:
    exp = create(ui.server)
    page = ui.page
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if r.url.endswith("/results") else None)
    ui.goto(f"/experiments/{exp['id']}/results")
    expect(page.get_by_test_id("no-results")).to_be_visible()
    page.wait_for_timeout(4_500)
    assert 2 <= len(seen) <= 4, seen  # now, then every 2 s

    set_hidden = """hidden => {
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => hidden});
        Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => hidden ? 'hidden' : 'visible'});
        document.dispatchEvent(new Event('visibilitychange'));
    }"""
    page.evaluate(set_hidden, True)
    expect(page.get_by_test_id("poll-state")).to_contain_text("every 15 s")
    before = len(seen)
    page.wait_for_timeout(5_000)
    assert len(seen) == before, "polled every 2 s while the tab was hidden"

    page.evaluate(set_hidden, False)  # back in view: check at once, then every 2 s again
    expect(page.get_by_test_id("poll-state")).to_contain_text("every 2 s")
    page.wait_for_timeout(500)
    assert len(seen) == before + 1
