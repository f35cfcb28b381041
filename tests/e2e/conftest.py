"""Browser fixtures: the system's Chromium driven by Playwright, every page watched for errors and stray requests."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from needs import missing

from numcast.local import CHROMIUM_ARGS, CHROMIUM_MISSING, chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, WebSocket

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # an env without the e2e extra (the unit and integration one) does not even collect these
    collect_ignore_glob = ["test_*.py"]

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session; skipped without one, except in CI where that is a failure."""
    path = chromium()
    if path is None:
        missing(CHROMIUM_MISSING)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()


class Watch:
    """What the pages of one test did: console errors, page errors, requests and WebSockets."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.allowed: list[re.Pattern] = []
        self.urls: list[str] = []
        self.websockets: list[WebSocket] = []

    def allow(self, pattern: str) -> None:
        """Tolerate console errors matching `pattern` (a test that stops a server expects refused connections)."""
        self.allowed.append(re.compile(pattern))

    def attach(self, context: BrowserContext) -> None:
        """Record everything `context` and its pages do."""
        context.on(
            "console", lambda m: m.type == "error" and self._error(f"console: {m.text} ({m.location.get('url')})")
        )
        context.on("weberror", lambda error: self.problems.append(f"page error: {error.error}"))
        context.on("request", lambda request: self._request(request.url))
        context.on("page", lambda page: page.on("websocket", self._websocket))

    def _error(self, text: str) -> None:
        if not any(pattern.search(text) for pattern in self.allowed):
            self.problems.append(text)

    def _request(self, url: str) -> None:
        self.urls.append(url)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("data", "blob", "about") and parts.hostname not in LOCAL_HOSTS:
            self.problems.append(f"request leaving the host: {url}")

    def _websocket(self, ws: WebSocket) -> None:
        self.websockets.append(ws)
        self._request(ws.url)


@pytest.fixture
def watch() -> Watch:
    """The record of the test's pages; checked when the test ends."""
    return Watch()


@pytest.fixture
def new_page(browser: Browser, watch: Watch) -> Iterator[Callable[[], Page]]:
    """A factory of watched pages, each in its own context (its own window, so none is a throttled background tab).

    At teardown the test fails if any page logged a console error, threw, or requested anything off this host.
    """
    contexts: list[BrowserContext] = []

    def make() -> Page:
        context = browser.new_context(viewport=VIEWPORT)
        watch.attach(context)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()
    if watch.problems:
        pytest.fail("the pages misbehaved:\n  " + "\n  ".join(watch.problems[:20]), pytrace=False)


@pytest.fixture
def page(new_page: Callable[[], Page]) -> Page:
    """One watched page."""
    return new_page()
