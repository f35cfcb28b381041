"""The control page in a real Chromium: steering the stream, refused changes, and the presence list."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import eventually
from playwright.sync_api import Page, expect

from numcast import presence

pytestmark = pytest.mark.e2e


def rate_shown(page: Page) -> float:
    """The messages per second a dashboard shows (0 while it has no figure yet)."""
    return float(page.locator("#rate").get_attribute("data-value") or 0)


def apply(page: Page, **fields: str) -> None:
    """Fill the form's fields and press Apply."""
    for name, value in fields.items():
        page.locator(f"#{name}").fill(value)
    page.get_by_role("button", name="Apply").click()


def test_changing_the_rate_changes_what_the_dashboard_counts(redis_server, services, new_page):
    """A new rate set on the control page shows up as messages per second on a worker's dashboard."""
    worker = services("worker", redis_server.url, wait="/readyz")
    control = services("control", redis_server.url, RATE_HZ="5")
    dashboard, page = new_page(), new_page()
    dashboard.goto(worker.url + "/")
    page.goto(control.url + "/")
    eventually(lambda: 3.5 <= rate_shown(dashboard) <= 6.5, 15, message="about 5 values/s on the dashboard")

    apply(page, rate_hz="40")
    expect(page.locator("#form-message")).to_have_text(re.compile("Applied"))
    expect(page.locator("#current-rate_hz")).to_have_text("40")
    assert control.json("/api/status")["config"]["rate_hz"] == 40
    eventually(lambda: 32 <= rate_shown(dashboard) <= 48, 15, message="about 40 values/s on the dashboard")
    eventually(lambda: 30 <= float(page.locator("#measured-rate").text_content()) <= 50, message="measured rate")

    page.get_by_role("button", name="Pause publishing").click()
    expect(page.locator("#state")).to_have_text("paused")
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "true")
    assert control.json("/api/status")["config"]["paused"] is True


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"rate_hz": "0"}, "rate_hz", "rate_hz"),
        ({"rate_hz": "1000000"}, "rate_hz", "rate_hz"),
        ({"min": "200"}, "min", "must be <= max"),
        ({"max": "-5"}, "max", "must be <= max"),
        ({"min": "50", "max": "10"}, "min", "must be <= max"),
    ],
)
def test_a_refused_change_shows_the_error_by_its_field_and_changes_nothing(
    redis_server, services, page, watch, fields, field, message
):
    """The API's error is shown next to the field it names, marked invalid, and the config stays as it was."""
    watch.allow(r"status of 400 .*/api/config\)$")  # Chromium logs every refused request; this one is the point
    control = services("control", redis_server.url, RATE_HZ="5")
    before = control.json("/api/status")["config"]
    page.goto(control.url + "/")
    expect(page.locator("#link")).to_have_text("live")

    apply(page, **fields)
    error = page.locator(f"#{field}-error")
    expect(error).to_contain_text(message)
    expect(page.locator(f"#{field}")).to_have_attribute("aria-invalid", "true")
    expect(page.locator(f"#{field}")).to_have_attribute("aria-describedby", f"{field}-error")
    expect(page.locator("#form-message")).to_have_text("")
    time.sleep(0.5)
    assert control.json("/api/status")["config"] == before
    expect(page.locator("#current-rate_hz")).to_have_text("5")

    apply(page, rate_hz="6", min="0", max="100")  # a good change clears the error
    expect(error).to_have_text("")
    expect(page.locator(f"#{field}")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#form-message")).to_have_text("Applied: rate_hz = 6.")  # the errors go before the PATCH
    assert control.json("/api/status")["config"]["rate_hz"] == 6


def test_presence_lists_live_workers_and_drops_a_stopped_one(redis_server, services, new_page):
    """Both workers of a two-worker stack are listed, with their browsers; a stopped one leaves the list."""
    workers = [services("worker", redis_server.url, wait="/readyz") for _ in range(2)]
    control = services("control", redis_server.url, RATE_HZ="10")
    dashboard, page = new_page(), new_page()
    dashboard.goto(workers[0].url + "/")
    page.goto(control.url + "/")

    names = page.locator("#workers tr td:first-child")
    expect(names).to_have_text(["machine-1", "machine-2"], timeout=10_000)
    expect(page.locator("#worker-count")).to_have_text("2")
    row = page.locator("#workers tr[data-worker='machine-1'] td")
    expect(row.nth(2)).to_have_text("1", timeout=10_000)  # the dashboard's browser, after the next heartbeat
    eventually(lambda: int(row.nth(3).text_content().replace(",", "")) > 0, 10, message="values received move")
    expect(row.nth(4)).to_have_text(re.compile(r"just now|\d s ago"))

    workers[1].stop()
    expect(names).to_have_text(["machine-1"], timeout=8000)  # a clean stop withdraws at once
    expect(page.locator("#worker-count")).to_have_text("1")


def test_a_name_with_markup_in_presence_is_shown_as_text(redis_server, services, page):
    """Anyone with Redis access can write a presence key; its contents are shown as text, never parsed."""
    control = services("control", redis_server.url)
    attack = '<img src=x onerror="window.pwned = true">'
    info = {"name": attack, "host": "<b>bold</b>", "clients": 0, "received": 0, "last_seen": time.time()}
    # As a worker writes it: the control page skips a key that would outlive a missed heartbeat.
    redis_server.client().set(f"numcast:presence:numbers:{attack}:h", json.dumps(info), ex=presence.TTL_SECONDS)
    page.goto(control.url + "/")
    page.evaluate("window.pwned = false")

    cells = page.locator("#workers tr td")
    expect(cells.nth(0)).to_have_text(attack)
    expect(cells.nth(1)).to_have_text("<b>bold</b>")
    assert page.locator("#workers img, #workers b").count() == 0
    page.wait_for_timeout(1500)  # two more polls, two more chances to go wrong
    assert page.evaluate("window.pwned") is False
    assert page.locator("img").count() == 0
