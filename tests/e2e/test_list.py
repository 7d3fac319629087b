"""The experiments list with each experiment's results at a glance, read from its results
snapshot in the browser: units so far, the leader on the primary metric with its lift and
significance, time running, an exposures sparkline; sortable columns; filters that match
nothing say so (never "create the first" while experiments exist). 1440×900 and 390×844."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, Page
from tests.e2e.test_seed_flow import post_events
from tests.e2e.test_verdict import experiment, rel_pct, row_of, settled, wide

pytestmark = pytest.mark.browser

API = "/api/v1"
__all__ = ["wide"]


def spread_traffic(server: LiveServer, exp_id: str, arms: dict[str, tuple[int, int]], minutes: int = 5) -> int:
    """Exposures (and conversions) spread over the last few minutes, so the timeline has points."""
    now = datetime.now(UTC)
    events: list[dict[str, Any]] = []
    for arm, (units, conv) in arms.items():
        for i in range(units):
            ts = (now - timedelta(seconds=minutes * 60 * (1 - i / units))).isoformat()
            unit = f"{arm}-{i}"
            events.append({"type": "exposure", "experiment": exp_id, "unit_id": unit, "variant": arm, "ts": ts})
            if i % max(1, units // max(conv, 1)) == 0 and conv:
                events.append({"type": "conversion", "experiment": exp_id, "unit_id": unit, "ts": ts})
    post_events(server, "/events", events)
    return sum(u for u, _ in arms.values())


def seed(server: LiveServer) -> dict[str, dict[str, Any]]:
    out = {}
    out["winner"] = experiment(server, [("current", 0.5), ("two_tower", 0.5)], name="Two tower ranker")
    spread_traffic(server, out["winner"]["id"], {"current": (700, 70), "two_tower": (700, 175)})
    out["unclear"] = experiment(server, [("current", 0.5), ("lgbm", 0.5)], name="LGBM ranker")
    spread_traffic(server, out["unclear"]["id"], {"current": (300, 30), "lgbm": (300, 33)})
    _, draft = server.api("POST", f"{API}/experiments", {
        "name": "Checkout copy", "description": "draft", "owner_team": "growth",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}]}, expect=201)
    out["draft"] = dict(draft)
    return out


def test_list_shows_each_experiments_results_and_sorts(wide: Page) -> None:
    server = wide.server
    exps = seed(server)
    snaps = {
        "winner": settled(server, exps["winner"]["id"], lambda s: s["exposures"]["total_units"] == 1400
                          and row_of(s, "two_tower")["significant"] and len(s["exposures"]["timeline"]) >= 2),
        "unclear": settled(server, exps["unclear"]["id"], lambda s: s["exposures"]["total_units"] == 600
                           and s["metrics"]["conversion"]["lgbm"]["count"] > 0),
    }
    page = wide.page
    wide.goto("/experiments")
    table = page.get_by_test_id("experiments-table")
    expect(table).to_have_attribute("data-summaries", "done", timeout=20_000)
    rows = page.get_by_test_id("experiment-row")
    expect(rows).to_have_count(3)

    win = rows.filter(has_text="Two tower ranker")
    expect(win.get_by_test_id("summary-units")).to_have_text("1,400")
    leader = win.get_by_test_id("summary-leader")
    expect(leader).to_have_attribute("data-leader", "two_tower")
    expect(leader).to_have_attribute("data-significant", "true")
    expect(leader).to_contain_text(rel_pct(row_of(snaps["winner"], "two_tower")["rel_lift"]))
    expect(leader.get_by_test_id("summary-significance")).to_have_text("significant, better on conversion")
    expect(leader).to_have_class(re.compile("dir-better"))
    expect(win.get_by_test_id("summary-sparkline")).to_be_visible()
    expect(win.get_by_test_id("summary-running")).not_to_have_text("—")

    unclear = rows.filter(has_text="LGBM ranker")
    expect(unclear.get_by_test_id("summary-units")).to_have_text("600")
    expect(unclear.get_by_test_id("summary-leader").get_by_test_id("summary-significance")).to_have_text(
        "not yet significant on conversion" if not row_of(snaps["unclear"], "lgbm")["significant"] else re.compile("significant"))
    draft = rows.filter(has_text="Checkout copy")
    expect(draft.get_by_test_id("summary-units")).to_have_text("—")
    expect(draft.get_by_test_id("summary-running")).to_have_text("—")
    wide.shot("list")

    # Sortable: units descending, then ascending (the unknown last either way), by keyboard.
    names = lambda: rows.locator(".row-link").all_inner_texts()  # noqa: E731
    page.get_by_test_id("sort-units").focus()
    page.keyboard.press("Enter")
    expect(page.locator("th[data-sort-key=units]")).to_have_attribute("aria-sort", "descending")
    assert names() == ["Two tower ranker", "LGBM ranker", "Checkout copy"], names()
    page.keyboard.press("Enter")
    expect(page.locator("th[data-sort-key=units]")).to_have_attribute("aria-sort", "ascending")
    assert names() == ["LGBM ranker", "Two tower ranker", "Checkout copy"], names()
    page.get_by_test_id("sort-name").click()
    expect(page.locator("th[data-sort-key=name]")).to_have_attribute("aria-sort", "ascending")
    assert names() == ["Checkout copy", "LGBM ranker", "Two tower ranker"], names()
    expect(page.get_by_test_id("table-caption")).to_have_text("Experiments, sorted by name (ascending)")

    # Filters that match nothing say so, and never offer to create the first experiment.
    wide.goto("/experiments?status=paused")
    expect(page.get_by_test_id("empty-message")).to_have_text("No experiments match these filters.")
    expect(page.get_by_test_id("create-first")).to_have_count(0)
    expect(page.get_by_test_id("empty-clear-filters")).to_be_visible()
    wide.goto("/experiments?team=nobody")
    expect(page.get_by_test_id("empty-message")).to_have_text("No experiments match these filters.")
    expect(page.get_by_test_id("create-first")).to_have_count(0)


def test_list_at_phone_width(phone: Page) -> None:
    server = phone.server
    seed(server)
    page = phone.page
    phone.goto("/experiments")
    expect(page.get_by_test_id("experiments-table")).to_have_attribute("data-summaries", "done", timeout=20_000)
    expect(page.get_by_test_id("experiment-row")).to_have_count(3)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"the list scrolls sideways by {overflow}px at phone width"
    phone.shot("list")
