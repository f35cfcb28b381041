"""The control page with a token configured: it asks for it in the page, sends it, and keeps it for the tab."""

from __future__ import annotations

import re

import pytest
from conftest import eventually
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

TOKEN = "e2e-control-token-0123456789"
KEY = "numcast-control-token"


def apply(page: Page, rate: str) -> None:
    page.locator("#rate_hz").fill(rate)
    page.get_by_role("button", name="Apply").click()


def rate(control) -> float:
    return control.json("/api/status")["config"]["rate_hz"]


def test_a_change_asks_for_the_token_succeeds_and_the_tab_keeps_it_across_a_reload(redis_server, services, page, watch):
    watch.allow(r"status of 401 .*/api/config\)$")  # Chromium logs each refused request: here they are the point
    control = services("control", redis_server.url, RATE_HZ="5", CONTROL_TOKEN=TOKEN)
    page.goto(control.url + "/")
    prompt = page.get_by_label("Control token")
    expect(prompt).to_be_visible()  # the status says a token is needed, and this tab has none
    expect(page.locator("#token-why")).to_contain_text("Changes need this control-plane's token")

    apply(page, "7")  # without a token: refused, held back, and the prompt takes the focus
    expect(page.locator("#token-why")).to_contain_text("Changes need a token. Enter this control-plane's token")
    expect(page.locator("#token-why")).to_contain_text("rate_hz = 7")
    expect(prompt).to_be_focused()
    assert rate(control) == 5

    prompt.fill("not-the-control-token-at-all")
    page.get_by_role("button", name="Use this token").click()
    expect(page.locator("#token-why")).to_contain_text("The control-plane refused that token.")
    assert page.evaluate(f"sessionStorage.getItem('{KEY}')") is None, "a refused token is forgotten"
    assert rate(control) == 5

    prompt.fill(TOKEN)
    prompt.press("Enter")  # the held-back change goes again, with the token
    expect(page.locator("#form-message")).to_have_text("Applied: rate_hz = 7.")
    expect(page.locator("#token-form")).to_be_hidden()
    assert rate(control) == 7
    assert page.evaluate(f"sessionStorage.getItem('{KEY}')") == TOKEN
    assert prompt.input_value() == "", "the token stays in the tab's storage, not in the page"

    page.reload()  # same tab: the token is still there, and nothing asks for it again
    expect(page.locator("#link")).to_have_text("live")
    expect(page.locator("#token-form")).to_be_hidden()
    apply(page, "9")
    expect(page.locator("#form-message")).to_have_text("Applied: rate_hz = 9.")
    assert rate(control) == 9
    page.get_by_role("button", name="Pause publishing").click()
    expect(page.locator("#state")).to_have_text("paused")
    assert control.json("/api/status")["config"]["paused"] is True
    assert control.metric("numcast_auth_refused_total", 'reason="missing"') == 1
    assert control.metric("numcast_auth_refused_total", 'reason="wrong"') == 1


def test_the_link_numcast_up_prints_brings_the_token_and_leaves_no_trace_in_the_address(
    redis_server, services, new_page
):
    control = services("control", redis_server.url, RATE_HZ="5", CONTROL_TOKEN=TOKEN)
    page = new_page()
    page.goto(f"{control.url}/#token={TOKEN}")
    expect(page.locator("#link")).to_have_text("live")
    assert page.url == control.url + "/", "the token leaves the address bar"
    expect(page.locator("#token-form")).to_be_hidden()
    apply(page, "6")
    expect(page.locator("#form-message")).to_have_text("Applied: rate_hz = 6.")
    assert rate(control) == 6
    # Another tab (its own sessionStorage) has no token and asks for one.
    other = new_page()
    other.goto(control.url + "/")
    expect(other.get_by_label("Control token")).to_be_visible()


def test_without_a_token_the_page_never_asks_and_sends_no_authorization(redis_server, services, page):
    control = services("control", redis_server.url, RATE_HZ="5")
    sent = []
    page.on("request", lambda request: request.method == "PATCH" and sent.append(request.headers))
    page.goto(control.url + "/")
    expect(page.locator("#link")).to_have_text("live")
    apply(page, "8")
    expect(page.locator("#form-message")).to_have_text(re.compile("Applied"))
    eventually(lambda: sent, message="the PATCH")
    assert "authorization" not in sent[0]
    expect(page.locator("#token-form")).to_be_hidden()
    assert rate(control) == 8
