"""The lift table's depth on the results page, seeded through the API: three arms, revenue with
a CUPED covariate (pre_revenue, strongly correlated with it) and p-values corrected with
Benjamini-Hochberg. The page names the correction in the p-value column's header and in the
rule above the tables, shows each row's adjusted p-values, the running anytime interval (the
one its significance follows, consistent with `significant`), the risk of shipping beside the
chance to beat, and for revenue a CUPED line per treatment with the adjusted lift, its interval
and the variance reduction; "More numbers" has both risks, the running interval relative to the
control mean with the reason for the significance, and CUPED's θ. Every number equals the
API's as the page formats it. No console error; axe-core finds nothing serious; 1440×900 and
390×844 (no sideways scroll)."""

from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, Page
from tests.e2e.test_a11y import axe, axe_js  # noqa: F401  (axe_js is a fixture)
from tests.e2e.test_seed_flow import post_events
from tests.e2e.test_segments_ui import _js_fixed, p_value, pct, sig
from tests.e2e.test_tradeoff import card_shot
from tests.e2e.test_verdict import experiment, rel_pct, row_of, settled, wide  # noqa: F401  (wide is a fixture)

pytestmark = pytest.mark.browser

API = "/api/v1"
CONTROL = "current"
TREATMENTS = ("model_b", "model_c")
METRICS = ("revenue", "conversion")
UNITS = 700  # per arm
# Per arm: converting units, and the revenue gain on top of the covariate.
ARMS = {CONTROL: (70, 0.0), "model_b": (98, 2.0), "model_c": (72, 0.3)}


# ---------------------------------------------------------------- the numbers as the UI writes them


def num(x: float, digits: int = 4) -> str:
    """format.js num (for |x| from 1e-4 to 1e6): `digits` significant figures, thousands separated."""
    if x == 0:
        return "0"
    d = Decimal(x)
    v = d.quantize(Decimal(1).scaleb(d.adjusted() - digits + 1), rounding=ROUND_HALF_UP)
    text = f"{v:,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def signed(x: float, digits: int = 4) -> str:
    """format.js signed."""
    return f"{'+' if x > 0 else ''}{num(x, digits)}".replace("+-", "-")


def signed_pp(x: float) -> str:
    """format.js signedPp."""
    a = abs(x * 100)
    if a >= 10:
        v = _js_fixed(a, 1)
    elif a >= 1:
        v = _js_fixed(a, 2)
    else:
        v = f"{Decimal(a).quantize(Decimal(1).scaleb(Decimal(a).adjusted() - 1), rounding=ROUND_HALF_UP):f}"
    return f"{'+' if x > 0 else chr(0x2212) if x < 0 else ''}{v} pp"


def risk_pct(x: float) -> str:
    """format.js riskPct."""
    if x == 0:
        return "0%"
    a = abs(x * 100)
    if a < 0.005:
        return "<0.01%"
    return f"{_js_fixed(a, 0 if a >= 10 else 1 if a >= 1 else 2)}%"


def prob(x: float) -> str:
    """format.js prob (1 decimal)."""
    if x >= 1 - 0.0005:
        return ">99.9%"
    if x <= 0.0005:
        return "<0.1%"
    return f"{_js_fixed(x * 100, 1)}%"


def abs_fmt(metric: str) -> Any:
    """The lift table's absolute-lift format: percentage points for a rate, else signed(v, 3)."""
    return signed_pp if metric == "conversion" else (lambda v: signed(v, 3))


def ci_text(ci: list[float], fmt: Any) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


# ---------------------------------------------------------------- seeding


def seed(server: LiveServer, exp_id: str) -> int:
    """Each unit's exposure carries pre_revenue; its revenue follows it closely (plus the arm's
    gain), so CUPED removes most of the noise; conversions as ARMS says."""
    rnd = random.Random(11)
    converting = {arm: set(rnd.sample(range(UNITS), conv)) for arm, (conv, _) in ARMS.items()}
    events: list[dict[str, Any]] = []
    # The arms interleaved and the converting units spread out, in one batch: no recompute
    # sees a lopsided part of the traffic (the running interval keeps what every one saw).
    for i in range(UNITS):
        for arm, (_, gain) in ARMS.items():
            unit = f"{arm}-{i}"
            pre = round(rnd.uniform(5, 60), 2)
            events.append({"type": "exposure", "experiment": exp_id, "unit_id": unit, "variant": arm,
                           "covariates": {"pre_revenue": pre}})
            events.append({"type": "metric", "experiment": exp_id, "unit_id": unit, "metric": "revenue",
                           "value": round(max(0.1, 0.9 * pre + rnd.gauss(0, 4) + gain), 2)})
            if i in converting[arm]:
                events.append({"type": "conversion", "experiment": exp_id, "unit_id": unit})
    post_events(server, "/events", events)
    return UNITS * len(ARMS)


# ---------------------------------------------------------------- checks


def check_table(page: Any, snap: dict[str, Any]) -> None:
    """The correction, the adjusted p-values, the running interval, the risk and the CUPED line."""
    rule = page.get_by_test_id("lift-rule")
    expect(rule).to_contain_text("Significant: the running anytime-valid interval excludes 0 and the "
                                 "Benjamini\u2013Hochberg-adjusted anytime p-value < 0.05")
    expect(page.get_by_test_id("lift-correction")).to_have_text(
        "p-values adjusted with Benjamini\u2013Hochberg over each metric\u2019s treatments.")
    for metric in METRICS:
        table = page.locator(f"[data-testid=lift-table][data-metric={metric}]")
        head = table.get_by_test_id("p-correction")
        expect(head).to_have_text("BH-adjusted")
        expect(head.locator("abbr")).to_have_attribute("title", "Benjamini\u2013Hochberg")
        fmt = abs_fmt(metric)
        for t in TREATMENTS:
            row = row_of(snap, t, metric)
            assert row["correction"] == "bh", row
            tr = table.locator(f"[data-testid=lift-row][data-treatment={t}]")
            expect(tr).to_have_attribute("data-significant", "true" if row["significant"] else "false")
            expect(tr.get_by_test_id("p-value")).to_have_text(p_value(row["p_value"]))
            expect(tr.get_by_test_id("p-adjusted")).to_have_text(p_value(row["p_value_adjusted"]))
            running = row["anytime_abs_ci_running"]
            cell = tr.get_by_test_id("anytime-running")
            expect(cell).to_have_text(ci_text(running, fmt))
            assert float(cell.get_attribute("data-lo") or "nan") == running[0]
            assert float(cell.get_attribute("data-hi") or "nan") == running[1]
            expect(tr.get_by_test_id("anytime-p-adjusted")).to_have_text(p_value(row["anytime_p_value_adjusted"]))
            expect(tr.get_by_test_id("chance-to-beat")).to_have_text(prob(row["chance_to_beat"]))
            risk = tr.get_by_test_id("risk-treatment")
            expect(risk).to_have_text(f"risk {risk_pct(row['risk_treatment'])}")
            assert float(risk.get_attribute("data-value") or "nan") == row["risk_treatment"]
            # Sequential mode: significant only when the running interval shown excludes 0.
            if row["significant"]:
                assert running[0] > 0 or running[1] < 0, row
            cuped = table.locator("xpath=../..").locator(f"[data-testid=cuped-line][data-treatment={t}]")
            if metric != "revenue":
                expect(cuped).to_have_count(0)
                continue
            c = row["cuped"]
            expect(cuped).to_have_attribute("data-covariate", "pre_revenue")
            expect(cuped.get_by_test_id("cuped-rel")).to_have_text(rel_pct(c["rel_lift"]))
            expect(cuped.get_by_test_id("cuped-ci")).to_have_text(ci_text(c["rel_ci"], rel_pct))
            expect(cuped.get_by_test_id("cuped-abs")).to_have_text(f"{fmt(c['abs_lift'])} {ci_text(c['abs_ci'], fmt)}")
            expect(cuped.get_by_test_id("cuped-reduction")).to_have_text(
                f"variance reduced by {pct(c['variance_reduction'], 0)} using pre_revenue")
            expect(cuped).to_contain_text(f"CUPED {t} adjusted for pre_revenue: ")


def check_more(page: Any, snap: dict[str, Any], metric: str) -> None:
    """The expander of one metric: both risks, the running interval relative to the control
    mean and why the row is (not) significant, the p-values, CUPED's θ."""
    block = page.get_by_test_id(f"lift-{metric}")
    more = block.get_by_test_id("lift-more")
    if more.get_attribute("open") is None:
        more.get_by_test_id("lift-more-toggle").click()
    fmt = abs_fmt(metric)
    for t in TREATMENTS:
        row = row_of(snap, t, metric)
        box = more.locator(f"[data-testid=lift-more-row][data-treatment={t}]")
        expect(box.get_by_test_id("risk-ship")).to_have_text(f"Risk if you ship {t}: {risk_pct(row['risk_treatment'])}")
        expect(box.get_by_test_id("risk-keep")).to_have_text(f"risk if you keep {CONTROL}: {risk_pct(row['risk_control'])}")
        running = row["anytime_abs_ci_running"]
        expect(box.get_by_test_id("running-abs")).to_have_text(ci_text(running, fmt))
        cm = abs(row["control_mean"])
        expect(box.get_by_test_id("running-rel")).to_have_text(ci_text([running[0] / cm, running[1] / cm], rel_pct))
        line = box.get_by_test_id("running-line")
        expect(line).to_have_attribute("data-significant", "true" if row["significant"] else "false")
        excludes = running[0] > 0 or running[1] < 0
        expect(line).to_contain_text("It excludes 0: significant." if row["significant"]
                                     else "not significant yet." if not excludes else "is not below 0.05 yet")
        expect(box.get_by_test_id("p-line")).to_have_text(
            f"Welch p {p_value(row['p_value'])}, Benjamini\u2013Hochberg-adjusted {p_value(row['p_value_adjusted'])}; "
            f"anytime p {p_value(row['anytime_p_value'])}, Benjamini\u2013Hochberg-adjusted {p_value(row['anytime_p_value_adjusted'])}.")
        details = box.get_by_test_id("cuped-details")
        if metric == "revenue":
            c = row["cuped"]
            expect(details).to_contain_text(f"CUPED with pre_revenue: \u03b8 = {sig(c['theta'], 4)}; ")
            expect(details).to_contain_text(f"anytime-valid interval {ci_text(c['anytime_abs_ci'], fmt)}")
        else:
            expect(details).to_have_count(0)


def test_risk_correction_running_interval_and_cuped(wide: Page, phone: Page, axe_js: str) -> None:  # noqa: F811
    server = wide.server
    page = wide.page
    exp = experiment(server, [(CONTROL, 1 / 3), ("model_b", 1 / 3), ("model_c", 1 / 3)], name="Ranker with CUPED",
                     metrics={"primary": "revenue", "covariates": ["pre_revenue"], "correction": "bh",
                              "definitions": {"revenue": {"cuped": "pre_revenue"}}})
    total = seed(server, exp["id"])
    snap = settled(server, exp["id"], lambda s: s["exposures"]["total_units"] == total
                   and sum(v["count"] for v in s["metrics"].get("revenue", {}).values()) == total
                   and all(r.get("cuped") for r in s["lift"] if r["metric"] == "revenue"))
    assert snap["correction"] == {"method": "bh", "across_metrics": False}, snap["correction"]
    b = row_of(snap, "model_b", "revenue")
    c = b["cuped"]
    # A strongly correlated covariate: most of the variance goes, the interval narrows.
    assert set(c) >= {"covariate", "theta", "control_mean", "treatment_mean", "abs_lift", "abs_ci", "rel_lift",
                      "rel_ci", "anytime_abs_ci", "p_value", "anytime_p_value", "variance_reduction", "se"}, c
    assert c["variance_reduction"] > 0.5, c
    assert c["rel_ci"][1] - c["rel_ci"][0] < b["rel_ci"][1] - b["rel_ci"][0], (c, b)

    wide.goto(f"/experiments/{exp['id']}/results")
    expect(page.get_by_test_id("lift-row")).to_have_count(len(TREATMENTS) * len(METRICS), timeout=30_000)
    check_table(page, snap)
    for metric in METRICS:
        check_more(page, snap, metric)
    # The verdict states significance from the same running interval.
    for t in TREATMENTS:
        line = page.get_by_test_id("verdict").locator(f"[data-testid=verdict-line][data-treatment={t}]")
        row = row_of(snap, t)
        cm = abs(row["control_mean"])
        lo, hi = row["anytime_abs_ci_running"]
        expect(line.get_by_test_id("verdict-ci")).to_have_text(f"[{rel_pct(lo / cm)}, {rel_pct(hi / cm)}]")
        expect(line).to_have_attribute("data-state", "winner" if row["significant"] and row["abs_lift"] > 0
                                       else "loser" if row["significant"] else r"not-yet")

    problems = axe(wide, axe_js, "results-analysis-depth")
    page.mouse.move(0, 0)
    wide.shot("desktop-1440")
    card_shot(wide, page.get_by_test_id("lift-revenue"), "desktop-1440-lift-revenue")
    card_shot(wide, page.get_by_test_id("lift-conversion"), "desktop-1440-lift-conversion")
    # Every column fits at 1440 px: no table scrolls in its box.
    over = page.evaluate("() => [...document.querySelectorAll('.lift-block > .table-wrap')].map((w) => w.scrollWidth - w.clientWidth)")
    assert over and max(over) <= 1, over
    assert not wide.errors, wide.errors

    # Phone width: the same numbers, stacked; nothing scrolls sideways.
    ppage = phone.page
    phone.goto(f"/experiments/{exp['id']}/results")
    expect(ppage.get_by_test_id("lift-row")).to_have_count(len(TREATMENTS) * len(METRICS), timeout=30_000)
    check_table(ppage, snap)
    check_more(ppage, snap, "revenue")
    ppage.wait_for_timeout(300)
    width = ppage.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the results page scrolls sideways at 390 px: scrollWidth {width}"
    problems += axe(phone, axe_js, "results-analysis-depth-phone")
    phone.shot("phone-390")
    card_shot(phone, ppage.get_by_test_id("lift-revenue"), "phone-390-lift-revenue")
    assert not problems, "axe-core found serious or critical violations:\n" + "\n".join(problems)
    assert not phone.errors, phone.errors
