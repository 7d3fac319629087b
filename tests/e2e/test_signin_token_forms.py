"""Sign-in with the admin token as it stands in `.litmus/admin_token` (`admin:<secret>`): the
UI accepts it like the bare secret, and a name that does not go with the secret is refused."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.conftest import experiment_payload
from tests.e2e.conftest import Page

pytestmark = pytest.mark.browser


def test_the_token_file_line_signs_in_and_a_wrong_name_does_not(ui_signed_out: Page) -> None:
    ui = ui_signed_out
    ui.server.api("POST", "/api/v1/experiments", experiment_payload(name="Ranker v2"), expect=201)
    page = ui.page
    ui.goto("/experiments")
    dialog = page.get_by_test_id("token-dialog")
    expect(dialog).to_be_visible()

    page.get_by_label("API token").fill(f"router:{ui.server.token}")  # another token's name
    page.get_by_test_id("token-submit").click()
    expect(page.get_by_test_id("token-error")).to_contain_text("refused")

    line = f"admin:{ui.server.token}"
    page.get_by_label("API token").fill(line)
    page.get_by_test_id("token-submit").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("experiment-row")).to_have_count(1)
    expect(page.get_by_test_id("session-state")).to_have_text("Signed in")
    assert page.evaluate("localStorage.getItem('litmus.token')") == line
