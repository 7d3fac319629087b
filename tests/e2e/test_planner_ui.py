"""The planning panel on the new-experiment and settings screens: POST /api/v1/plan with the
baseline, variants, MDE, power and traffic per day, answered with units and days for the fixed
and the sequential analysis (the numbers the API gives for the same request); the reverse (the
smallest detectable effect in so many days); the server's 422 next to the field it names;
Enter plans without saving the experiment. 1440×900 and 390×844 screenshots."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Page
from tests.e2e.test_verdict import wide

pytestmark = pytest.mark.browser

API = "/api/v1"
__all__ = ["wide"]


def fill(page: Any, **values: str) -> None:
    for testid, value in values.items():
        page.get_by_test_id(testid).fill(value)


def test_plan_units_then_the_reverse_on_the_new_screen(wide: Page) -> None:
    page = wide.page
    server = wide.server
    wide.goto("/experiments/new")
    planner = page.get_by_test_id("planner")
    expect(planner).to_be_visible()
    expect(page.get_by_test_id("plan-variants")).to_have_value("2")
    fill(page, **{"plan-rate": "10", "plan-mde": "5", "plan-traffic": "10000", "plan-power": "80"})
    page.get_by_test_id("plan-run").click()
    _, want = server.api("POST", f"{API}/plan", {"metric": "rate", "rate": 0.1, "mde": 0.05, "mde_type": "relative",
                                                  "variants": 2, "power": 0.8, "traffic_per_day": 10000,
                                                  "analysis": "both"}, expect=200)
    result = page.get_by_test_id("plan-result")
    expect(result).to_have_attribute("data-state", "ready")
    for mode in ("fixed", "sequential"):
        row = page.get_by_test_id(f"plan-{mode}")
        expect(row.get_by_test_id("plan-units-per-arm")).to_have_text(f"{want[mode]['units_per_arm']:,}")
        expect(row.get_by_test_id("plan-total")).to_have_text(f"{want[mode]['total_units']:,}")
        expect(row.get_by_test_id("plan-days")).to_have_attribute("data-value", str(want[mode]["days"]))
    expect(page.get_by_test_id("plan-sentence")).to_contain_text(f"{want['fixed']['units_per_arm']:,} units per arm")
    # The sequential row is marked as this experiment's analysis (the form's default).
    expect(page.get_by_test_id("plan-sequential")).to_contain_text("this experiment")
    planner.scroll_into_view_if_needed()
    wide.shot("planner-units")

    # The reverse: the smallest detectable effect in 14 days at that traffic, by keyboard (Enter
    # in a planner field plans and does not save the experiment).
    page.get_by_test_id("plan-direction").select_option("mde")
    expect(page.get_by_test_id("plan-mde")).to_be_hidden()
    page.get_by_test_id("plan-days").fill("14")
    page.get_by_test_id("plan-days").press("Enter")
    _, back = server.api("POST", f"{API}/plan", {"metric": "rate", "rate": 0.1, "days": 14, "variants": 2, "power": 0.8,
                                                  "traffic_per_day": 10000, "analysis": "both"}, expect=200)
    expect(result).to_have_attribute("data-direction", "mde")
    for mode in ("fixed", "sequential"):
        cell = page.get_by_test_id(f"plan-{mode}").get_by_test_id("plan-mde-relative")
        assert float(cell.get_attribute("data-value")) == pytest.approx(back[mode]["mde"]["relative"], rel=1e-12)
        rel = back[mode]["mde"]["relative"] * 100
        expect(cell).to_have_text(f"±{float(f'{rel:.3g}'):g}%")
    assert page.url.endswith("/experiments/new"), page.url
    expect(page.get_by_test_id("form-errors")).to_be_hidden()
    wide.shot("planner-mde")


def test_plan_errors_land_next_to_the_field(ui: Page) -> None:
    page = ui.page
    ui.goto("/experiments/new")
    # The browser's own check: a rate must be a percentage in (0, 100).
    fill(page, **{"plan-rate": "150"})
    page.get_by_test_id("plan-run").click()
    expect(page.locator("[data-field='plan.rate'] .field-error")).to_have_text("Must be below 100%")
    expect(page.get_by_test_id("plan-rate")).to_be_focused()
    # The server's 422: 25 variants (at most 20), next to the variants field.
    fill(page, **{"plan-rate": "10", "plan-variants": "25"})
    page.get_by_test_id("plan-run").click()
    err = page.locator("[data-field='plan.variants'] .field-error")
    expect(err).to_be_visible()
    _, answer = ui.server.api("POST", f"{API}/plan", {"metric": "rate", "rate": 0.1, "mde": 0.05, "variants": 25}, expect=422)
    expect(err).to_contain_text(answer["error"]["fields"]["variants"])
    expect(page.get_by_test_id("plan-variants")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("[data-field='plan.rate'] .field-error")).to_be_hidden()
    # A mean needs its sd: the server names sd when it is missing.
    fill(page, **{"plan-variants": "2"})
    page.get_by_test_id("plan-metric").select_option("mean")
    fill(page, **{"plan-mean": "12.5", "plan-sd": "-1"})
    page.get_by_test_id("plan-run").click()
    expect(page.locator("[data-field='plan.sd'] .field-error")).to_have_text("Must be above 0")
    fill(page, **{"plan-sd": "4"})
    page.get_by_test_id("plan-run").click()
    expect(page.get_by_test_id("plan-result")).to_have_attribute("data-state", "ready")
    _, want = ui.server.api("POST", f"{API}/plan", {"metric": "mean", "mean": 12.5, "sd": 4, "mde": 0.05, "variants": 2,
                                                     "power": 0.8, "traffic_per_day": 10000}, expect=200)
    expect(page.get_by_test_id("plan-fixed").get_by_test_id("plan-units-per-arm")).to_have_text(f"{want['fixed']['units_per_arm']:,}")
    page.get_by_test_id("planner").scroll_into_view_if_needed()
    ui.shot("planner-errors", full_page=False)


def test_plan_on_the_settings_screen_uses_the_experiments_variants(ui: Page) -> None:
    server = ui.server
    _, exp = server.api("POST", f"{API}/experiments", {
        "name": "Three rankers", "description": "planning", "owner_team": "search", "analysis_mode": "fixed",
        "variants": [{"key": k, "weight": w} for k, w in (("a", 0.4), ("b", 0.3), ("c", 0.3))]}, expect=201)
    page = ui.page
    ui.goto(f"/experiments/{exp['id']}/settings")
    expect(page.get_by_test_id("plan-variants")).to_have_value("3")
    fill(page, **{"plan-rate": "4", "plan-mde": "10", "plan-traffic": "2500"})
    page.get_by_test_id("plan-run").click()
    _, want = server.api("POST", f"{API}/plan", {"metric": "rate", "rate": 0.04, "mde": 0.1, "variants": 3, "power": 0.8,
                                                  "traffic_per_day": 2500}, expect=200)
    expect(page.get_by_test_id("plan-fixed").get_by_test_id("plan-units-per-arm")).to_have_text(f"{want['fixed']['units_per_arm']:,}")
    expect(page.get_by_test_id("plan-fixed")).to_contain_text("this experiment")
    expect(page.get_by_test_id("plan-result")).to_contain_text("2 comparisons with the control")
    # Nothing was saved by planning.
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Nothing to save")


def test_planner_at_phone_width(phone: Page) -> None:
    page = phone.page
    phone.goto("/experiments/new")
    page.get_by_test_id("plan-run").click()
    expect(page.get_by_test_id("plan-result")).to_have_attribute("data-state", "ready")
    page.get_by_test_id("planner").scroll_into_view_if_needed()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"the new-experiment screen scrolls sideways by {overflow}px at phone width"
    phone.shot("planner", full_page=False)
