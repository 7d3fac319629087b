"""The results page's verdict card, one test per state, seeded through the API: a winner (with a
treatment not yet decided and the units it still needs), a loser, no difference inside ±1%, a
sample ratio mismatch (said first), a stop with its winner, a converged bandit, and a launched
experiment with no exposure yet ("waiting for data"). Each sentence's numbers are checked
against the snapshot JSON the page read. Screenshots at 1440×900 and 390×844."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import PHONE, LiveServer, Page, _page_fixture
from tests.e2e.test_seed_flow import post_events

pytestmark = pytest.mark.browser

API = "/api/v1"
WIDE = {"width": 1440, "height": 900}


@pytest.fixture
def wide(browser: Any, live_server: LiveServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A 1440×900 page, signed in; any JavaScript error fails the test."""
    yield from _page_fixture(browser, live_server, request, WIDE, signed_in=True, suffix="-1440")


# ---------------------------------------------------------------- the numbers as the UI writes them


def rel_pct(x: float) -> str:
    """format.js relPct: 0 decimals from 10%, 1 from 1%, else 2; a true minus sign."""
    if x == 0:
        return "0%"
    a = abs(x * 100)
    digits = 0 if a >= 10 else 1 if a >= 1 else 2
    v = f"{abs(x * 100):.{digits}f}"
    sign = "+" if x > 0 else "\u2212" if x < 0 else ""
    return f"{sign}{v}%"


def roughly(n: float) -> str:
    """verdict.js roughly: two significant figures, rounded up."""
    if n < 100:
        return f"{math.ceil(n):,}"
    mag = 10 ** (math.floor(math.log10(n)) - 1)
    return f"{math.ceil(n / mag) * mag:,}"


def more_units_sequential(row: dict[str, Any], alpha: float, comparisons: int) -> float:
    """Units per arm still needed for the normal-mixture interval to exclude 0 at this effect
    (litmus/core/stats.py mixture_cs_arrays with n scaled by k and se by 1/√k)."""
    d, se = abs(row["abs_lift"]), row["se"]
    n = row["control_units"] + row["treatment_units"]
    a = alpha / comparisons
    rho2 = (-2 * math.log(a) + math.log(1 - 2 * math.log(a))) / 5000
    r = n * rho2

    def half(k: float) -> float:
        return se / math.sqrt(k) * math.sqrt((1 + k * r) / (k * r) * math.log((1 + k * r) / a**2))

    lo, hi = 1.0, 2.0
    while half(hi) >= d:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if half(mid) < d else (mid, hi)
    return (hi - 1) * n / 2


# ---------------------------------------------------------------- seeding


def experiment(server: LiveServer, variants: list[tuple[str, float]], **extra: Any) -> dict[str, Any]:
    body = {"name": extra.pop("name", "Ranker bake-off"), "description": "Verdict check", "owner_team": "search",
            "variants": [{"key": k, "weight": w, **({"is_control": True} if i == 0 else {})}
                         for i, (k, w) in enumerate(variants)], **extra}
    _, exp = server.api("POST", f"{API}/experiments", body, expect=201)
    server.api("POST", f"{API}/experiments/{exp['id']}/launch", {"ramp": 1}, expect=200)
    return dict(exp)


def conversions(server: LiveServer, exp_id: str, arms: dict[str, tuple[int, int]]) -> int:
    """arms: variant -> (units, converting units). Returns the units posted."""
    events: list[dict[str, Any]] = []
    for arm, (units, conv) in arms.items():
        for i in range(units):
            unit = f"{arm}-{i}"
            events.append({"type": "exposure", "experiment": exp_id, "unit_id": unit, "variant": arm})
            if i < conv:
                events.append({"type": "conversion", "experiment": exp_id, "unit_id": unit})
    post_events(server, "/events", events)
    return sum(u for u, _ in arms.values())


def settled(server: LiveServer, exp_id: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 40) -> dict[str, Any]:
    """Poll the results until a snapshot satisfies ok, then until two in a row agree on the lift
    (the running interval has settled); returns the last."""
    deadline = time.monotonic() + timeout
    last: Any = None
    prev_lift: Any = None
    while True:
        status, last = server.api("GET", f"{API}/experiments/{exp_id}/results")
        if status == 200 and ok(last):
            if last["lift"] == prev_lift:
                return dict(last)
            prev_lift = last["lift"]
        assert time.monotonic() < deadline, f"no snapshot as expected: {status} {str(last)[:400]}"
        time.sleep(0.4)


def row_of(snap: dict[str, Any], treatment: str, metric: str | None = None) -> dict[str, Any]:
    metric = metric or snap["primary_metric"]
    [row] = [r for r in snap["lift"] if r["metric"] == metric and r["treatment"] == treatment]
    return dict(row)


def anytime_rel(row: dict[str, Any]) -> tuple[float, float]:
    lo, hi = row["anytime_abs_ci_running"] or row["anytime_abs_ci"]
    cm = abs(row["control_mean"])
    return lo / cm, hi / cm


def check_line(page: Any, snap: dict[str, Any], treatment: str, state: str) -> str:
    """The treatment's sentence: its state, its lift and interval as the snapshot has them."""
    line = page.get_by_test_id("verdict").locator(f"[data-testid=verdict-line][data-treatment={treatment}]")
    expect(line).to_have_attribute("data-state", state)
    row = row_of(snap, treatment)
    rel = line.get_by_test_id("verdict-rel")
    expect(rel).to_have_text(rel_pct(row["rel_lift"]))
    assert float(rel.get_attribute("data-value")) == pytest.approx(row["rel_lift"], rel=1e-12)
    ci = line.get_by_test_id("verdict-ci")
    lo, hi = anytime_rel(row)
    expect(ci).to_have_attribute("data-kind", "anytime")
    expect(ci).to_have_text(f"[{rel_pct(lo)}, {rel_pct(hi)}]")
    assert float(ci.get_attribute("data-lo")) == pytest.approx(lo, rel=1e-9)
    assert float(ci.get_attribute("data-hi")) == pytest.approx(hi, rel=1e-9)
    return str(line.inner_text())


def check_meta(page: Any, snap: dict[str, Any]) -> None:
    expect(page.get_by_test_id("verdict-units")).to_have_text(f"{snap['exposures']['total_units']:,} units")
    expect(page.get_by_test_id("verdict-running")).to_contain_text("running")


def open_results(ui: Page, exp_id: str, state: str) -> None:
    ui.goto(f"/experiments/{exp_id}/results")
    expect(ui.page.get_by_test_id("verdict")).to_have_attribute("data-state", state, timeout=30_000)


# ---------------------------------------------------------------- the states


def test_winner_and_a_treatment_not_yet_decided(wide: Page) -> None:
    server = wide.server
    exp = experiment(server, [("current", 1 / 3), ("two_tower", 1 / 3), ("lgbm", 1 / 3)])
    total = conversions(server, exp["id"], {"current": (900, 90), "two_tower": (900, 180), "lgbm": (900, 104)})
    snap = settled(server, exp["id"], lambda s: s["exposures"]["total_units"] == total
                   and row_of(s, "two_tower")["significant"])
    open_results(wide, exp["id"], "winner")
    page = wide.page
    snap = settled(server, exp["id"], lambda s: row_of(s, "two_tower")["significant"])
    text = check_line(page, snap, "two_tower", "winner")
    assert re.search(r"two_tower beats current on conversion: \+100% \[\+\d+%, \+\d+%\], significant \(anytime\)", text), text

    # lgbm: not yet, with the units it still needs at its current effect.
    text = check_line(page, snap, "lgbm", "not-yet")
    lg = row_of(snap, "lgbm")
    more = more_units_sequential(lg, snap["alpha"], comparisons=2)
    need = page.get_by_test_id("verdict-more-units")
    expect(need).to_have_text(f"needs about {roughly(more)} more units per arm at this effect")
    assert int(need.get_attribute("data-value")) == pytest.approx(math.ceil(more), abs=2)
    assert "lgbm vs current on conversion: not yet" in text, text
    check_meta(page, snap)
    expect(page.get_by_test_id("verdict-units")).to_have_text("2,700 units")

    # Numbers for reading: the rate as a percentage with its counts, no event-mean column, the
    # primary metric first, the wide interval plot with both intervals and zero.
    summary = page.get_by_test_id("metric-summary-conversion")
    expect(summary).to_have_attribute("data-rate", "true")
    expect(summary.locator("tr[data-key=two_tower] [data-testid=unit-mean] div").first).to_have_text("20.0%")
    expect(summary.locator("tr[data-key=two_tower] [data-testid=rate-counts]")).to_have_text("180 / 900")
    expect(summary.locator("[data-testid=mean]")).to_have_count(0)
    axis = page.get_by_test_id("lift-axis-conversion")
    expect(axis.get_by_test_id("lift-axis-lane")).to_have_count(2)
    expect(axis.get_by_test_id("lift-axis-zero")).to_have_count(1)
    expect(axis.get_by_test_id("lift-axis-welch")).to_have_count(2)
    expect(axis.get_by_test_id("lift-axis-anytime")).to_have_count(2)
    expect(axis).to_contain_text("Welch 95% interval")
    expect(axis).to_contain_text("anytime-valid 95% interval")
    win = page.locator("[data-testid=lift-row][data-treatment=two_tower] [data-testid=rel-lift]")
    expect(win).to_have_class(re.compile("dir-better"))
    assert float(win.get_attribute("title").split()[0]) == row_of(snap, "two_tower")["rel_lift"]  # exact on hover
    expect(page.locator("[data-testid=lift-row][data-treatment=lgbm] [data-testid=rel-lift]")).to_have_class(re.compile("dir-unclear"))
    wide.shot("results-fixed-winner")


def test_loser(ui: Page) -> None:
    server = ui.server
    exp = experiment(server, [("current", 0.5), ("slow_model", 0.5)])
    total = conversions(server, exp["id"], {"current": (800, 200), "slow_model": (800, 96)})
    settled(server, exp["id"], lambda s: s["exposures"]["total_units"] == total and row_of(s, "slow_model")["significant"])
    open_results(ui, exp["id"], "loser")
    snap = settled(server, exp["id"], lambda s: row_of(s, "slow_model")["significant"])
    text = check_line(ui.page, snap, "slow_model", "loser")
    assert re.search(r"slow_model is worse than current on conversion: \u221252% \[\u2212\d+%, \u2212\d+%\], significant \(anytime\)", text), text
    expect(ui.page.locator("[data-testid=lift-row][data-treatment=slow_model] [data-testid=rel-lift]")).to_have_class(re.compile("dir-worse"))
    check_meta(ui.page, snap)
    ui.shot("results-loser")


def test_no_difference_inside_one_percent(ui: Page) -> None:
    server = ui.server
    exp = experiment(server, [("current", 0.5), ("distilled", 0.5)], metrics={"primary": "revenue"})
    events: list[dict[str, Any]] = []
    for arm in ("current", "distilled"):
        for i in range(600):
            unit = f"{arm}-{i}"
            events.append({"type": "exposure", "experiment": exp["id"], "unit_id": unit, "variant": arm})
            events.append({"type": "metric", "experiment": exp["id"], "unit_id": unit, "metric": "revenue",
                           "value": 100 + (i % 5 - 2) * 0.5})
    post_events(server, "/events", events)
    snap = settled(server, exp["id"], lambda s: s["exposures"]["total_units"] == 1200
                   and s["metrics"]["revenue"]["distilled"]["count"] == 600)
    lo, hi = anytime_rel(row_of(snap, "distilled"))
    assert lo >= -0.01 and hi <= 0.01, (lo, hi)
    open_results(ui, exp["id"], "no-difference")
    text = check_line(ui.page, snap, "distilled", "no-difference")
    assert "distilled: no difference from current on revenue: " in text and "inside \u00b11%" in text, text
    # A mean (not a rate): 4 significant figures, the event mean kept, the exact value on hover.
    summary = ui.page.get_by_test_id("metric-summary-revenue")
    expect(summary).to_have_attribute("data-rate", "false")
    expect(summary.locator("tr[data-key=current] [data-testid=unit-mean]")).to_have_text("100")
    expect(summary.locator("tr[data-key=current] [data-testid=mean]")).to_have_text("100")
    ui.shot("results-no-difference")


def test_srm_is_said_first(ui: Page) -> None:
    server = ui.server
    exp = experiment(server, [("current", 0.5), ("two_tower", 0.5)])
    total = conversions(server, exp["id"], {"current": (700, 70), "two_tower": (300, 45)})
    snap = settled(server, exp["id"], lambda s: s["exposures"]["total_units"] == total and s["srm"]["flagged"])
    open_results(ui, exp["id"], "srm")
    card = ui.page.get_by_test_id("verdict")
    srm = card.get_by_test_id("verdict-srm")
    expect(srm).to_contain_text("Results untrustworthy: sample ratio mismatch")
    expect(srm).to_contain_text("p < 0.0001" if snap["srm"]["p_value"] < 1e-4 else "p = ")
    # The SRM line comes before any comparison.
    first = card.locator(".verdict-line").first
    expect(first).to_have_attribute("data-testid", "verdict-srm")
    check_line(ui.page, snap, "two_tower", row_state(snap, "two_tower"))
    ui.shot("results-srm")


def row_state(snap: dict[str, Any], treatment: str) -> str:
    row = row_of(snap, treatment)
    if row["significant"]:
        return "winner" if row["abs_lift"] > 0 else "loser"
    lo, hi = anytime_rel(row)
    return "no-difference" if lo >= -0.01 and hi <= 0.01 else "not-yet"


def test_stopped_with_its_winner(ui: Page) -> None:
    server = ui.server
    exp = experiment(server, [("current", 0.5), ("two_tower", 0.5)])
    total = conversions(server, exp["id"], {"current": (600, 60), "two_tower": (600, 130)})
    settled(server, exp["id"], lambda s: s["exposures"]["total_units"] == total and row_of(s, "two_tower")["significant"])
    server.api("POST", f"{API}/experiments/{exp['id']}/stop", {"winner": "two_tower"}, expect=200)
    _, stored = server.api("GET", f"{API}/experiments/{exp['id']}", expect=200)
    open_results(ui, exp["id"], "stopped")
    line = ui.page.get_by_test_id("verdict-stopped")
    expect(line).to_have_attribute("data-winner", "two_tower")
    expect(line).to_contain_text("two_tower was chosen as the winner")
    stopped_at = stored["stopped_at"]
    when = ui.page.evaluate("""iso => new Date(iso).toLocaleString(undefined, {year: 'numeric', month: 'short', day: 'numeric',
        hour: '2-digit', minute: '2-digit', second: '2-digit'})""", stopped_at)
    expect(line).to_contain_text(f"Stopped on {when}")
    snap = settled(server, exp["id"], lambda s: row_of(s, "two_tower")["significant"])
    check_line(ui.page, snap, "two_tower", "winner")
    expect(ui.page.get_by_test_id("verdict-running")).to_contain_text(" run")
    ui.shot("results-stopped")


def test_bandit_converged(wide: Page) -> None:
    server = wide.server
    exp = experiment(server, [("model_a", 1 / 3), ("model_b", 1 / 3), ("model_c", 1 / 3)], allocation="bandit",
                     name="Model router",
                     bandit={"update_interval_s": 0.5, "burn_in_units": 20, "min_units": 50, "convergence_threshold": 0.95,
                             "floor": 0.02})
    conversions(server, exp["id"], {"model_a": (300, 15), "model_b": (300, 24), "model_c": (300, 90)})
    snap = settled(server, exp["id"], lambda s: bool(s.get("bandit") and s["bandit"].get("converged")))
    open_results(wide, exp["id"], "bandit-converged")
    line = wide.page.get_by_test_id("verdict-bandit")
    expect(line).to_have_attribute("data-top", "model_c")
    expect(line).to_contain_text("Converged: model_c is the best model, P(best) ")
    p_best = snap["bandit"]["p_best"]["model_c"]
    shown = wide.page.get_by_test_id("verdict-pbest")
    expect(shown).to_have_text(">99.9%" if p_best >= 0.9995 else f"{p_best * 100:.1f}%")
    expect(line).to_contain_text("traffic now: model_c ")
    wide.shot("results-bandit")
    # The same page at phone width: the verdict first, nothing scrolls sideways.
    wide.page.set_viewport_size(PHONE)
    wide.page.wait_for_timeout(300)
    overflow = wide.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"the bandit's results scroll sideways by {overflow}px at phone width"
    wide.shot("results-bandit-390")


def test_not_yet_says_why_and_what_remains(ui: Page) -> None:
    server = ui.server
    exp = experiment(server, [("current", 0.5), ("lgbm", 0.5)])
    total = conversions(server, exp["id"], {"current": (400, 40), "lgbm": (400, 46)})
    settled(server, exp["id"], lambda s: s["exposures"]["total_units"] == total
            and s["metrics"]["conversion"]["lgbm"]["count"] == 46)
    open_results(ui, exp["id"], "not-yet")
    snap = settled(server, exp["id"], lambda s: s["exposures"]["total_units"] == total)
    text = check_line(ui.page, snap, "lgbm", "not-yet")
    more = more_units_sequential(row_of(snap, "lgbm"), snap["alpha"], comparisons=1)
    expect(ui.page.get_by_test_id("verdict-more-units")).to_have_text(
        f"needs about {roughly(more)} more units per arm at this effect")
    assert text.startswith("…lgbm vs current on conversion: not yet — +15% ["), text
    check_meta(ui.page, snap)
    ui.shot("results-not-yet")


def test_waiting_for_data_then_first_results(ui: Page) -> None:
    server = ui.server
    _, exp = server.api("POST", f"{API}/experiments", {
        "name": "Quiet", "description": "No traffic yet", "owner_team": "search",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}]}, expect=201)
    page = ui.page
    # A launched experiment's results page before its first snapshot says when to expect one.
    page.route(f"**{API}/experiments/{exp['id']}/results", lambda route: route.fulfill(
        status=404, content_type="application/json",
        body='{"error": {"code": "no_results", "message": "no results yet for \'quiet\' (running): snapshots are computed every 3 s once an experiment has launched"}}'))
    server.api("POST", f"{API}/experiments/{exp['id']}/launch", {"ramp": 1}, expect=200)
    ui.goto(f"/experiments/{exp['id']}/results")
    expect(page.get_by_test_id("first-results-eta")).to_contain_text("First results in about 5 s.")
    ui.shot("results-before-first-snapshot")
    page.unroute(f"**{API}/experiments/{exp['id']}/results")
    # The first snapshot has no exposure: one "waiting for data" card, not a grid of dashes.
    waiting = page.get_by_test_id("waiting-for-data")
    expect(waiting).to_be_visible(timeout=20_000)
    expect(waiting).to_contain_text("Waiting for data")
    expect(page.get_by_test_id("total-units")).to_have_attribute("data-value", "0")
    expect(page.get_by_test_id("lift")).to_have_count(0)
    expect(page.get_by_test_id("metrics")).to_have_count(0)
    ui.shot("results-waiting")
    conversions(server, exp["id"], {"a": (30, 3), "b": (30, 5)})
    expect(page.get_by_test_id("verdict")).to_be_visible(timeout=20_000)
    expect(waiting).to_have_count(0)


def test_phone_verdict_first_and_one_card_per_comparison(phone: Page) -> None:
    server = phone.server
    exp = experiment(server, [("current", 1 / 3), ("two_tower", 1 / 3), ("lgbm", 1 / 3)])
    conversions(server, exp["id"], {"current": (500, 50), "two_tower": (500, 100), "lgbm": (500, 55)})
    phone.goto(f"/experiments/{exp['id']}/results")
    page = phone.page
    expect(page.get_by_test_id("lift-row")).to_have_count(2, timeout=30_000)
    expect(page.get_by_test_id("verdict").locator("[data-testid=verdict-line]")).to_have_count(2)
    # The verdict is the first card of the results.
    first = page.evaluate("() => document.querySelector('[data-testid=results-content] .card').dataset.testid")
    assert first == "verdict", first
    # Each comparison is a card of its own (a block row), as wide as the screen or less.
    rows = page.get_by_test_id("lift-row")
    assert rows.first.evaluate("e => getComputedStyle(e).display") == "block"
    for i in range(2):
        assert rows.nth(i).evaluate("e => e.getBoundingClientRect().right") <= PHONE["width"] + 1
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"the results page scrolls sideways by {overflow}px at phone width"
    phone.shot("results-fixed")


def test_guardrail_tripped_is_said_with_the_banner_kept(ui: Page) -> None:
    from tests.e2e.test_guardrails_ui import error_traffic, guarded_experiment, tripped_snapshot

    server = ui.server
    exp = guarded_experiment(server)
    error_traffic(server, exp["id"])
    snap = tripped_snapshot(server, exp["id"], ui.page)
    [g] = [g for g in snap["guardrails"] if g["status"] == "tripped"]
    open_results(ui, exp["id"], "guardrail")
    line = ui.page.get_by_test_id("verdict-guardrail")
    expect(line).to_contain_text(f"Guardrail tripped: {g['message']}")
    # The banner of ui/js/guardrails.js stays at the top of the page.
    expect(ui.page.get_by_test_id("guardrail-banner").get_by_test_id("guardrail-tripped")).to_have_text(g["message"])
    ui.shot("results-guardrail")
