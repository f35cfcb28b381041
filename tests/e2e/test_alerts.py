"""Alerts on both pages in a real Chromium: the list appears and clears, stays text, and says `unknown` when deaf."""

from __future__ import annotations

import pytest
from conftest import envelope, eventually, http, publish
from playwright.sync_api import Page, expect

from numcast.local import free_port, webhook_alertmanager

pytestmark = pytest.mark.e2e

RULES = """\
rules:
  - alert: NumcastValueHigh
    above: 95
    labels: {severity: warning}
    annotations: {summary: "value above 95"}
  - alert: NumcastValueLow
    below: -1000
"""
MARKUP = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"


def webhook_alert(status: str) -> dict:
    """An Alertmanager webhook alert whose every text field holds markup."""
    return {
        "status": status,
        "labels": {"alertname": "NumcastWorkerDown", "severity": "critical", "pod": MARKUP},
        "annotations": {"summary": MARKUP},
        "startsAt": "2026-11-26T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-26T10:05:00Z",
        "fingerprint": "0123456789abcdef",
        "generatorURL": "",
    }


def items(page: Page) -> list[str]:
    return page.eval_on_selector_all("#alerts li", "items => items.map(li => li.innerText)")


@pytest.fixture
def pipeline(redis_server, services, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    alerter = services("alerter", redis_server.url, wait="/readyz", ALERT_RULES=str(rules))
    worker = services("worker", redis_server.url, wait="/readyz")
    eventually(lambda: alerter.json("/api/alerts")["redis"]["subscribed"], message="the alerter subscribed")
    return alerter, worker


def test_the_dashboard_lists_an_alert_then_clears_it(redis_server, services, page, pipeline):
    _, worker = pipeline
    page.goto(worker.url + "/")
    expect(page.locator("#alerts-note")).to_have_text("No active alerts.")
    expect(page.locator("#alert-count")).to_have_text("0")

    publish(redis_server, envelope(1, value=99.0))
    expect(page.locator("#alerts li")).to_have_count(1)
    (text,) = items(page)
    assert "warning" in text.lower() and "value above 95" in text and "stream rule" in text
    assert "since" in text and "NumcastValueHigh" in text
    expect(page.locator("#alert-count")).to_have_text("1")

    publish(redis_server, envelope(2, value=10.0))
    expect(page.locator("#alerts li")).to_have_count(0)
    expect(page.locator("#alerts-note")).to_have_text("No active alerts.")


def test_markup_in_an_alert_stays_text(redis_server, services, page, pipeline):
    alerter, worker = pipeline
    page.goto(worker.url + "/")
    expect(page.locator("#alerts-note")).to_have_text("No active alerts.")
    status, _ = http("POST", alerter.url + "/api/alertmanager", {"version": "4", "alerts": [webhook_alert("firing")]})
    assert status == 200
    expect(page.locator("#alerts li")).to_have_count(1)
    summary = page.locator("#alerts li .summary")
    expect(summary).to_have_text(MARKUP)
    assert page.locator("#alerts img, #alerts b").count() == 0, "no element made from the alert's text"
    assert page.title() != "pwned"
    assert "Alertmanager" in items(page)[0] and "CRITICAL" in items(page)[0].upper()

    http("POST", alerter.url + "/api/alertmanager", {"version": "4", "alerts": [webhook_alert("resolved")]})
    expect(page.locator("#alerts li")).to_have_count(0)


def test_the_list_is_unknown_while_the_page_cannot_hear_the_worker(redis_server, services, page, watch, pipeline):
    # The worker is stopped on purpose: a request in flight then fails however the socket happened to close.
    watch.allow(
        r"WebSocket connection to .* failed|ERR_CONNECTION_(REFUSED|RESET)|ERR_SOCKET_NOT_CONNECTED|ERR_EMPTY_RESPONSE"
    )
    _, worker = pipeline
    page.goto(worker.url + "/")
    publish(redis_server, envelope(1, value=99.0))
    expect(page.locator("#alerts li")).to_have_count(1)
    worker.stop()
    expect(page.locator("#alerts-note")).to_have_text("unknown: not connected to the worker")
    expect(page.locator("#alerts li")).to_have_count(0)
    expect(page.locator("#alert-count")).to_have_text("\u2013")  # an en dash: no count


def test_the_control_page_shows_the_alerts_and_every_rule_s_state(redis_server, services, page, pipeline):
    alerter, _ = pipeline
    control = services("control", redis_server.url, RATE_HZ="0.001")
    page.goto(control.url + "/")
    expect(page.locator("#rules tr")).to_have_count(2)
    expect(page.locator('#rules tr[data-rule="NumcastValueHigh"] td[data-state]')).to_have_text("inactive")
    publish(redis_server, envelope(1, value=99.0))
    expect(page.locator("#alerts li")).to_have_count(1)
    expect(page.locator('#rules tr[data-rule="NumcastValueHigh"] td[data-state]')).to_have_text("firing")
    expect(page.locator('#rules tr[data-rule="NumcastValueHigh"]')).to_contain_text("above 95")
    assert control.json("/api/alerts")["alerts"][0]["alertname"] == "NumcastValueHigh"
    alerter.stop()
    eventually(lambda: page.locator("#rules-empty").is_visible(), timeout=20, message="the rules lapse")


MANY_RULES = """\
rules:
  - alert: QueueDeep
    series: queue_depth
    match: ["queue=~q.*"]
    above: 100
    max_label_sets: 150
    labels: {severity: warning}
    annotations: {summary: "{{ $labels.queue }} holds {{ $value }}"}
"""


def test_a_rule_with_many_label_sets_lists_each_with_its_labels_bounded_and_counts_them_on_the_control_page(
    redis_server, services, page, tmp_path
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(MANY_RULES)
    alerter = services("alerter", redis_server.url, wait="/readyz", ALERT_RULES=str(rules))
    worker = services("worker", redis_server.url, wait="/readyz")
    control = services("control", redis_server.url, wait="/readyz", RATE_HZ="0.001")
    eventually(lambda: alerter.json("/api/alerts")["redis"]["subscribed"], message="the alerter subscribed")
    samples = [{"series": "queue_depth", "labels": {"queue": f"q{n:03d}"}, "value": 500 + n} for n in range(120)]
    samples.append({"series": "queue_depth", "labels": {"queue": "quiet"}, "value": 1})
    status, answer = http("POST", control.url + "/api/push", {"samples": samples}, {"Content-Type": "application/json"})
    assert status == 200, answer

    page.goto(worker.url + "/")
    expect(page.locator("#alert-count")).to_have_text("120")  # the worker sends the first 100, and the total
    expect(page.locator("#alerts li")).to_have_count(50)  # the page shows 50, and says how many more
    expect(page.locator("#alerts-note")).to_have_text("70 more not shown")
    labels = page.eval_on_selector_all("#alerts li .alert-labels", "spans => spans.map(s => s.textContent)")
    assert len(set(labels)) == 50 and all(text.startswith("queue=q") for text in labels), labels[:3]
    summaries = page.eval_on_selector_all("#alerts li .summary", "spans => spans.map(s => s.textContent)")
    assert {text.split(" holds ")[0] for text in summaries} == {text.removeprefix("queue=") for text in labels}

    page.goto(control.url + "/")
    row = page.locator('#rules tr[data-rule="QueueDeep"]')
    expect(row.locator("td[data-state]")).to_have_text("firing")
    expect(row.locator("td[data-label-sets]")).to_have_text("120 firing · 1 inactive")
    expect(row).to_contain_text("queue_depth{queue=~q.*} above 100")
    expect(page.locator("#alerts li")).to_have_count(50)


CHAIN_RULES = """\
rules:
  - alert: NumcastValueHigh
    above: 95
    labels: {severity: warning, team: ""}
    annotations: {summary: "value {{ $value }} above 95"}
"""


def test_one_chain_a_stream_rule_through_alertmanager_and_back_to_the_dashboard_then_resolved(
    redis_server, services, alertmanager, page, tmp_path
):
    # value -> rule -> Alertmanager -> its webhook -> the alerter -> Redis -> a worker -> Chromium, and back out.
    rules = tmp_path / "rules.yaml"
    rules.write_text(CHAIN_RULES)
    port = free_port()
    manager = alertmanager(webhook_alertmanager(f"http://127.0.0.1:{port}/api/alertmanager"))
    alerter = services(
        "alerter", redis_server.url, wait="/readyz", PORT=str(port), ALERT_RULES=str(rules),
        ALERTMANAGER_URLS=manager.url,
    )  # fmt: skip
    worker = services("worker", redis_server.url, wait="/readyz")
    eventually(lambda: alerter.json("/api/alerts")["redis"]["subscribed"], message="the alerter subscribed")
    page.goto(worker.url + "/")
    expect(page.locator("#alerts-note")).to_have_text("No active alerts.")

    publish(redis_server, envelope(1, value=99.0))
    item = page.locator("#alerts li")
    expect(item).to_have_count(1)
    expect(item.locator(".summary")).to_have_text("value 99 above 95")  # the template, rendered
    expect(item).to_contain_text("stream rule")
    fingerprint = item.get_attribute("data-fingerprint")
    (held,) = eventually(lambda: [a for a in manager.alerts() if a["labels"]["alertname"] == "NumcastValueHigh"])
    assert held["fingerprint"] == fingerprint and held["annotations"]["summary"] == "value 99 above 95"
    # Alertmanager notifies the webhook: the alerter knows its own alert and the page still shows it once.
    eventually(lambda: alerter.metric("numcast_alerts_ignored_total") >= 1, timeout=15, message="came back")
    assert alerter.metric("numcast_alerts_published_total", 'origin="alertmanager"') == 0
    expect(item).to_have_count(1)

    publish(redis_server, envelope(2, value=10.0))
    expect(page.locator("#alerts li")).to_have_count(0)
    expect(page.locator("#alerts-note")).to_have_text("No active alerts.")
    eventually(lambda: not [a for a in manager.alerts() if a["labels"]["alertname"] == "NumcastValueHigh"])
    eventually(lambda: alerter.metric("numcast_alerts_ignored_total") >= 2, timeout=15, message="resolved came back")
    expect(page.locator("#alerts li")).to_have_count(0)
