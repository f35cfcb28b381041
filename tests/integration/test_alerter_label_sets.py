"""Rules per label set against real servers: samples pushed through a real control-plane's `POST /api/push`, a
real alerter on the push channel, a real worker and a real Alertmanager. One alert per label set, with its labels
and rendered annotations, resolved on its own, stale on its own, silent on its own; and the cap refusing.

The services are shared by the module: each case watches a series of its own, with a rule of its own.
"""

from __future__ import annotations

import pytest
from conftest import eventually, http, socketio_client
from needs import missing

from numcast import alerts
from numcast.local import ALERTMANAGER_MISSING, Alertmanager, alertmanager_binary

RULES = """\
rules:
  - alert: QueueDeep
    series: queue_depth
    match: ["queue=~bill.*|mail"]
    above: 100
    labels: {severity: warning}
    annotations:
      summary: "{{ $labels.queue }} holds {{ $value }}"
      size: "{{ $value | humanize }} jobs"
  - alert: TooWarm
    series: temperature_celsius
    above: 30
    stale_after: 1s
    labels: {severity: warning}
    annotations: {summary: "{{ $labels.room }} at {{ $value }}"}
  - alert: Restarting
    series: pod_restarts
    above: 0
    max_label_sets: 2
    labels: {severity: info}
  - alert: JobsStuck
    series: jobs_stuck
    above: 0
    max_label_sets: 150
  - alert: NoHeartbeat
    series: heartbeat
    match: [job=billing]
    silent_for: 1s
    stale_after: 2s
    labels: {severity: critical}
    annotations: {summary: "{{ $labels.pod }} silent"}
"""


@pytest.fixture(scope="module")
def manager():
    """One real Alertmanager for the module."""
    if alertmanager_binary() is None:
        missing(ALERTMANAGER_MISSING)
    server = Alertmanager().start()
    yield server
    server.stop()


class Pipeline:
    """Redis, a control-plane that takes pushes from loopback, a worker, the alerter and its Alertmanager."""

    def __init__(self, redis_server, services, manager, rules_path) -> None:
        self.manager = manager
        self.worker = services("worker", redis_server.url, wait="/readyz")
        self.alerter = services(
            "alerter", redis_server.url, wait="/readyz", ALERT_RULES=str(rules_path), ALERTMANAGER_URLS=manager.url,
            ALERTMANAGER_BACKOFF_MAX_SECONDS="0.5",
        )  # fmt: skip
        eventually(lambda: self.alerter.json("/api/alerts")["redis"]["subscribed"], message="the alerter subscribed")
        self.control = services("control", redis_server.url, wait="/readyz", RATE_HZ="1")

    def push(self, series: str, *samples: tuple[dict, float]) -> None:
        """POST /api/push: one sample per (labels, value)."""
        body = {"samples": [{"series": series, "labels": labels, "value": value} for labels, value in samples]}
        status, answer = http("POST", self.control.url + "/api/push", body, {"Content-Type": "application/json"})
        assert status == 200, answer

    def shown(self, alertname: str) -> dict[str, dict]:
        """The worker's active alerts named `alertname`, by their labels as text."""
        found = [a for a in self.worker.json("/api/alerts")["alerts"] if a["alertname"] == alertname]
        return {_text(a["labels"]): a for a in found}

    def held(self, alertname: str) -> dict[str, dict]:
        """Alertmanager's active alerts named `alertname`, by their labels (alertname left out) as text."""
        found = [a for a in self.manager.alerts() if a["labels"]["alertname"] == alertname]
        return {_text({k: v for k, v in a["labels"].items() if k != "alertname"}): a for a in found}

    def rule(self, alertname: str) -> dict:
        """The rule's entry in the alerter's /api/alerts."""
        (rule,) = [r for r in self.alerter.json("/api/alerts")["rules"] if r["alert"] == alertname]
        return rule


def _text(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


@pytest.fixture(scope="module")
def pipeline(module_redis, module_services, manager, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "rules.yaml"
    rules.write_text(RULES)
    return Pipeline(module_redis, module_services, manager, rules)


def test_one_alert_per_pushed_label_set_with_its_labels_and_annotations_and_each_resolves_alone(pipeline):
    billing, mail = "queue=billing,severity=warning", "queue=mail,severity=warning"
    pipeline.push("queue_depth", ({"queue": "billing"}, 1250), ({"queue": "mail"}, 7), ({"queue": "print"}, 900))

    (shown,) = eventually(lambda: pipeline.shown("QueueDeep").values(), message="billing fires on the dashboards")
    assert (shown["labels"], shown["origin"]) == ({"queue": "billing", "severity": "warning"}, "stream")
    assert shown["annotations"] == {"summary": "billing holds 1250", "size": "1.25k jobs"}
    assert shown["fingerprint"] == alerts.fingerprint("QueueDeep", shown["labels"])
    held = eventually(lambda: pipeline.held("QueueDeep"), message="and in Alertmanager")
    assert list(held) == [billing], "mail is below the threshold, print is not matched"
    assert held[billing]["annotations"] == shown["annotations"]
    assert held[billing]["fingerprint"] == shown["fingerprint"], "the same alert, the same identity"
    rule = pipeline.rule("QueueDeep")
    assert rule["counts"] == {"inactive": 1, "pending": 0, "firing": 1} and rule["state"] == "firing"
    assert [(s["labels"]["queue"], s["state"], s["value"]) for s in rule["label_sets"]] == [
        ("billing", "firing", 1250), ("mail", "inactive", None),
    ], "firing first; a value is the one that brought a label set to its state"  # fmt: skip

    pipeline.push("queue_depth", ({"queue": "mail"}, 300))
    eventually(lambda: set(pipeline.shown("QueueDeep")) == {billing, mail}, message="mail fires too")
    assert pipeline.shown("QueueDeep")[mail]["annotations"]["summary"] == "mail holds 300"
    eventually(lambda: set(pipeline.held("QueueDeep")) == {billing, mail}, message="both in Alertmanager")

    pipeline.push("queue_depth", ({"queue": "billing"}, 3))
    eventually(lambda: set(pipeline.shown("QueueDeep")) == {mail}, message="billing resolves, mail fires on")
    eventually(lambda: set(pipeline.held("QueueDeep")) == {mail}, message="resolved in Alertmanager alone")
    pipeline.push("queue_depth", ({"queue": "mail"}, 0))
    eventually(lambda: not pipeline.shown("QueueDeep") and not pipeline.held("QueueDeep"), message="all resolved")


def test_a_label_set_that_stops_goes_stale_and_resolves_while_another_fires_on(pipeline):
    lab, hall = "room=lab,severity=warning", "room=hall,severity=warning"
    pipeline.push("temperature_celsius", ({"room": "lab"}, 35), ({"room": "hall"}, 31))
    eventually(lambda: set(pipeline.held("TooWarm")) == {lab, hall}, message="both fire")

    def hall_resolved_while_lab_keeps_coming():
        pipeline.push("temperature_celsius", ({"room": "lab"}, 36))  # lab never goes stale
        return set(pipeline.shown("TooWarm")) == {lab}

    eventually(hall_resolved_while_lab_keeps_coming, message="hall, silent for stale_after (1 s), resolves")
    eventually(lambda: set(pipeline.held("TooWarm")) == {lab}, message="in Alertmanager too")
    assert pipeline.shown("TooWarm")[lab]["annotations"] == {"summary": "lab at 35"}, "the value that fired it"
    rule = pipeline.rule("TooWarm")
    assert [s["labels"]["room"] for s in rule["label_sets"]] == ["lab"], "hall is forgotten, not kept inactive"
    eventually(lambda: not pipeline.shown("TooWarm") and not pipeline.held("TooWarm"), message="lab stale too")


def test_a_rule_takes_at_most_max_label_sets_and_counts_the_ones_it_refuses(pipeline):
    refused = 'reason="limit",rule="Restarting"'
    assert pipeline.alerter.metric("numcast_alert_label_sets_refused_total", refused) == 0
    assert "numcast_alert_label_sets_refused_total{" + refused + "} 0.0" in pipeline.alerter.get("/metrics")[1]
    pipeline.push("pod_restarts", *[({"pod": f"pod-{n}"}, 1) for n in range(5)])

    eventually(lambda: len(pipeline.held("Restarting")) == 2, message="two alerts, the rule's max_label_sets")
    both = {"pod=pod-0,severity=info", "pod=pod-1,severity=info"}
    # Alertmanager and the worker get the alerts on two paths: neither waits for the other.
    eventually(lambda: set(pipeline.shown("Restarting")) == both, message="the same two on the dashboard")
    eventually(
        lambda: pipeline.alerter.metric("numcast_alert_label_sets_refused_total", refused) == 3, message="3 counted"
    )
    rule = pipeline.rule("Restarting")
    assert rule["refused"] == {"limit": 3, "total": 0, "invalid": 0} and rule["counts"]["firing"] == 2
    eventually(lambda: "new label sets refused rule=Restarting reason=limit" in pipeline.alerter.logs())
    pipeline.push("pod_restarts", ({"pod": "pod-0"}, 0), ({"pod": "pod-9"}, 1))
    eventually(lambda: pipeline.alerter.metric("numcast_alert_label_sets_refused_total", refused) == 4)
    eventually(
        lambda: set(pipeline.shown("Restarting")) == {"pod=pod-1,severity=info"},
        message="pod-0 resolved, but still a label set: pod-9 refused",
    )


def test_silence_is_per_label_set_and_the_rule_s_own_alert_says_none_was_ever_seen(pipeline):
    own = "job=billing,severity=critical"  # the rule's labels and its `=` matcher's: as Prometheus' absent()
    eventually(lambda: set(pipeline.shown("NoHeartbeat")) == {own}, message="nothing came within 1 s of the start")
    pipeline.push("heartbeat", ({"job": "billing", "pod": "a"}, 1), ({"job": "mail", "pod": "b"}, 1))
    pod_a = "job=billing,pod=a,severity=critical"
    eventually(lambda: set(pipeline.shown("NoHeartbeat")) == {pod_a}, message="own resolved, then a silent 1 s")
    assert pipeline.shown("NoHeartbeat")[pod_a]["annotations"] == {"summary": "a silent"}
    eventually(lambda: set(pipeline.held("NoHeartbeat")) == {pod_a}, message="in Alertmanager, as one alert")
    eventually(lambda: set(pipeline.shown("NoHeartbeat")) == {own}, message="a forgotten after 2 s: none is known")


def test_a_browser_gets_the_first_100_alerts_and_their_total_however_many_label_sets_fire(pipeline):
    events: list[dict] = []
    browser = socketio_client(reconnection=False)
    browser.on("alerts", events.append)
    browser.connect(pipeline.worker.url, transports=["websocket"], wait_timeout=10)
    try:
        pipeline.push("jobs_stuck", *[({"worker": f"w{n:03d}"}, 1) for n in range(120)])
        eventually(lambda: len(pipeline.shown("JobsStuck")) == 120, message="120 alerts, one per label set")

        def caught_up():  # the worker's alerts are this case's 120 and what the others left firing
            known = pipeline.worker.json("/api/alerts")
            return events and known["total"] == len(known["alerts"]) >= 120 and events[-1]["total"] == known["total"]

        eventually(caught_up, message="the browser's last event counts every alert")
        assert len(events[-1]["alerts"]) == 100, "the first 100, most severe first"
        assert max(len(event["alerts"]) for event in events) <= 100, "never more in one event"
    finally:
        browser.disconnect()
