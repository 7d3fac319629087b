"""Quality, cost and latency together in the browser: the results page's trade-off chart for a
constrained bandit (one point per variant with intervals both ways, the bounds as dashed lines,
an infeasible variant greyed, live after a bound changes), quantile and cap display, and
defining metric definitions and a constrained objective through the new-experiment and settings
forms, with the server's field errors placed next to the row they name."""

from __future__ import annotations

import math
import random
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, Page, screenshots_dir
from tests.e2e.test_seed_flow import post_events

pytestmark = pytest.mark.browser

API = "/api/v1"
MODELS = ["model_1", "model_2", "model_3", "model_4"]
QUALITY = [0.70, 0.76, 0.80, 0.82]
COST = [0.2, 0.5, 1.0, 3.0]
P95_MS = [400.0, 700.0, 1100.0, 2600.0]
DEFINITIONS = {
    "latency_ms": {"stat": "p95", "direction": "decrease"},
    "cost_usd": {"direction": "decrease", "cap": 10},
}
OBJECTIVE = {"metric": "quality", "constraints": [
    {"metric": "cost_usd", "max": 1.5}, {"metric": "latency_ms", "max": 1500}]}


def card_shot(ui: Page, locator: Any, label: str) -> None:
    """A screenshot of one element, numbered with the page's full-page shots."""
    path = screenshots_dir() / f"{ui.name}-{len(ui.shots) + 1:02d}-{label}.png"
    locator.screenshot(path=str(path), animations="disabled", style=".topbar{position:static !important}")
    ui.shots.append(path)


def router_experiment(server: LiveServer) -> dict[str, Any]:
    body = {
        "name": "Model router",
        "description": "Four models: the best quality under a cost and a p95 latency budget",
        "owner_team": "platform",
        "allocation": "bandit",
        "metrics": {"primary": "quality", "definitions": DEFINITIONS},
        "bandit": {"objective": OBJECTIVE, "update_interval_s": 0.5, "burn_in_units": 20,
                   "min_units": 50},
        "variants": [{"key": k, "weight": 0.25} for k in MODELS],
    }
    _, exp = server.api("POST", f"{API}/experiments", body, expect=201)
    server.api("POST", f"{API}/experiments/{exp['id']}/launch", {"ramp": 1}, expect=200)
    return dict(exp)


def router_traffic(server: LiveServer, exp_id: str, per_model: int = 160) -> None:
    """Exposures, a 0/1 quality, a cost and two latencies per request, per model."""
    rng = random.Random(7)
    sigma = 0.5
    events: list[dict[str, Any]] = []
    for m, key in enumerate(MODELS):
        mu = math.log(P95_MS[m]) - 1.645 * sigma  # lognormal with that p95
        for i in range(per_model):
            unit = f"{key}-u{i}"
            events.append({"type": "exposure", "experiment": exp_id, "unit_id": unit, "variant": key})
            ok = (i % 50) < QUALITY[m] * 50
            events.append({"type": "metric", "experiment": exp_id, "unit_id": unit, "metric": "quality",
                           "value": 1.0 if ok else 0.0})
            events.append({"type": "metric", "experiment": exp_id, "unit_id": unit, "metric": "cost_usd",
                           "value": round(COST[m] * (0.9 + 0.2 * (i % 10) / 9), 4)})
            for _ in range(2):
                events.append({"type": "metric", "experiment": exp_id, "unit_id": unit,
                               "metric": "latency_ms", "value": round(rng.lognormvariate(mu, sigma), 2)})
    post_events(server, "/events", events)


def test_tradeoff_chart_draws_variants_bounds_and_greys_the_infeasible(ui: Page) -> None:
    server = ui.server
    exp = router_experiment(server)
    page = ui.page
    ui.goto(f"/experiments/{exp['id']}/results")
    expect(page.get_by_test_id("no-results").or_(page.get_by_test_id("total-units"))).to_be_visible()
    router_traffic(server, exp["id"])
    # Every event folded: 640 units, two latencies and one cost per unit.
    expect(page.get_by_test_id("total-units")).to_have_attribute("data-value", "640", timeout=30_000)
    for metric, count in (("latency_ms", "320"), ("cost_usd", "160"), ("quality", "160")):
        expect(page.get_by_test_id(f"metric-summary-{metric}").locator("tr[data-key=model_4] [data-testid=count]")).to_have_text(
            count, timeout=30_000)

    chart = page.get_by_test_id("tradeoff-chart")
    points = chart.get_by_test_id("tradeoff-point")
    expect(points).to_have_count(4)
    # Across: the first constraint's metric; its bound drawn as a dashed line with a label.
    expect(page.get_by_label("Across (x axis)")).to_have_value("cost_usd")
    bound = chart.get_by_test_id("tradeoff-bound")
    expect(bound).to_have_count(1)
    expect(bound).to_have_attribute("data-metric", "cost_usd")
    expect(bound).to_have_attribute("data-value", "1.5")
    expect(bound).to_contain_text("max 1.5")
    assert bound.locator("line.bound").evaluate("e => getComputedStyle(e).strokeDasharray") not in ("", "none")
    expect(chart.get_by_test_id("tradeoff-x-title")).to_contain_text("cost_usd · mean per unit · lower is better")
    expect(chart.get_by_test_id("tradeoff-y-title")).to_contain_text("quality")

    # model_4 costs 3.0 and is slow: infeasible, greyed; the others meet both bounds.
    m4 = chart.locator("[data-testid=tradeoff-point][data-key=model_4]")
    expect(m4).to_have_attribute("data-feasible", "false")
    expect(m4).to_have_class(re.compile(r"\binfeasible\b"))
    assert m4.locator("circle").get_attribute("fill") == "#a3a9b5"
    for key in MODELS[:3]:
        p = chart.locator(f"[data-testid=tradeoff-point][data-key={key}]")
        expect(p).to_have_attribute("data-feasible", "true")
        assert p.locator("circle").get_attribute("fill") != "#a3a9b5"
        # A point with its 95% intervals both ways: two whiskers plus their end caps.
        expect(p.locator("line.whisker")).to_have_count(6)
    # Points sit left to right by cost.
    xs = [float(chart.locator(f"[data-testid=tradeoff-point][data-key={k}] circle").get_attribute("cx"))
          for k in MODELS]
    assert xs == sorted(xs), xs
    # The hover text says why a variant is infeasible.
    assert "Infeasible: cost_usd" in m4.locator("title").first.text_content()

    table = page.get_by_test_id("tradeoff-table")
    expect(table.locator("tr[data-key=model_4]")).to_have_attribute("data-feasible", "false")
    expect(table.locator("tr[data-key=model_4] [data-testid=tradeoff-feasible]")).to_contain_text("cost_usd ≤ 1.5")
    expect(table.locator("tr[data-key=model_4] [data-testid=tradeoff-feasible]")).to_contain_text("latency_ms ≤ 1,500")
    expect(table.locator("tr[data-key=model_3] [data-testid=tradeoff-feasible]")).to_have_text("Yes")
    # The constrained bandit's P(feasible) per constraint, once it has updated.
    expect(table.locator("tr[data-key=model_4] [data-metric=cost_usd] [data-testid=p-feasible]")).to_have_text(
        "P(meets) <0.1%", timeout=20_000)
    expect(table.locator("tr[data-key=model_1] [data-metric=cost_usd] [data-testid=p-feasible]")).to_have_text(
        "P(meets) >99.9%")

    # Quantile metric summaries show p50/p95/p99; the capped metric shows its cap.
    latency = page.get_by_test_id("metric-summary-latency_ms")
    expect(latency.get_by_test_id("metric-definition")).to_have_text("p95 · lower is better")
    p95 = float(latency.locator("tr[data-key=model_4] [data-testid=p95]").inner_text().replace(",", ""))
    assert 1800 < p95 < 3600, p95
    for q in ("p50", "p99"):
        expect(latency.locator(f"tr[data-key=model_1] [data-testid={q}]")).not_to_have_text("—")
    expect(page.get_by_test_id("metric-summary-cost_usd").get_by_test_id("metric-cap")).to_have_text("cap 10 per unit")
    expect(page.get_by_test_id("metric-summary-quality").get_by_test_id("metric-definition")).to_have_text("higher is better")
    # The lift table reads the latency's p95 and says lower is better; model_4 is slower: red.
    lat_lift = page.locator("[data-testid=lift-table][data-metric=latency_ms]")
    expect(lat_lift.get_by_test_id("lift-direction")).to_have_text(" · lower is better")
    expect(lat_lift.locator("caption")).to_contain_text("p95 of event values")
    row4 = lat_lift.locator("[data-testid=lift-row][data-treatment=model_4]")
    expect(row4).to_have_class(re.compile(r"tone-bad"))
    expect(row4.get_by_test_id("significant")).to_have_text("✓ Yes, worse")
    page.get_by_test_id("tradeoff").scroll_into_view_if_needed()
    ui.shot("tradeoff-cost")

    # Across latency instead: its bound line, model_4 still greyed.
    page.get_by_label("Across (x axis)").select_option("latency_ms")
    expect(bound).to_have_attribute("data-metric", "latency_ms")
    expect(bound).to_have_attribute("data-value", "1500")
    expect(chart.get_by_test_id("tradeoff-x-title")).to_contain_text("latency_ms · p95 · lower is better")
    expect(points).to_have_count(4)
    expect(m4).to_have_attribute("data-feasible", "false")
    card_shot(ui, page.get_by_test_id("tradeoff"), "tradeoff-latency-card")

    # The bounds change while running: the chart follows on its next refresh, and the chosen
    # axis stays chosen.
    loosened = {"metric": "quality", "constraints": [
        {"metric": "cost_usd", "max": 5}, {"metric": "latency_ms", "max": 4000}]}
    _, stored = server.api("GET", f"{API}/experiments/{exp['id']}", expect=200)
    server.api("PATCH", f"{API}/experiments/{exp['id']}", {"bandit": {**stored["bandit"], "objective": loosened}},
               expect=200)
    expect(bound).to_have_attribute("data-value", "4000", timeout=20_000)
    expect(page.get_by_label("Across (x axis)")).to_have_value("latency_ms")
    expect(m4).to_have_attribute("data-feasible", "true")
    assert m4.locator("circle").get_attribute("fill") != "#a3a9b5"
    ui.shot("tradeoff-loosened")


def fill_row(row: Any, **values: str) -> None:
    for label, value in values.items():
        control = row.get_by_label(label, exact=True)
        if control.evaluate("e => e.tagName") == "SELECT":
            control.select_option(label=value)
        else:
            control.fill(value)


def test_define_a_constrained_objective_in_the_forms(ui: Page) -> None:
    page = ui.page
    server = ui.server
    ui.goto("/experiments/new")
    page.get_by_label("Name", exact=True).fill("Router bake-off")
    page.get_by_label("Description", exact=True).fill("Best quality under cost and latency budgets")
    page.get_by_label("Owner team", exact=True).fill("platform")
    page.get_by_label("Primary metric").fill("quality")
    defs = page.get_by_test_id("definitions-editor")
    expect(defs.get_by_test_id("no-definitions")).to_be_visible()

    # Keyboard: the add button focuses the new row's metric name.
    page.get_by_test_id("add-definition").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("group", name="Metric definition 1").get_by_label("Metric", exact=True)).to_be_focused()
    page.keyboard.type("latency_ms")
    page.keyboard.press("Tab")
    fill_row(page.get_by_role("group", name="Metric definition 1"), Direction="Lower is better",
             Statistic="p95 of event values")
    page.get_by_test_id("add-definition").click()
    fill_row(page.get_by_role("group", name="Metric definition 2"), Metric="cost_usd",
             Direction="Lower is better", **{"Cap per unit": "10"})
    # A third row, removed again.
    page.get_by_test_id("add-definition").click()
    page.get_by_role("button", name="Remove metric definition 3").click()
    expect(defs.get_by_test_id("definition-row")).to_have_count(2)

    page.get_by_test_id("allocation-bandit").check()
    objective = page.get_by_test_id("objective-editor")
    expect(objective).to_be_visible()
    page.get_by_label("Objective metric").fill("quality")
    page.get_by_test_id("add-constraint").click()
    fill_row(page.get_by_role("group", name="Constraint 1"), **{"Constrained metric": "cost_usd",
                                                                "Bound": "at most (max)", "Value": "1.5"})
    page.get_by_test_id("add-constraint").click()
    fill_row(page.get_by_role("group", name="Constraint 2"), **{"Constrained metric": "latency_ms",
                                                                "Bound": "at most (max)", "Value": "1500"})
    # At most five constraints: the add button stops at five.
    for _ in range(3):
        page.get_by_test_id("add-constraint").click()
    expect(page.get_by_test_id("add-constraint")).to_be_disabled()
    expect(page.get_by_test_id("constraint-limit")).to_be_visible()
    for n in (5, 4, 3):
        page.get_by_role("button", name=f"Remove constraint {n}").click()
    expect(page.get_by_test_id("constraint-row")).to_have_count(2)
    expect(page.get_by_test_id("add-constraint")).to_be_enabled()
    page.get_by_test_id("metric-definitions").scroll_into_view_if_needed()
    ui.shot("new-objective-form")

    page.get_by_test_id("save-draft").click()
    expect(page).to_have_url(re.compile(r"/experiments/[0-9a-f-]{36}$"))
    exp_id = page.url.rsplit("/", 1)[1]
    _, stored = server.api("GET", f"{API}/experiments/{exp_id}", expect=200)
    assert stored["metrics"]["definitions"] == {
        "latency_ms": {"direction": "decrease", "stat": "p95"},
        "cost_usd": {"direction": "decrease", "cap": 10},
    }, stored["metrics"]
    assert stored["metrics"]["primary"] == "quality"
    assert stored["allocation"] == "bandit"
    assert stored["bandit"]["objective"] == OBJECTIVE, stored["bandit"]
    assert stored["bandit"]["reward_metric"] == "quality"
    expect(page.get_by_test_id("detail-definitions")).to_contain_text("latency_ms: p95 · lower is better")
    expect(page.get_by_test_id("detail-definitions")).to_contain_text("cost_usd: lower is better · capped at 10 per unit")
    expect(page.get_by_test_id("detail-objective")).to_contain_text("best quality among the variants with cost_usd ≤ 1.5 and latency_ms ≤ 1500")
    ui.shot("detail-objective")

    # Settings after launch: the objective's metric is locked, its bounds and the definitions
    # still change.
    server.api("POST", f"{API}/experiments/{exp_id}/launch", {"ramp": 1}, expect=200)
    ui.goto(f"/experiments/{exp_id}/settings")
    expect(page.get_by_label("Objective metric")).to_have_attribute("readonly", "")
    page.get_by_role("group", name="Constraint 1").get_by_label("Value", exact=True).fill("2")
    # Stored definitions come back sorted by name: cost_usd, latency_ms.
    expect(page.get_by_role("group", name="Metric definition 1").get_by_label("Metric", exact=True)).to_have_value("cost_usd")
    fill_row(page.get_by_role("group", name="Metric definition 2"), Statistic="p99 of event values")
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Saved")
    _, stored = server.api("GET", f"{API}/experiments/{exp_id}", expect=200)
    assert stored["bandit"]["objective"]["constraints"] == [
        {"metric": "cost_usd", "max": 2}, {"metric": "latency_ms", "max": 1500}]
    latency_def = stored["metrics"]["definitions"]["latency_ms"]
    assert latency_def == {"direction": "decrease", "stat": "p99"}, stored["metrics"]
    # Nothing changed: nothing is sent (the stored definitions read back as the form has them).
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Nothing to save")
    ui.shot("settings-objective")


def test_settings_keep_the_minimize_list_and_guardrail_settings(ui: Page) -> None:
    """An older `minimize` list reads as lower is better; a guardrail's margin and action
    survive the settings form (one row each); an unchanged form sends nothing."""
    server = ui.server
    _, exp = server.api("POST", f"{API}/experiments", {
        "name": "Old style", "description": "minimize list", "owner_team": "search",
        "metrics": {"primary": "conversion", "minimize": ["latency_ms"],
                    "guardrails": [{"metric": "errors", "margin": 0.1, "action": "pause"}, "latency_ms"]},
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
    }, expect=201)
    page = ui.page
    ui.goto(f"/experiments/{exp['id']}/settings")
    row = page.get_by_role("group", name="Metric definition 1")
    expect(row.get_by_label("Metric", exact=True)).to_have_value("latency_ms")
    expect(row.get_by_label("Direction", exact=True)).to_have_value("decrease")
    expect(page.get_by_role("group", name="Guardrail 1").get_by_label("Metric", exact=True)).to_have_value("errors")
    expect(page.get_by_role("group", name="Guardrail 2").get_by_label("Metric", exact=True)).to_have_value("latency_ms")
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Nothing to save")

    # A new guardrail is added; the stored one keeps its margin and action.
    page.get_by_test_id("add-guardrail").click()
    page.get_by_role("group", name="Guardrail 3").get_by_label("Metric", exact=True).fill("cost_usd")
    page.get_by_test_id("save-settings").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("Saved")
    _, stored = server.api("GET", f"{API}/experiments/{exp['id']}", expect=200)
    guards = {g["metric"]: g for g in stored["metrics"]["guardrails"]}
    assert guards["errors"]["margin"] == 0.1 and guards["errors"]["action"] == "pause", guards
    assert set(guards) == {"errors", "latency_ms", "cost_usd"}
    assert stored["metrics"]["definitions"] == {"latency_ms": {"direction": "decrease"}}, stored["metrics"]
    page.get_by_test_id("detail-link").click()
    expect(page.get_by_text("errors (pause, margin 10%), latency_ms, cost_usd")).to_be_visible()


def test_server_field_errors_land_next_to_the_row(ui: Page) -> None:
    page = ui.page
    ui.goto("/experiments/new")
    page.get_by_label("Name", exact=True).fill("Router bake-off")
    page.get_by_label("Description", exact=True).fill("Bad constraint")
    page.get_by_label("Owner team", exact=True).fill("platform")
    page.get_by_label("Primary metric").fill("quality")
    page.get_by_test_id("add-definition").click()
    fill_row(page.get_by_role("group", name="Metric definition 1"), Metric="revenue", **{"Cap per unit": "-5"})
    page.get_by_test_id("allocation-bandit").check()
    page.get_by_test_id("add-constraint").click()
    row = page.get_by_role("group", name="Constraint 1")
    fill_row(row, **{"Constrained metric": "gpu_hours", "Value": "2"})
    page.get_by_test_id("save-draft").click()

    # The shape check comes first: the negative cap, next to its row's cap.
    summary = page.get_by_test_id("form-errors")
    expect(summary).to_contain_text("The draft was not saved")
    cap_row = page.get_by_role("group", name="Metric definition 1")
    cap_err = cap_row.locator(".vcell[data-key=cap] .field-error")
    expect(cap_err).to_be_visible()
    expect(cap_err).to_contain_text("greater than 0")
    expect(cap_row.get_by_label("Cap per unit", exact=True)).to_be_focused()
    expect(summary.locator("li")).to_have_count(0)  # nothing left unplaced
    ui.shot("cap-field-error")

    # Then the objective: a constraint on a metric the experiment does not name.
    cap_row.get_by_label("Cap per unit", exact=True).fill("500")
    expect(cap_err).to_be_hidden()
    page.get_by_test_id("save-draft").click()
    metric_err = row.locator(".vcell[data-key=metric] .field-error")
    expect(metric_err).to_be_visible()
    expect(metric_err).to_contain_text("unknown metric 'gpu_hours'")
    expect(row.get_by_label("Constrained metric", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(row.get_by_label("Constrained metric", exact=True)).to_be_focused()
    expect(summary.locator("li")).to_have_count(0)
    assert page.url.endswith("/experiments/new")
    row.scroll_into_view_if_needed()
    ui.shot("objective-field-error", full_page=False)

    # Fixing the row clears its error; the server then accepts it.
    row.get_by_label("Constrained metric", exact=True).fill("revenue")
    expect(metric_err).to_be_hidden()
    page.get_by_test_id("save-draft").click()
    expect(page).to_have_url(re.compile(r"/experiments/[0-9a-f-]{36}$"))
    _, stored = ui.server.api("GET", f"{API}/experiments/{page.url.rsplit('/', 1)[1]}", expect=200)
    assert stored["bandit"]["objective"] == {"metric": "quality", "constraints": [{"metric": "revenue", "max": 2}]}
    assert stored["metrics"]["definitions"] == {"revenue": {"cap": 500}}


def test_tradeoff_at_phone_width(phone: Page) -> None:
    server = phone.server
    exp = router_experiment(server)
    router_traffic(server, exp["id"], per_model=60)
    page = phone.page
    phone.goto(f"/experiments/{exp['id']}/results")
    expect(page.get_by_test_id("tradeoff-chart").get_by_test_id("tradeoff-point")).to_have_count(4, timeout=30_000)
    expect(page.get_by_test_id("tradeoff-table").get_by_test_id("tradeoff-row")).to_have_count(4)
    expect(page.get_by_test_id("metric-summary-latency_ms").locator("tr[data-key=model_4] [data-testid=count]")).to_have_text(
        "120", timeout=30_000)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"the results page scrolls sideways by {overflow}px at phone width"
    card_shot(phone, page.get_by_test_id("tradeoff"), "tradeoff")
