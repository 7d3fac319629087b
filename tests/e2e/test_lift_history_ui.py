"""Lift over time on the results page, seeded through the API and the app's own recompute loop:
three batches of traffic, each posted once the history (GET .../results/history) has a point
in a new timeline bucket (10 s for a young experiment), so every metric gets several points
and the treatment that led at first (a novelty effect) fades. Before the second point each
metric says when its chart will appear; then each has one line per treatment with its
interval shaded, zero marked, a legend naming the treatments with their latest lift, and a
table whose newest row, like the legend and the hover title, carries the API's latest numbers
as the page formats them. The chart appears and refreshes without reloading the page. No
console error; axe-core finds nothing serious; 1440×900 and 390×844 (no sideways scroll)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, Page
from tests.e2e.test_a11y import axe, axe_js  # noqa: F401  (axe_js is a fixture)
from tests.e2e.test_seed_flow import post_events
from tests.e2e.test_tradeoff import card_shot
from tests.e2e.test_verdict import experiment, rel_pct, wide  # noqa: F401  (wide is a fixture)

pytestmark = pytest.mark.browser

API = "/api/v1"
CONTROL = "current"
TREATMENTS = ("two_tower", "hybrid")
METRICS = ("conversion", "revenue")
EMPTY = "Lift over time appears after the second recompute with data."
UNITS = 300  # per arm and batch
# Converting units per arm in each batch: two_tower's early lead fades.
BATCHES = [
    {"current": 30, "two_tower": 66, "hybrid": 36},
    {"current": 33, "two_tower": 39, "hybrid": 39},
    {"current": 30, "two_tower": 33, "hybrid": 39},
]


def post_batch(server: LiveServer, exp_id: str, n: int) -> None:
    """UNITS new exposed units per arm; the converting ones also log revenue."""
    events: list[dict[str, Any]] = []
    for arm, conv in BATCHES[n].items():
        for i in range(UNITS):
            unit = f"{arm}-b{n}-{i}"
            events.append({"type": "exposure", "experiment": exp_id, "unit_id": unit, "variant": arm})
            if i < conv:
                events.append({"type": "conversion", "experiment": exp_id, "unit_id": unit})
                events.append({"type": "metric", "experiment": exp_id, "unit_id": unit, "metric": "revenue",
                               "value": 20.0 + (i % 7) + (4.0 if arm == "two_tower" and n == 0 else 0.0)})
    post_events(server, "/events", events)


def history(server: LiveServer, exp_id: str) -> dict[str, Any]:
    _, body = server.api("GET", f"{API}/experiments/{exp_id}/results/history", expect=200)
    return dict(body)


def latest_rows(body: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["metric"], r["treatment"]): r for r in body["points"][-1]["rows"]}


def wait_history(server: LiveServer, page: Any, exp_id: str, points: int, batches: int, timeout: float = 45) -> dict[str, Any]:
    """Until the history has `points` points, the latest counting every unit of `batches` batches
    in every arm of every metric, and two reads in a row agree on the latest rows."""
    deadline = time.monotonic() + timeout
    units = UNITS * batches
    prev = None
    while True:
        body = history(server, exp_id)
        pts = body["points"]
        if len(pts) >= points:
            rows = latest_rows(body)
            full = all((m, t) in rows and rows[(m, t)]["control_units"] == units and rows[(m, t)]["treatment_units"] == units
                       for m in METRICS for t in TREATMENTS)
            if full and rows == prev:
                return body
            prev = rows if full else None
        assert time.monotonic() < deadline, f"no history with {points} points of {batches} batches: {str(body)[:600]}"
        page.wait_for_timeout(400)


def lift_text(row: dict[str, Any]) -> str:
    """lifthistory.js liftText: relPct of the lift, then its interval."""
    lo, hi = row["rel_ci"]
    return f"{rel_pct(row['rel_lift'])} [{rel_pct(lo)}, {rel_pct(hi)}]"


def check_chart(page: Any, body: dict[str, Any]) -> None:
    """Every metric: one line per treatment, bands, zero, a legend and a table with the API's
    latest numbers as the page formats them."""
    rows = latest_rows(body)
    for metric in METRICS:
        sec = page.get_by_test_id(f"lift-history-{metric}")
        chart = sec.get_by_test_id("lift-history-chart")
        expect(chart).to_be_visible()
        expect(chart).to_have_attribute("role", "img")
        label = chart.get_attribute("aria-label") or ""
        assert label.startswith(f"Lift over time of {metric}: the relative lift of two_tower, hybrid against {CONTROL}"), label
        expect(sec.get_by_role("heading", name="Lift over time")).to_be_visible()
        lines = chart.get_by_test_id("lift-history-line")
        expect(lines).to_have_count(len(TREATMENTS))
        assert [lines.nth(i).get_attribute("data-treatment") for i in range(len(TREATMENTS))] == list(TREATMENTS)
        for t in TREATMENTS:
            assert int(chart.locator(f"[data-testid=lift-history-line][data-treatment={t}]").get_attribute("data-points") or 0) >= 3
            expect(chart.locator(f"[data-testid=lift-history-band][data-treatment={t}]")).not_to_have_count(0)
        expect(chart.get_by_test_id("lift-history-zero")).to_have_count(1)
        # The legend names the treatments, with their latest lift and interval.
        legend = sec.get_by_test_id("lift-history-legend")
        items = legend.get_by_test_id("lift-history-legend-item")
        expect(items).to_have_count(len(TREATMENTS))
        for t in TREATMENTS:
            row = rows[(metric, t)]
            item = legend.locator(f"[data-testid=lift-history-legend-item][data-treatment={t}]")
            expect(item.locator("code")).to_have_text(t)
            latest = item.get_by_test_id("lift-history-latest")
            expect(latest).to_have_text(f"latest {lift_text(row)}")
            assert float(latest.get_attribute("data-value") or "nan") == row["rel_lift"]
            assert float(latest.get_attribute("data-lo") or "nan") == row["rel_ci"][0]
            assert float(latest.get_attribute("data-hi") or "nan") == row["rel_ci"][1]
            assert float(chart.locator(f"[data-testid=lift-history-last][data-treatment={t}]").get_attribute("data-value") or "nan") == row["rel_lift"]
        expect(legend).to_contain_text("no change (0%)")
        # The hover title of the latest point has every treatment's numbers.
        title = chart.get_by_test_id("lift-history-hit").last.locator("title").text_content() or ""
        for t in TREATMENTS:
            assert f"{t}: {lift_text(rows[(metric, t)])}" in title, title
        # The table: newest first, the same numbers.
        table = sec.get_by_test_id("lift-history-table")
        expect(table.locator("thead th")).to_have_text(["Time", *TREATMENTS])  # in a closed <details>
        newest = table.get_by_test_id("lift-history-row").first
        for t in TREATMENTS:
            row = rows[(metric, t)]
            cell = newest.locator(f"[data-testid=lift-history-cell][data-treatment={t}]")
            expect(cell.locator("div").first).to_have_text(rel_pct(row["rel_lift"]))
            expect(cell.locator("div").last).to_have_text(f"[{rel_pct(row['rel_ci'][0])}, {rel_pct(row['rel_ci'][1])}]")
            assert float(cell.get_attribute("data-value") or "nan") == row["rel_lift"]


def test_lift_over_time_per_metric_with_the_apis_numbers(wide: Page, phone: Page, axe_js: str) -> None:  # noqa: F811
    server = wide.server
    page = wide.page
    exp = experiment(server, [(CONTROL, 1 / 3), ("two_tower", 1 / 3), ("hybrid", 1 / 3)], name="Ranker over time")
    exp_id = exp["id"]
    assert history(server, exp_id)["points"] == []
    status, _ = server.api("GET", f"{API}/experiments/00000000-0000-0000-0000-000000000000/results/history")
    assert status == 404

    post_batch(server, exp_id, 0)
    first = wait_history(server, page, exp_id, points=1, batches=1)

    # Before a second point: the sentence, no chart (the history is cut to its first point here,
    # since the second one may come within a second).
    def first_point_only(route: Any) -> None:
        resp = route.fetch()
        body = resp.json()
        body["points"] = body["points"][:1]
        route.fulfill(response=resp, json=body)

    page.route("**/results/history", first_point_only)
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if r.url.endswith("/results/history") else None)
    wide.goto(f"/experiments/{exp_id}/results")
    for metric in METRICS:
        sec = page.get_by_test_id(f"lift-history-{metric}")
        expect(sec.get_by_test_id("lift-history-empty")).to_have_text(EMPTY, timeout=20_000)
        expect(sec.get_by_test_id("lift-history-chart")).to_have_count(0)
        expect(sec).to_have_attribute("data-points", "1")
    assert {r["metric"] for r in first["points"][0]["rows"]} == set(METRICS)
    page.unroute("**/results/history")

    # The page fetches the history again with each new snapshot: the chart appears by itself.
    wait_history(server, page, exp_id, points=2, batches=1)
    for metric in METRICS:
        expect(page.get_by_test_id(f"lift-history-{metric}").get_by_test_id("lift-history-chart")).to_be_visible(timeout=20_000)
    post_batch(server, exp_id, 1)
    wait_history(server, page, exp_id, points=3, batches=2)
    post_batch(server, exp_id, 2)
    body = wait_history(server, page, exp_id, points=4, batches=3)
    check_chart(page, body)
    assert len(seen) >= 3, seen  # refreshed with the snapshots, not only on load
    # Each point of the chart is a point of the history: once the page has read the history
    # again, it shows at least the points above and no more than the API has.
    for metric in METRICS:
        sec = page.get_by_test_id(f"lift-history-{metric}")
        deadline = time.monotonic() + 15
        while int(sec.get_attribute("data-points") or 0) < len(body["points"]):
            assert time.monotonic() < deadline, (metric, sec.get_attribute("data-points"), len(body["points"]))
            page.wait_for_timeout(300)
        shown = int(sec.get_attribute("data-points") or 0)
        assert len(history(server, exp_id)["points"]) >= shown, (metric, shown)
    # two_tower's lead faded: its first lift is above its latest.
    rows0 = {(r["metric"], r["treatment"]): r for r in body["points"][0]["rows"]}
    assert rows0[("conversion", "two_tower")]["rel_lift"] > latest_rows(body)[("conversion", "two_tower")]["rel_lift"]

    problems = axe(wide, axe_js, "results-lift-history")
    page.get_by_test_id("lift-history-conversion").get_by_test_id("lift-history-table-toggle").click()
    expect(page.get_by_test_id("lift-history-conversion").get_by_test_id("lift-history-table")).to_be_visible()
    problems += axe(wide, axe_js, "results-lift-history-table")
    assert not problems, "axe-core found serious or critical violations:\n" + "\n".join(problems)
    page.mouse.move(0, 0)  # no hover highlight in the pictures
    wide.shot("desktop-1440")
    card_shot(wide, page.get_by_test_id("lift-conversion"), "desktop-1440-lift-conversion")
    assert not wide.errors, wide.errors

    # Phone width: the same charts, nothing scrolls sideways.
    ppage = phone.page
    phone.goto(f"/experiments/{exp_id}/results")
    for metric in METRICS:
        expect(ppage.get_by_test_id(f"lift-history-{metric}").get_by_test_id("lift-history-line")).to_have_count(len(TREATMENTS), timeout=20_000)
    check_chart(ppage, history(server, exp_id))
    ppage.wait_for_timeout(300)
    width = ppage.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the results page scrolls sideways at 390 px: scrollWidth {width}"
    box = ppage.get_by_test_id("lift-history-conversion").get_by_test_id("lift-history-chart").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    phone.shot("phone-390")
    card_shot(phone, ppage.get_by_test_id("lift-history-conversion"), "phone-390-lift-history")
    assert not phone.errors, phone.errors
