"""Browser-test fixtures: a real Litmus server on a free port, Debian's Chromium, a page that
fails the test on any JavaScript error, and a folder for screenshots of every screen."""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from litmus.app import create_app
from litmus.settings import Settings
from tests.conftest import (
    ADMIN_SECRET,
    CLIENT_SECRET,
    drop_database,
    make_database,
    make_settings,
    with_database,
)

CHROMIUM = os.environ.get("LITMUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

_SHOTS: dict[str, Path] = {}


def screenshots_dir() -> Path:
    """One folder per test run (LITMUS_SCREENSHOTS_DIR overrides), printed at the end."""
    if "dir" not in _SHOTS:
        chosen = os.environ.get("LITMUS_SCREENSHOTS_DIR")
        path = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="litmus-ui-screens-"))
        path.mkdir(parents=True, exist_ok=True)
        _SHOTS["dir"] = path
    return _SHOTS["dir"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if "dir" in _SHOTS:
        shots = sorted(p.name for p in _SHOTS["dir"].glob("*.png"))
        terminalreporter.write_sep("-", "browser screenshots")
        terminalreporter.write_line(f"{len(shots)} screenshots of the UI saved in {_SHOTS['dir']}")


# ---------------------------------------------------------------- the server


@dataclass
class LiveServer:
    """A running Litmus app: its base URL and a tiny synchronous API client."""

    url: str
    token: str = ADMIN_SECRET

    def api(self, method: str, path: str, body: Any = None, token: str | None = None,
            expect: int | tuple[int, ...] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        parsed = json.loads(raw) if raw and raw[:1] in (b"{", b"[") else raw.decode()
        if expect is not None:
            allowed = (expect,) if isinstance(expect, int) else expect
            assert status in allowed, f"{method} {path} -> {status}: {parsed}"
        return status, parsed


def _run_in_thread(coro_fn: Any) -> Any:
    """Run a coroutine to completion in a fresh thread: Playwright's sync API keeps an event
    loop marked as running in the test thread, so asyncio.run() cannot be used there."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = asyncio.run(coro_fn())
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


@pytest.fixture
def e2e_database_url(pg_server_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one browser test (created outside the test thread)."""
    name = _run_in_thread(lambda: make_database(pg_server_url, template_db))
    try:
        yield with_database(pg_server_url, name)
    finally:
        _run_in_thread(lambda: drop_database(pg_server_url, name))


@pytest.fixture
def e2e_settings(e2e_database_url: str, tmp_path: Path) -> Settings:
    """The shared test settings (known admin and client tokens, quick recompute loop)."""
    return make_settings(e2e_database_url, tmp_path)


@pytest.fixture
def live_server(e2e_settings: Settings) -> Iterator[LiveServer]:
    """The whole app (API, static UI, background services) in a thread with its own loop."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(create_app(e2e_settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"] = runner
        state["port"] = runner.addresses[0][1]

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # report start-up failures to the test
            state["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="litmus-live-server", daemon=True)
    thread.start()
    assert ready.wait(60), "the Litmus server did not start within 60 s"
    if "error" in state:
        raise RuntimeError(f"the Litmus server failed to start: {state['error']!r}") from state["error"]
    try:
        yield LiveServer(url=f"http://127.0.0.1:{state['port']}")
    finally:
        fut = asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop)
        try:
            fut.result(60)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser(template_db: str) -> Iterator[Any]:
    # Playwright's sync API keeps an event loop marked as running in this thread until it
    # stops, and asyncio.run() / pytest-asyncio cannot run while it does: so the session's
    # database fixtures start first (template_db), and the browser stops at the end of each
    # module, before any other test module's async fixtures run.
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/ensure_chromium.sh` (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


# Chromium reports every HTTP error answer as a console error ("Failed to load resource: the
# server responded with a status of 404"). The UI expects some of those from the API (401 before
# sign-in, 404 before the first results snapshot, 412 on a stale edit, 422 on a bad form) and
# handles them; only those, and only for /api/v1 URLs, are not JavaScript errors.
_HTTP_STATUS_MESSAGE = re.compile(r"^Failed to load resource: the server responded with a status of (\d{3})")
EXPECTED_API_STATUSES = {401, 403, 404, 409, 412, 422}


@dataclass
class Page:
    """A Playwright page plus the JavaScript errors seen on it and a screenshot helper."""

    page: Any
    server: LiveServer
    name: str
    signed_in: bool = True
    errors: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(self.server.url + path)

    def shot(self, label: str, full_page: bool = True) -> Path:
        path = screenshots_dir() / f"{self.name}-{len(self.shots) + 1:02d}-{label}.png"
        # A full-page capture stitches the page: sticky bars would land mid-page in the image.
        style = ".topbar,.sticky-actions{position:static !important}"
        self.page.screenshot(path=str(path), full_page=full_page, style=style if full_page else None,
                             animations="disabled")
        self.shots.append(path)
        return path


def _console_listener(errors: list[str]) -> Any:
    def on_console(msg: Any) -> None:
        if msg.type != "error":
            return
        m = _HTTP_STATUS_MESSAGE.match(msg.text)
        url = (msg.location or {}).get("url", "")
        if m and int(m.group(1)) in EXPECTED_API_STATUSES and "/api/v1/" in url:
            return
        errors.append(f"console error: {msg.text} ({url})")

    return on_console


def _new_page(browser: Any, server: LiveServer, name: str, viewport: dict[str, int],
              signed_in: bool) -> tuple[Any, Page]:
    storage: dict[str, Any] = {"cookies": [], "origins": []}
    if signed_in:
        storage["origins"] = [{"origin": server.url,
                               "localStorage": [{"name": "litmus.token", "value": server.token}]}]
    context = browser.new_context(viewport=viewport, device_scale_factor=1, locale="en-GB",
                                  timezone_id="UTC", storage_state=storage)
    raw = context.new_page()
    p = Page(page=raw, server=server, name=name, signed_in=signed_in)
    raw.on("pageerror", lambda exc: p.errors.append(f"page error: {exc}"))
    raw.on("console", _console_listener(p.errors))
    raw.set_default_timeout(15_000)
    return context, p


def _page_fixture(browser: Any, server: LiveServer, request: pytest.FixtureRequest,
                  viewport: dict[str, int], signed_in: bool, suffix: str = "") -> Iterator[Page]:
    name = request.node.name.removeprefix("test_") + suffix
    context, p = _new_page(browser, server, name, viewport, signed_in)
    try:
        yield p
    finally:
        context.close()
    assert not p.errors, "JavaScript errors on the page:\n" + "\n".join(p.errors)


@pytest.fixture
def ui(browser: Any, live_server: LiveServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A desktop-sized (1280 px) page, signed in; any JavaScript error fails the test."""
    yield from _page_fixture(browser, live_server, request, DESKTOP, signed_in=True)


@pytest.fixture
def ui_signed_out(browser: Any, live_server: LiveServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A desktop-sized page with no token kept yet; any JavaScript error fails the test."""
    yield from _page_fixture(browser, live_server, request, DESKTOP, signed_in=False)


@pytest.fixture
def phone(browser: Any, live_server: LiveServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A phone-width (390 px) page, signed in; any JavaScript error fails the test."""
    yield from _page_fixture(browser, live_server, request, PHONE, signed_in=True, suffix="-phone")


__all__ = ["ADMIN_SECRET", "CLIENT_SECRET", "DESKTOP", "PHONE", "LiveServer", "Page"]
