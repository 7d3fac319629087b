"""The lift by segment on the results page, seeded through the API: exposures carry a country
(and a device) attribute, some units none; model_b triples conversion in DE, does nothing in FR
and a little in US, while its revenue gain is the same everywhere. The page offers "Break down
by" with the attributes the API lists and reads no breakdown until one is picked; picking
"country" shows the exploratory warning, one row per segment ("Not set" included) with the
units, control and treatment means and the relative lift with its interval as the API has them
(formatted as the page formats them, coloured as the lift table), and the heterogeneity test in
words: the conversion effect differs, the revenue one shows no evidence of it. "None" hides the
breakdown. An experiment without attributes shows a one-line hint instead. No console error;
axe-core finds nothing serious; 1440×900 and 390×844 (no sideways scroll)."""

from __future__ import annotations

import random
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, Page
from tests.e2e.test_a11y import axe, axe_js  # noqa: F401  (axe_js is a fixture)
from tests.e2e.test_seed_flow import post_events
from tests.e2e.test_tradeoff import card_shot
from tests.e2e.test_verdict import conversions, experiment, rel_pct, settled, wide  # noqa: F401  (wide is a fixture)

pytestmark = pytest.mark.browser

API = "/api/v1"
CONTROL = "current"
TREATMENT = "model_b"
METRICS = ("conversion", "revenue")
UNITS = 300  # per arm and country
UNSET_UNITS = 30  # per arm, without attributes
# Converting units per arm in each country: model_b triples DE, leaves FR, nudges US.
CONVERTING = {"DE": {CONTROL: 30, TREATMENT: 90}, "FR": {CONTROL: 30, TREATMENT: 30},
              "US": {CONTROL: 30, TREATMENT: 39}, None: {CONTROL: 3, TREATMENT: 4}}
DEVICES = ("ios", "android", "web")


# ---------------------------------------------------------------- the numbers as the UI writes them


def _js_fixed(x: float, digits: int) -> str:
    """Number.prototype.toFixed: the exact binary value, ties away from zero."""
    q = Decimal(1).scaleb(-digits)
    return str(Decimal(x).quantize(q, rounding=ROUND_HALF_UP))


def pct(x: float, digits: int = 1) -> str:
    """format.js pct."""
    return f"{_js_fixed(x * 100, digits)}%"


def sig(x: float, digits: int = 3) -> str:
    """format.js sig (for |x| from 1e-4 to 1e9): `digits` significant figures, thousands separated."""
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 10**digits:
        return f"{int(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_UP)):,}"
    d = Decimal(x)
    exp = d.adjusted() - digits + 1
    v = d.quantize(Decimal(1).scaleb(exp), rounding=ROUND_HALF_UP)
    text = f"{v:,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def p_value(p: float) -> str:
    """format.js pValue."""
    if p < 0.0001:
        return "<0.0001"
    return _js_fixed(p, 4) if p < 0.01 else _js_fixed(p, 3)


def p_text(p: float) -> str:
    """format.js pText."""
    return "p < 0.0001" if p < 0.0001 else f"p = {p_value(p)}"


def value_text(v: float, rate: bool) -> str:
    """results.js valueText: a rate as a percentage, a mean with 4 significant figures."""
    return pct(v, 2 if abs(v) < 0.1 else 1) if rate else sig(v, 4)


def interval_text(ci: list[float]) -> str:
    return f"[{rel_pct(ci[0])}, {rel_pct(ci[1])}]"


def segment_label(seg: dict[str, Any], tracked: int) -> str:
    return {"other": f"Other (values past the first {tracked})", "unset": "Not set"}.get(seg["kind"], seg["value"])


def heterogeneity_text(het: dict[str, Any], alpha: float) -> str:
    """segments.js heterogeneityText."""
    if het["reason"] or het["p_value"] is None:
        return f"Not tested whether the effect differs across segments: {het['reason']}."
    if het["p_value"] < alpha:
        return f"Effect differs across segments: Q = {sig(het['q'], 3)}, {p_text(het['p_value'])}, I\u00b2 = {pct(het['i2'], 0)}"
    return f"No evidence the effect differs ({p_text(het['p_value'])})"


def is_better(row: dict[str, Any]) -> bool:
    return row["abs_lift"] < 0 if row["goal"] == "minimize" else row["abs_lift"] > 0


# ---------------------------------------------------------------- seeding


def seed(server: LiveServer, exp_id: str) -> int:
    """Exposures with attributes (none for the unset units), conversions as CONVERTING says and
    a revenue event per unit whose gain under model_b is the same in every country. Returns the
    units posted."""
    rnd = random.Random(7)
    events: list[dict[str, Any]] = []
    # One batch, the arms interleaved and the converting units spread out: no recompute sees a
    # lopsided part of the traffic.
    for country, arms in CONVERTING.items():
        n = UNSET_UNITS if country is None else UNITS
        converting = {arm: set(rnd.sample(range(n), conv)) for arm, conv in arms.items()}
        for i in range(n):
            for arm in arms:
                unit = f"{arm}-{country or 'none'}-{i}"
                ev: dict[str, Any] = {"type": "exposure", "experiment": exp_id, "unit_id": unit, "variant": arm}
                if country is not None:
                    ev["attributes"] = {"country": country, "device": DEVICES[i % 3]}
                events.append(ev)
                if i in converting[arm]:
                    events.append({"type": "conversion", "experiment": exp_id, "unit_id": unit})
                value = 20.0 + rnd.gauss(0, 6) + (2.5 if arm == TREATMENT else 0.0)
                events.append({"type": "metric", "experiment": exp_id, "unit_id": unit, "metric": "revenue",
                               "value": round(max(0.5, value), 2)})
    post_events(server, "/events", events)
    return sum(UNSET_UNITS if c is None else UNITS for c in CONVERTING) * 2


def breakdown(server: LiveServer, exp_id: str, key: str) -> dict[str, Any]:
    _, body = server.api("GET", f"{API}/experiments/{exp_id}/results?segment={key}", expect=200)
    return dict(body["segments"])


# ---------------------------------------------------------------- checks


def check_breakdown(page: Any, seg: dict[str, Any], alpha: float) -> None:
    """The warning, every metric's rows and the heterogeneity sentence, as the API has them."""
    card = page.get_by_test_id("segments")
    warning = card.get_by_test_id("segments-warning")
    expect(warning).to_be_visible()
    expect(warning).to_have_text(f"Exploratory. {seg['warning']}")
    assert "exploratory" in seg["warning"] and "no correction across segments" in seg["warning"], seg["warning"]
    labels = [segment_label(s, seg["tracked_values"]) for s in seg["segments"]]
    for metric in METRICS:
        rate = metric == "conversion"
        block = card.get_by_test_id(f"segments-{metric}")
        table = block.locator(f"[data-testid=segments-table][data-treatment={TREATMENT}]")
        kind = "rate" if rate else "mean"
        expect(table.locator("thead th")).to_have_text(["Segmentunits", f"{CONTROL}{kind}", f"{TREATMENT}{kind}", "Rel lift95% CI"])
        rows = table.get_by_test_id("segment-row")
        expect(rows).to_have_count(len(seg["segments"]))
        expect(rows.get_by_test_id("segment-label")).to_have_text(labels)
        for i, s in enumerate(seg["segments"]):
            row = rows.nth(i)
            [lr] = [r for r in s["lift"] if r["metric"] == metric and r["treatment"] == TREATMENT]
            expect(row).to_have_attribute("data-kind", s["kind"])
            expect(row.get_by_test_id("segment-units")).to_have_text(f"{s['units']:,} units")
            per = s["metrics"][metric]
            for testid, arm, mean in (("segment-control-mean", CONTROL, lr["control_mean"]),
                                      ("segment-treatment-mean", TREATMENT, lr["treatment_mean"])):
                cell = row.get_by_test_id(testid)
                expect(cell.locator("div").first).to_have_text(value_text(mean, rate))
                sub = (f"{int(per[arm]['sum']):,} / {per[arm]['exposed_units']:,}" if rate
                       else f"{s['exposures']['variants'][arm]['units']:,} units")
                expect(cell.locator("div").last).to_have_text(sub)
            rel = row.get_by_test_id("segment-rel-lift")
            expect(rel.locator("div").first).to_have_text(rel_pct(lr["rel_lift"]))
            expect(rel.locator("div").last).to_have_text(interval_text(lr["rel_ci"]))
            assert float(rel.get_attribute("data-value") or "nan") == lr["rel_lift"]
            assert float(rel.get_attribute("data-lo") or "nan") == lr["rel_ci"][0]
            assert float(rel.get_attribute("data-hi") or "nan") == lr["rel_ci"][1]
            direction = ("better" if is_better(lr) else "worse") if lr["significant"] else "unclear"
            expect(rel).to_have_class(re.compile(rf"\bdir-{direction}\b"))
        [het] = [x for x in seg["heterogeneity"] if x["metric"] == metric and x["treatment"] == TREATMENT]
        sentence = block.locator(f"[data-testid=segments-heterogeneity][data-treatment={TREATMENT}]")
        expect(sentence).to_contain_text(heterogeneity_text(het, alpha))
        assert float(sentence.get_attribute("data-p") or "nan") == het["p_value"]


def test_lift_by_segment_with_the_apis_numbers(wide: Page, phone: Page, axe_js: str) -> None:  # noqa: F811
    server = wide.server
    page = wide.page
    exp = experiment(server, [(CONTROL, 0.5), (TREATMENT, 0.5)], name="Ranker by country",
                     metrics={"primary": "conversion"})
    exp_id = exp["id"]
    _, none_yet = server.api("GET", f"{API}/experiments/{exp_id}/results/segments", expect=200)
    assert none_yet["keys"] == []
    total = seed(server, exp_id)
    snap = settled(server, exp_id, lambda s: s["exposures"]["total_units"] == total
                   and sum(v["count"] for v in s["metrics"].get("revenue", {}).values()) == total)
    _, listed = server.api("GET", f"{API}/experiments/{exp_id}/results/segments", expect=200)
    assert listed["keys"] == ["country", "device"], listed
    status, bad = server.api("GET", f"{API}/experiments/{exp_id}/results?segment=browser")
    assert status == 422, (status, bad)
    seg = breakdown(server, exp_id, "country")
    assert [s["kind"] for s in seg["segments"]] == ["value", "value", "value", "unset"], seg["segments"]
    assert {s["value"] for s in seg["segments"][:3]} == {"DE", "FR", "US"}
    hets = {x["metric"]: x for x in seg["heterogeneity"] if x["treatment"] == TREATMENT}
    assert hets["conversion"]["p_value"] < snap["alpha"] < hets["revenue"]["p_value"], hets

    # The page lists the attributes and reads no breakdown until one is picked.
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "segment=" in r.url else None)
    wide.goto(f"/experiments/{exp_id}/results")
    select = page.get_by_label("Break down by")
    expect(select).to_be_visible(timeout=20_000)
    expect(select.locator("option")).to_have_text(["None", "country", "device"])
    expect(select).to_have_value("")
    expect(page.get_by_test_id("segments-hint")).to_be_hidden()
    expect(page.get_by_test_id("segments-warning")).to_have_count(0)
    page.wait_for_timeout(2500)  # a poll or two: still nothing read
    assert asked == [], asked

    # Keyboard: the select takes focus and a choice like any other.
    select.focus()
    assert page.evaluate("document.activeElement && document.activeElement.dataset.testid") == "segment-select"
    select.select_option("country")
    expect(page.get_by_test_id("segments-out")).to_have_attribute("data-segment", "country", timeout=20_000)
    assert len(asked) == 1 and asked[0].endswith("/results?segment=country"), asked
    expect(page.get_by_test_id("segments-status")).to_contain_text("Broken down by country at ")
    expect(page.get_by_test_id("segments-status")).to_contain_text(f"{total:,} units in 4 segments.")
    check_breakdown(page, seg, snap["alpha"])
    page.wait_for_timeout(2500)  # no new data: the breakdown is not read again
    assert len(asked) == 1, asked

    problems = axe(wide, axe_js, "results-segments")
    page.mouse.move(0, 0)
    wide.shot("desktop-1440")
    card_shot(wide, page.get_by_test_id("segments"), "desktop-1440-segments-card")

    # "None" hides the breakdown; "Refresh" reads it again.
    select.select_option("")
    expect(page.get_by_test_id("segments-warning")).to_have_count(0)
    expect(page.get_by_test_id("segments-table")).to_have_count(0)
    expect(page.get_by_test_id("segments-refresh")).to_be_hidden()
    select.select_option("country")
    check_breakdown(page, seg, snap["alpha"])
    page.get_by_test_id("segments-refresh").click()
    expect(page.get_by_test_id("segments-out")).not_to_have_attribute("aria-busy", "true")
    assert len(asked) >= 3, asked
    check_breakdown(page, seg, snap["alpha"])
    assert not wide.errors, wide.errors

    # Phone width: the same numbers; the tables scroll inside their own box, the page does not.
    ppage = phone.page
    phone.goto(f"/experiments/{exp_id}/results")
    pselect = ppage.get_by_label("Break down by")
    expect(pselect).to_be_visible(timeout=20_000)
    pselect.select_option("country")
    expect(ppage.get_by_test_id("segments-out")).to_have_attribute("data-segment", "country", timeout=20_000)
    check_breakdown(ppage, seg, snap["alpha"])
    ppage.wait_for_timeout(300)
    width = ppage.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the results page scrolls sideways at 390 px: scrollWidth {width}"
    box = ppage.get_by_test_id("segments").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    # The four columns fit at 390 px: the relative lift is seen without scrolling the table.
    fits = ppage.evaluate("""() => [...document.querySelectorAll('.segments-wrap')].map((w) => w.scrollWidth - w.clientWidth)""")
    assert fits and max(fits) <= 1, fits
    problems += axe(phone, axe_js, "results-segments-phone")
    phone.shot("phone-390")
    card_shot(phone, ppage.get_by_test_id("segments"), "phone-390-segments-card")
    assert not problems, "axe-core found serious or critical violations:\n" + "\n".join(problems)
    assert not phone.errors, phone.errors

    # Without attributes: a one-line hint under the lift card, no select.
    plain = experiment(server, [(CONTROL, 0.5), (TREATMENT, 0.5)], name="Ranker without attributes")
    n = conversions(server, plain["id"], {CONTROL: (200, 20), TREATMENT: (200, 30)})
    settled(server, plain["id"], lambda s: s["exposures"]["total_units"] == n)
    wide.goto(f"/experiments/{plain['id']}/results")
    hint = page.get_by_test_id("segments-hint")
    expect(hint).to_be_visible(timeout=20_000)
    expect(hint).to_contain_text('send up to 5 string attributes with each exposure ("attributes": {"country": "DE"})')
    expect(page.get_by_test_id("segments")).to_be_hidden()
    expect(page.get_by_label("Break down by")).to_be_hidden()
    assert not wide.errors, wide.errors
