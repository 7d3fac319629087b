"""The guardrail editor of the new-experiment and settings screens: one row per guardrail
(metric, tolerated harm in %, action, remove), saved in the API's object form
{metric, margin (a fraction), action}; bare names load as rows (margin 0, alert); the server's
422 on a guardrail field shows next to that row's control and saves nothing; editable while
running, locked once stopped. Keyboard, axe-core, 1440×900 and 390×844 (no sideways scroll)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, Page, screenshots_dir
from tests.e2e.test_a11y import axe, axe_js  # noqa: F401  (axe_js is a fixture)
from tests.e2e.test_verdict import wide  # noqa: F401  (wide is a fixture)

pytestmark = pytest.mark.browser

API = "/api/v1"
TWO_GUARDRAILS = [{"metric": "errors", "margin": 0, "action": "pause"},
                  {"metric": "latency_ms", "margin": 0.2, "action": "rollback"}]


def stored(server: LiveServer, exp_id: str) -> dict[str, Any]:
    _, exp = server.api("GET", f"{API}/experiments/{exp_id}", expect=200)
    return dict(exp)


def guardrail_row(page: Any, n: int) -> Any:
    return page.get_by_role("group", name=f"Guardrail {n}", exact=True)


def no_sideways_scroll(ui: Page, label: str) -> None:
    overflow = ui.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"{label} scrolls sideways by {overflow}px at {ui.page.viewport_size['width']} px"


def card_shot(ui: Page, locator: Any, label: str) -> None:
    """A screenshot of one element, numbered with the page's full-page shots."""
    path = screenshots_dir() / f"{ui.name}-{len(ui.shots) + 1:02d}-{label}.png"
    locator.screenshot(path=str(path), animations="disabled",
                       style=".topbar,.sticky-actions{position:static !important}")
    ui.shots.append(path)


def fill_about(page: Any) -> None:
    page.get_by_label("Name", exact=True).fill("Safer ranker")
    page.get_by_label("Description", exact=True).fill("model_b must not raise errors or latency")
    page.get_by_label("Owner team", exact=True).fill("search")


def test_new_experiment_with_two_guardrails(wide: Page, phone: Page, axe_js: str) -> None:  # noqa: F811
    ui = wide
    page = ui.page
    server = ui.server
    ui.goto("/experiments/new")
    fill_about(page)
    expect(page.get_by_test_id("no-guardrails")).to_be_visible()

    # The first row by keyboard alone: Enter on "Add guardrail" puts the focus in the new row's
    # metric; Tab goes to the tolerated harm, then the action, then Remove.
    page.get_by_test_id("add-guardrail").focus()
    page.keyboard.press("Enter")
    first = guardrail_row(page, 1)
    expect(first.get_by_label("Metric", exact=True)).to_be_focused()
    page.keyboard.type("errors")
    page.keyboard.press("Tab")
    margin = first.get_by_label("Tolerated harm (%)")
    expect(margin).to_be_focused()
    expect(margin).to_have_value("0")
    page.keyboard.press("Tab")
    action = first.get_by_label("When it trips")
    expect(action).to_be_focused()
    expect(action).to_have_value("alert")  # the API's default
    page.keyboard.press("ArrowDown")  # a closed select steps to the next option
    expect(action).to_have_value("pause")
    page.keyboard.press("Tab")
    expect(first.get_by_role("button", name="Remove guardrail 1")).to_be_focused()
    # The three actions are explained once, and each action select points at the explanation.
    help_id = page.get_by_test_id("guardrail-actions-help").get_attribute("id")
    assert help_id and help_id in (action.get_attribute("aria-describedby") or "").split()
    expect(page.get_by_test_id("guardrail-actions-help")).to_contain_text("pauses the experiment")

    # The second row with the mouse; a third added and removed again.
    page.get_by_test_id("add-guardrail").click()
    second = guardrail_row(page, 2)
    second.get_by_label("Metric", exact=True).fill("latency_ms")
    second.get_by_label("Tolerated harm (%)").fill("20")
    second.get_by_label("When it trips").select_option(label="Roll back to control (stop)")
    page.get_by_test_id("add-guardrail").click()
    guardrail_row(page, 3).get_by_label("Metric", exact=True).fill("cost_usd")
    page.get_by_role("button", name="Remove guardrail 3").click()
    expect(page.get_by_test_id("guardrail-row-editor")).to_have_count(2)

    # Neither metric is defined yet: each row says higher is read as better. Defining errors
    # as lower is better clears that row's note.
    expect(first.get_by_test_id("guardrail-direction-hint")).to_be_visible()
    page.get_by_test_id("add-definition").click()
    definition = page.get_by_role("group", name="Metric definition 1")
    definition.get_by_label("Metric", exact=True).fill("errors")
    definition.get_by_label("Direction", exact=True).select_option("decrease")
    expect(first.get_by_test_id("guardrail-direction-hint")).to_be_hidden()
    expect(second.get_by_test_id("guardrail-direction-hint")).to_contain_text("latency_ms has no metric definition")
    # The defined metrics are offered as suggestions in the metric inputs.
    options = page.locator(f"datalist#{first.get_by_label('Metric', exact=True).get_attribute('list')} option")
    expect(options).to_have_count(2)  # conversion (primary) and errors

    problems = axe(ui, axe_js, "new-guardrails")
    ui.shot("new-guardrails-1440")
    card_shot(ui, page.get_by_test_id("guardrails-section"), "new-guardrails-1440-editor")

    page.get_by_test_id("save-draft").click()
    expect(page).to_have_url(re.compile(r"/experiments/[0-9a-f-]{36}$"))
    exp_id = page.url.rsplit("/", 1)[1]
    metrics = stored(server, exp_id)["metrics"]
    assert metrics["guardrails"] == TWO_GUARDRAILS, metrics
    assert metrics["definitions"] == {"errors": {"direction": "decrease"}}, metrics
    expect(page.get_by_text("errors (pause), latency_ms (rollback, margin 20%)")).to_be_visible()

    # 390 px: the same editor with two rows, nothing scrolls sideways, axe clean.
    phone.goto("/experiments/new")
    phone.page.get_by_test_id("add-guardrail").click()
    phone.page.get_by_test_id("add-guardrail").click()
    guardrail_row(phone.page, 1).get_by_label("Metric", exact=True).fill("errors")
    guardrail_row(phone.page, 1).get_by_label("When it trips").select_option("pause")
    guardrail_row(phone.page, 2).get_by_label("Metric", exact=True).fill("latency_ms")
    guardrail_row(phone.page, 2).get_by_label("Tolerated harm (%)").fill("20")
    guardrail_row(phone.page, 2).get_by_label("When it trips").select_option("rollback")
    no_sideways_scroll(phone, "/experiments/new")
    problems += axe(phone, axe_js, "new-guardrails-phone")
    phone.shot("new-guardrails-390")
    card_shot(phone, phone.page.get_by_test_id("guardrails-section"), "new-guardrails-390-editor")
    assert not problems, "axe-core found serious or critical violations:\n" + "\n".join(problems)


def test_settings_edit_a_bare_name_guardrail_and_show_the_servers_margin_error(
        wide: Page, phone: Page, axe_js: str) -> None:  # noqa: F811
    ui = wide
    page = ui.page
    server = ui.server
    _, exp = server.api("POST", f"{API}/experiments", {
        "name": "Old guardrail", "description": "a bare guardrail name", "owner_team": "search",
        "metrics": {"primary": "conversion", "definitions": {"errors": {"direction": "decrease"}},
                    "guardrails": ["errors"]},
        "variants": [{"key": "model_a", "weight": 0.5}, {"key": "model_b", "weight": 0.5}],
    }, expect=201)
    exp_id = exp["id"]
    # The API takes new guardrails while the experiment runs: the editor is open, and says so.
    server.api("POST", f"{API}/experiments/{exp_id}/launch", {"ramp": 1}, expect=200)

    ui.goto(f"/experiments/{exp_id}/settings")
    row = guardrail_row(page, 1)
    expect(page.get_by_test_id("guardrail-row-editor")).to_have_count(1)
    expect(row.get_by_label("Metric", exact=True)).to_have_value("errors")
    expect(row.get_by_label("Tolerated harm (%)")).to_have_value("0")
    expect(row.get_by_label("When it trips")).to_have_value("alert")
    expect(row.get_by_label("When it trips")).to_be_enabled()
    expect(page.get_by_test_id("guardrails-note")).to_contain_text("can change while the experiment is RUNNING")
    # Loaded as it is stored: nothing to save.
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Nothing to save")
    problems = axe(ui, axe_js, "settings-guardrails")

    row.get_by_label("When it trips").select_option(label="Pause the experiment")
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Saved: metrics")
    after = stored(server, exp_id)
    assert after["metrics"]["guardrails"] == [{"metric": "errors", "margin": 0, "action": "pause"}], after["metrics"]
    assert after["metrics"]["definitions"] == {"errors": {"direction": "decrease"}}, after["metrics"]
    version = after["version"]

    # A negative margin: the server's 422 names metrics.guardrails[0].margin, and its message
    # shows under that input (marked invalid, focused); nothing is saved.
    _, refused = server.api("PATCH", f"{API}/experiments/{exp_id}", {
        "metrics": {"guardrails": [{"metric": "errors", "margin": -0.05, "action": "pause"}]}}, expect=422)
    server_message = refused["error"]["fields"]["metrics.guardrails[0].margin"]
    assert "greater than or equal to 0" in server_message, refused
    row = guardrail_row(page, 1)
    margin = row.get_by_label("Tolerated harm (%)")
    margin.fill("-5")
    page.get_by_test_id("save-settings").click()
    error = row.get_by_test_id("guardrail-margin-error")
    expect(error).to_have_text(server_message)
    expect(margin).to_have_attribute("aria-invalid", "true")
    expect(margin).to_be_focused()
    expect(page.get_by_test_id("form-errors")).to_contain_text("Not saved (HTTP 422)")
    assert error.get_attribute("id") in (margin.get_attribute("aria-describedby") or "").split()
    unchanged = stored(server, exp_id)
    assert unchanged["version"] == version, unchanged
    assert unchanged["metrics"]["guardrails"] == [{"metric": "errors", "margin": 0, "action": "pause"}], unchanged
    problems += axe(ui, axe_js, "settings-guardrail-error")
    ui.shot("settings-guardrail-error-1440")
    card_shot(ui, page.get_by_test_id("guardrails-section"), "settings-guardrail-error-1440-editor")
    # Typing clears the mark; a good margin saves.
    margin.fill("10")
    expect(error).to_be_hidden()
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Saved: metrics")
    assert stored(server, exp_id)["metrics"]["guardrails"] == [{"metric": "errors", "margin": 0.1, "action": "pause"}]

    # 390 px: the settings with the row, no sideways scroll, axe clean.
    phone.goto(f"/experiments/{exp_id}/settings")
    expect(guardrail_row(phone.page, 1).get_by_label("Tolerated harm (%)")).to_have_value("10")
    no_sideways_scroll(phone, "settings")
    problems += axe(phone, axe_js, "settings-guardrails-phone")
    phone.shot("settings-guardrails-390")
    card_shot(phone, phone.page.get_by_test_id("guardrails-section"), "settings-guardrails-390-editor")

    # Stopped: the API refuses every edit, so the editor is locked and says why.
    server.api("POST", f"{API}/experiments/{exp_id}/stop", {}, expect=200)
    ui.goto(f"/experiments/{exp_id}/settings")
    row = guardrail_row(page, 1)
    expect(row.get_by_label("When it trips")).to_be_disabled()
    expect(row.get_by_label("Tolerated harm (%)")).to_have_attribute("readonly", "")
    expect(page.get_by_test_id("add-guardrail")).to_be_hidden()
    expect(page.get_by_test_id("remove-guardrail")).to_be_hidden()
    expect(page.get_by_test_id("guardrails-note")).to_contain_text("locked: the experiment is stopped")
    assert not problems, "axe-core found serious or critical violations:\n" + "\n".join(problems)


def test_settings_keep_stored_margins_and_add_a_row(ui: Page) -> None:
    """An object guardrail and a bare name load as rows; an untouched form sends nothing; a row
    added saves next to them with the stored margins and actions kept exactly."""
    server = ui.server
    _, exp = server.api("POST", f"{API}/experiments", {
        "name": "Old style", "description": "minimize list", "owner_team": "search",
        "metrics": {"primary": "conversion", "minimize": ["latency_ms"],
                    "guardrails": [{"metric": "errors", "margin": 0.1234567, "action": "pause"}, "latency_ms"]},
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
    }, expect=201)
    page = ui.page
    ui.goto(f"/experiments/{exp['id']}/settings")
    expect(page.get_by_test_id("guardrail-row-editor")).to_have_count(2)
    expect(guardrail_row(page, 1).get_by_label("Tolerated harm (%)")).to_have_value("12.3457")
    expect(guardrail_row(page, 2).get_by_label("When it trips")).to_have_value("alert")
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Nothing to save")

    page.get_by_test_id("add-guardrail").click()
    row = guardrail_row(page, 3)
    row.get_by_label("Metric", exact=True).fill("cost_usd")
    row.get_by_label("Tolerated harm (%)").fill("12.5")
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Saved")
    guards = stored(server, exp["id"])["metrics"]["guardrails"]
    assert guards == [{"metric": "errors", "margin": 0.1234567, "action": "pause"},
                      {"metric": "latency_ms", "margin": 0, "action": "alert"},
                      {"metric": "cost_usd", "margin": 0.125, "action": "alert"}], guards
