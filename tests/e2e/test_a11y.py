"""Accessibility: axe-core on every screen (list, new, detail, settings, results of a fixed
experiment, of a bandit and before any result), failing on serious or critical violations; and
create, launch and stop with the keyboard alone (Tab, Shift+Tab, Enter, Space and typing).

axe-core is installed by the `axe_js` fixture itself, once, with
`npm install --prefix ~/.cache/litmus-axe axe-core@4` (LITMUS_AXE_JS names an axe.min.js to use
instead; LITMUS_AXE_DIR another install folder)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Page
from tests.e2e.test_verdict import conversions, experiment, settled

pytestmark = pytest.mark.browser

API = "/api/v1"
AXE_VERSION = "4"
# The impacts that fail the test (LITMUS_AXE_IMPACTS=minor,moderate,serious,critical lists them all).
BLOCKING = set(os.environ.get("LITMUS_AXE_IMPACTS", "serious,critical").split(","))


@pytest.fixture(scope="session")
def axe_js() -> str:
    """axe.min.js's text, installed with npm into a cache folder outside the repository once."""
    chosen = os.environ.get("LITMUS_AXE_JS")
    if chosen:
        return Path(chosen).read_text()
    folder = Path(os.environ.get("LITMUS_AXE_DIR") or Path.home() / ".cache" / "litmus-axe")
    script = folder / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is missing: install Node.js and npm (apt-get install -y npm) for the axe-core check")
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--no-save",
                               f"axe-core@{AXE_VERSION}"], capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0 or not script.exists():
            pytest.fail(f"npm install axe-core@{AXE_VERSION} failed ({done.returncode}): {done.stderr[-2000:]}")
    return script.read_text()


def axe(ui: Page, axe_js: str, label: str) -> list[str]:
    """Run axe on the page as it is; the serious and critical violations, one line each."""
    page = ui.page
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=axe_js)
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' — ' + (n.failureSummary || '').split('\\n').slice(1, 2).join(''))}));
    }""")
    found = []
    for v in result:
        if v["impact"] in BLOCKING:
            found.append(f"{label}: [{v['impact']}] {v['id']} ({v['help']}): " + "; ".join(v["nodes"]))
    return found


def test_axe_finds_no_serious_violation_on_any_screen(ui: Page, axe_js: str) -> None:
    server = ui.server
    page = ui.page
    fixed = experiment(server, [("current", 0.5), ("two_tower", 0.5)], name="Two tower ranker")
    conversions(server, fixed["id"], {"current": (600, 60), "two_tower": (600, 120)})
    bandit = experiment(server, [("model_a", 0.5), ("model_b", 0.5)], name="Model router", allocation="bandit",
                        bandit={"update_interval_s": 0.5, "burn_in_units": 20, "min_units": 50})
    conversions(server, bandit["id"], {"model_a": (200, 20), "model_b": (200, 60)})
    _, draft = server.api("POST", f"{API}/experiments", {
        "name": "Checkout copy", "description": "draft", "owner_team": "growth",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}]}, expect=201)
    settled(server, fixed["id"], lambda s: s["exposures"]["total_units"] == 1200)
    settled(server, bandit["id"], lambda s: s["exposures"]["total_units"] == 400 and bool(s.get("bandit")))

    problems: list[str] = []
    screens: list[tuple[str, str, Any]] = [
        ("list", "/experiments", lambda: expect(page.get_by_test_id("experiments-table")).to_have_attribute("data-summaries", "done")),
        ("new", "/experiments/new", lambda: expect(page.get_by_test_id("planner")).to_be_visible()),
        ("detail-draft", f"/experiments/{draft['id']}", lambda: expect(page.get_by_test_id("launch-button")).to_be_visible()),
        ("detail-running", f"/experiments/{fixed['id']}", lambda: expect(page.get_by_test_id("stop-button")).to_be_visible()),
        ("settings", f"/experiments/{fixed['id']}/settings", lambda: expect(page.get_by_test_id("save-settings")).to_be_visible()),
        ("results-fixed", f"/experiments/{fixed['id']}/results", lambda: expect(page.get_by_test_id("verdict")).to_be_visible()),
        ("results-bandit", f"/experiments/{bandit['id']}/results", lambda: expect(page.get_by_test_id("verdict-bandit")).to_be_visible()),
        ("results-none", f"/experiments/{draft['id']}/results", lambda: expect(page.get_by_test_id("no-results")).to_be_visible()),
    ]
    for label, path, ready in screens:
        ui.goto(path)
        ready()
        page.wait_for_timeout(300)  # charts drawn after layout
        problems += axe(ui, axe_js, label)
    # The planner's answer and a field error, and the stop dialog, are screens too.
    ui.goto("/experiments/new")
    page.get_by_test_id("plan-run").click()
    expect(page.get_by_test_id("plan-result")).to_have_attribute("data-state", "ready")
    page.get_by_test_id("plan-variants").fill("25")
    page.get_by_test_id("plan-run").click()
    expect(page.locator("[data-field='plan.variants'] .field-error")).to_be_visible()
    problems += axe(ui, axe_js, "new-planner")
    ui.goto(f"/experiments/{fixed['id']}")
    page.get_by_test_id("stop-button").click()
    expect(page.get_by_test_id("stop-dialog")).to_be_visible()
    problems += axe(ui, axe_js, "stop-dialog")
    assert not problems, "axe-core found serious or critical violations:\n" + "\n".join(problems)


def press_until_focused(page: Any, selector: str, key: str = "Tab", limit: int = 80) -> None:
    """Press Tab (or Shift+Tab) until the element matching selector has the focus."""
    for _ in range(limit):
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press(key)
    raise AssertionError(f"{selector} never got the focus after {limit} × {key}")


def test_create_launch_and_stop_with_the_keyboard_alone(ui: Page) -> None:
    page = ui.page
    server = ui.server
    ui.goto("/experiments")
    expect(page.get_by_test_id("new-experiment-link")).to_be_visible()
    # From the list to the form by keyboard: the link, Enter.
    press_until_focused(page, "[data-testid=new-experiment-link]")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/experiments/new$"))
    # The name field has the focus on arrival; the rest by Tab.
    expect(page.get_by_test_id("exp-name")).to_be_focused()
    page.keyboard.type("Keyboard ranker")
    press_until_focused(page, "#exp-owner-team, [data-testid=exp-owner-team]")
    page.keyboard.type("search")
    press_until_focused(page, "#exp-description, [data-testid=exp-description]")
    page.keyboard.type("Made without a mouse")
    # The allocation radio: Space picks the focused option (fixed is already chosen: keep it).
    press_until_focused(page, "[data-testid=save-draft]")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/experiments/[0-9a-f-]{36}$"))
    exp_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_test_id("status-badge").first).to_have_text("DRAFT")

    # Launch: Tab to the button, Space presses it.
    press_until_focused(page, "[data-testid=launch-button]")
    page.keyboard.press("Space")
    expect(page.get_by_test_id("status-badge").first).to_have_text("RUNNING")
    assert server.api("GET", f"{API}/experiments/{exp_id}")[1]["status"] == "running"

    # Stop: Tab to Stop, Enter opens the dialog (Cancel, the safe choice, has the focus); Tab
    # to "Stop experiment", Enter.
    press_until_focused(page, "[data-testid=stop-button]")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("stop-dialog")).to_be_visible()
    expect(page.get_by_test_id("stop-cancel")).to_be_focused()
    press_until_focused(page, "[data-testid=stop-confirm]")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("status-badge").first).to_have_text("STOPPED")
    stored = server.api("GET", f"{API}/experiments/{exp_id}")[1]
    assert stored["status"] == "stopped" and stored["winner"] is None, stored
