"""The alerter against real servers: Redis, Alertmanager, the control-plane, a worker and a Socket.IO client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import NUMCAST, envelope, eventually, http, publish, socketio_client

from numcast import alerts
from numcast.local import free_port, webhook_alertmanager
from numcast.metrics import Metrics
from numcast.settings import from_env
from numcast_alerter.service import AlerterService
from numcast_alerter.settings import AlerterSettings

WEBHOOK_TOKEN = "alertmanager-to-alerter-0123456789"
HIGH_RULES = """\
rules:
  - alert: NumcastValueHigh
    above: 95
    for: {for_}
    labels: {{severity: warning}}
    annotations: {{summary: "value above 95"}}
"""


EMPTY_LABEL_RULES = """\
rules:
  - alert: Empty
    above: 95
    labels: {severity: warning, team: ""}
"""


NEVER_RULES = "rules:\n  - {alert: Never, above: 1.0e+300}\n"  # nothing of the stream's own gets in the way


class AlertsBrowser:
    """A Socket.IO client on a worker that keeps every `alerts` event with its arrival time."""

    def __init__(self, url: str) -> None:
        self.events: list[tuple[float, dict]] = []
        self.lock = threading.Lock()
        self.client = socketio_client(reconnection=False, websocket_extra_options={"origin": url})
        self.client.on("alerts", self._alerts)
        self.client.connect(url, transports=["websocket"], wait_timeout=5)

    def _alerts(self, payload: dict) -> None:
        with self.lock:
            self.events.append((time.time(), payload))

    def active(self) -> list[dict]:
        """The alerts of the newest event (empty before any)."""
        with self.lock:
            return self.events[-1][1]["alerts"] if self.events else []

    def first_with(self, alertname: str) -> float | None:
        """Arrival time of the first event that lists `alertname`."""
        with self.lock:
            return next((at for at, p in self.events if any(a["alertname"] == alertname for a in p["alerts"])), None)


def webhook_payload(*alerts_: dict) -> dict:
    """What Alertmanager posts: its version, and each alert as it holds it."""
    return {"version": "4", "status": "firing", "alerts": list(alerts_)}


def webhook_alert(alertname: str, status: str = "firing", **labels: str) -> dict:
    """One alert as Alertmanager's webhook carries it."""
    labels = {"alertname": alertname, **labels}
    return {
        "status": status, "labels": labels, "annotations": {"summary": alertname},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else alerts.rfc3339(time.time()),
        "fingerprint": alerts.fingerprint(alertname, {k: v for k, v in labels.items() if k != "alertname"}),
        "generatorURL": "",
    }  # fmt: skip


def names(items: list[dict]) -> set[str]:
    return {item["alertname"] if "alertname" in item else item["labels"]["alertname"] for item in items}


@pytest.fixture
def rules_file(tmp_path):
    def write(text: str, name: str = "rules.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def worker(redis_server, services):
    return services("worker", redis_server.url, wait="/readyz", BATCH_MS="50")


@pytest.fixture(scope="module")
def shared_worker(module_redis, module_services):
    return module_services("worker", module_redis.url, wait="/readyz", BATCH_MS="50")


def start_alerter(services, redis_server, rules_path=None, **env):
    if rules_path is not None:
        env["ALERT_RULES"] = str(rules_path)
    alerter = services("alerter", redis_server.url, wait="/readyz", **env)
    # Ready says "serving", not "subscribed" (Redis is reported, not required): wait for the subscription too.
    eventually(lambda: alerter.json("/api/alerts")["redis"]["subscribed"], message="the alerter subscribed")
    return alerter


def test_a_stream_alert_fires_in_alertmanager_and_a_browser_then_resolves_in_both(
    redis_server, services, alertmanager, rules_file, worker
):
    manager = alertmanager()
    rules = rules_file(HIGH_RULES.format(for_="1s"))
    alerter = start_alerter(services, redis_server, rules, ALERTMANAGER_URL=manager.url, EXTERNAL_URL="http://alerter")
    control = services("control", redis_server.url, RATE_HZ="20", VALUE_MIN="0", VALUE_MAX="50")
    browser = AlertsBrowser(worker.url)
    eventually(lambda: browser.events, message="the active set on connect")
    assert browser.active() == []

    crossed = time.time()
    assert http("PATCH", control.url + "/api/config", {"min": 96, "max": 99})[0] == 200
    eventually(lambda: browser.first_with("NumcastValueHigh"), timeout=10, message="the alert in the browser")
    # The promise: within 2 s of the crossing plus the rule's `for` (1 s).
    assert browser.first_with("NumcastValueHigh") - crossed <= 1 + 2
    (shown,) = browser.active()
    assert (shown["status"], shown["origin"], shown["labels"]) == ("firing", "stream", {"severity": "warning"})
    held = eventually(lambda: [a for a in manager.alerts() if a["labels"]["alertname"] == "NumcastValueHigh"])
    assert held[0]["labels"] == {"alertname": "NumcastValueHigh", "severity": "warning"}
    assert held[0]["fingerprint"] == shown["fingerprint"], "the channel's fingerprint is Alertmanager's"
    assert held[0]["generatorURL"] == "http://alerter/api/alerts"
    assert held[0]["status"]["state"] == "active"
    (rule,) = alerter.json("/api/alerts")["rules"]
    assert rule["state"] == "firing" and rule["value"] > 95
    assert worker.json("/api/alerts")["alerts"] == [shown]

    assert http("PATCH", control.url + "/api/config", {"min": 0, "max": 50})[0] == 200
    eventually(lambda: browser.active() == [], message="the alert leaves the browser's list")
    eventually(lambda: "NumcastValueHigh" not in names(manager.alerts()), message="resolved in Alertmanager")
    assert alerter.json("/api/alerts")["rules"][0]["state"] == "inactive"
    assert alerter.metric("numcast_alerts_published_total", 'origin="stream"') == 2


def test_an_alert_posted_to_alertmanager_reaches_a_browser_through_the_webhook(
    redis_server, services, alertmanager, worker, tmp_path
):
    alerter = start_alerter(services, redis_server, CONTROL_TOKEN=WEBHOOK_TOKEN)
    # Alertmanager sends the alerter's token from a file, as in the cluster (a mounted Secret, with its newline).
    (tmp_path / "alerter-token").write_text(WEBHOOK_TOKEN + "\n")
    manager = alertmanager(webhook_alertmanager(alerter.url + "/api/alertmanager", str(tmp_path / "alerter-token")))
    browser = AlertsBrowser(worker.url)
    labels = {"alertname": "NumcastWorkerDown", "severity": "critical", "pod": "<img src=x onerror=alert(1)>"}
    manager.post([{"labels": labels, "annotations": {"summary": "<b>machine-2</b> is down"}}])

    eventually(lambda: browser.first_with("NumcastWorkerDown"), timeout=15, message="the webhook's alert")
    (shown,) = browser.active()
    assert shown["origin"] == "alertmanager" and shown["status"] == "firing"
    assert shown["labels"] == {"severity": "critical", "pod": "<img src=x onerror=alert(1)>"}, "carried as data"
    assert shown["annotations"] == {"summary": "<b>machine-2</b> is down"}
    assert shown["endsAt"] is None
    assert shown["fingerprint"] == alerts.fingerprint("NumcastWorkerDown", shown["labels"])

    manager.post([{"labels": labels, "endsAt": alerts.rfc3339(time.time())}])
    eventually(lambda: browser.active() == [], timeout=15, message="resolved through the webhook")
    assert alerter.metric("numcast_received_total", 'path="webhook"') >= 2
    assert alerter.metric("numcast_auth_refused_total", 'reason="missing"') == 0
    assert alerter.metric("numcast_auth_refused_total", 'reason="wrong"') == 0


def mount_secret(folder, token: str) -> None:
    """Write `token` as the kubelet updates a mounted Secret: a new directory, then one atomic symlink swap."""
    version = folder / f"..{time.monotonic_ns()}"
    version.mkdir()
    (version / "token").write_text(token + "\n")
    (folder / "..data_tmp").symlink_to(version.name)
    os.replace(folder / "..data_tmp", folder / "..data")
    if not (folder / "token").is_symlink():
        (folder / "token").symlink_to("..data/token")


def test_a_rotated_webhook_token_is_read_again_so_alertmanager_s_notifications_keep_arriving(
    redis_server, services, alertmanager, worker, tmp_path
):
    secret = tmp_path / "alerter-token"
    secret.mkdir()
    mount_secret(secret, WEBHOOK_TOKEN)
    alerter = start_alerter(services, redis_server, CONTROL_TOKEN_FILE=str(secret / "token"))
    # Alertmanager reads its credentials_file at every call: after the rotation it sends the new token.
    manager = alertmanager(webhook_alertmanager(alerter.url + "/api/alertmanager", str(secret / "token")))
    manager.post([{"labels": {"alertname": "Before"}}])
    eventually(lambda: "Before" in names(worker.json("/api/alerts")["alerts"]), timeout=15)

    rotated = "rotated-token-9876543210abcdef"
    mount_secret(secret, rotated)
    manager.post([{"labels": {"alertname": "After"}}])
    eventually(lambda: "After" in names(worker.json("/api/alerts")["alerts"]), timeout=15, message="still delivered")
    old = http(
        "POST", alerter.url + "/api/alertmanager", webhook_payload(), {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    )
    assert old[0] == 401, "the old token is refused once the Secret changed"
    assert "token file changed, read again" in alerter.logs()


def test_alertmanager_down_then_back_gets_the_firing_alert(redis_server, services, alertmanager, rules_file, worker):
    manager = alertmanager()
    rules = rules_file(HIGH_RULES.format(for_="0s"))
    alerter = start_alerter(
        services, redis_server, rules, ALERTMANAGER_URL=manager.url, RESEND_SECONDS="1",
        ALERTMANAGER_BACKOFF_MAX_SECONDS="0.5",
    )  # fmt: skip
    browser = AlertsBrowser(worker.url)
    manager.kill()

    publish(redis_server, envelope(1, value=99.0))
    eventually(lambda: browser.active(), message="the channel works without Alertmanager")
    eventually(lambda: alerter.metric("numcast_alertmanager_errors_total", f'url="{manager.url}"') >= 1)
    (status,) = alerter.json("/api/alerts")["alertmanagers"]
    assert status["connected"] is False and status["queued"] == 1
    publish(redis_server, envelope(2, value=98.0))  # still evaluating: the value is there, nothing new to send
    eventually(lambda: alerter.json("/api/alerts")["rules"][0]["value"] == 99.0)

    manager.start()  # same port, and it lost every alert it had
    eventually(lambda: "NumcastValueHigh" in names(manager.alerts()), timeout=15, message="delivered once back")
    manager.kill()
    manager.start()
    eventually(lambda: "NumcastValueHigh" in names(manager.alerts()), timeout=15, message="re-sent after a restart")
    assert alerter.json("/api/alerts")["alertmanagers"][0]["connected"] is True


def test_a_worker_that_starts_later_gets_the_active_set_at_once(redis_server, services, rules_file):
    start_alerter(services, redis_server, rules_file(HIGH_RULES.format(for_="0s")))
    publish(redis_server, envelope(1, value=99.0))
    client = redis_server.client()
    eventually(lambda: client.hlen(alerts.key("alerts")) == 1, message="the alerter keeps the active set")
    late = services("worker", redis_server.url, wait="/readyz")
    eventually(lambda: late.json("/api/alerts")["synced"])
    assert names(late.json("/api/alerts")["alerts"]) == {"NumcastValueHigh"}
    browser = AlertsBrowser(late.url)
    eventually(lambda: browser.active(), message="the set on connect")
    assert late.metric("numcast_alerts_active") == 1
    client.close()


def test_a_silence_rule_fires_without_values_and_resolves_with_one(redis_server, services, rules_file, worker):
    rules = rules_file("rules:\n  - alert: Quiet\n    silent_for: 1s\n    labels: {severity: critical}\n")
    alerter = start_alerter(services, redis_server, rules)
    browser = AlertsBrowser(worker.url)
    eventually(lambda: names(browser.active()) == {"Quiet"}, message="silence fires")
    assert alerter.json("/api/alerts")["rules"][0]["value"] >= 1
    publish(redis_server, envelope(1))
    eventually(lambda: browser.active() == [], message="a value resolves it")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("rules:\n  - alert: A\n    above: 1\n    fore: 1s\n", "rule 1 (A): line 4: key 'fore': unknown key"),
        ("rules:\n  - alert: A\n    above: 1\n    for: 3 seconds\n", "rule 1 (A): line 4: key 'for': '3 seconds' is"),
        ("rules:\n  - alert: A\n    above: 1\n    below: 0\n", "rule 1 (A): line 4: key 'below': a rule has exactly"),
        ("rules:\n  - {alert: A, above: 1}\n  - {alert: A, below: 1}\n", "rule 2 (A): line 3: key 'alert': the name A"),
        (
            "rules:\n  - {alert: A, above: 1}\n  - alert: Deep\n    series: queue_depth\n    above: 1\n"
            "    match: [queue=billing, 'job=~(bill']\n",
            "rule 2 (Deep): line 6: key 'match': job=~: not an RE2 regex: missing ): (bill",
        ),
        (
            "rules:\n  - alert: Deep\n    series: queue_depth\n    above: 1\n    match: [queue]\n",
            "rule 1 (Deep): line 5: key 'match': 'queue' is not <label><op><value> with op one of = != =~ !~",
        ),
    ],
    ids=["unknown key", "bad duration", "two conditions", "duplicate name", "bad regex matcher", "not a matcher"],
)
def test_a_bad_rules_file_stops_the_start_naming_rule_and_key(rules_file, text, words):
    path = rules_file(text)
    result = subprocess.run(
        [NUMCAST, "alerter"], env={"ALERT_RULES": str(path), "PATH": ""}, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert f"invalid setting ALERT_RULES='{path}': {path}: {words}" in result.stderr


def test_rules_reload_on_sighup_and_on_change_and_a_bad_reload_keeps_the_old(redis_server, services, rules_file):
    path = rules_file("rules:\n  - {alert: First, above: 10}\n")
    alerter = start_alerter(services, redis_server, path)
    rule_names = lambda: [rule["alert"] for rule in alerter.json("/api/alerts")["rules"]]  # noqa: E731
    assert rule_names() == ["First"]

    path.write_text("rules:\n  - {alert: First, above: 10}\n  - {alert: Bad, above: 1, for: soon}\n")
    alerter.signal(signal.SIGHUP)
    eventually(lambda: alerter.json("/api/alerts")["reload_error"], message="the refused reload is reported")
    assert "rule 2 (Bad): line 3: key 'for'" in alerter.json("/api/alerts")["reload_error"]
    assert rule_names() == ["First"], "the old rules stay in force"
    eventually(lambda: "rules reload refused, the old rules stay in force" in alerter.logs())
    assert alerter.metric("numcast_rule_reloads_total", 'result="error"') >= 1
    assert alerter.metric("numcast_rule_reload_successful") == 0, "NumcastAlertRulesReloadFailed's signal"

    path.write_text("rules:\n  - {alert: Second, below: 5}\n")  # no signal: the change is noticed
    eventually(lambda: rule_names() == ["Second"], message="reloaded on change")
    assert alerter.json("/api/alerts")["reload_error"] is None
    assert alerter.metric("numcast_rule_reload_successful") == 1
    assert alerter.stop() == 0


def post_announcing(url: str, length: int) -> int:
    """The status of a POST whose headers announce a body of `length` bytes, of which only the first 64 KiB are sent.

    The server answers 413 from Content-Length, before it reads the body, and closes: a client that went on
    sending the whole megabyte would get EPIPE now and then instead of the answer, depending on the timing.
    """
    address = urllib.parse.urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        head = f"POST {address.path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {length}\r\nConnection: close\r\n\r\n".encode() + b" " * 65536)
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def test_the_webhook_refuses_a_body_that_is_not_a_payload_and_skips_only_the_bad_alerts_of_one(redis_server, services):
    alerter = start_alerter(services, redis_server)
    listener = redis_server.client().pubsub(ignore_subscribe_messages=True)
    listener.subscribe("alerts")
    good = {"status": "firing", "labels": {"alertname": "Good"}, "annotations": {}, "fingerprint": "0123456789abcdef"}
    good |= {"startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": ""}
    bodies = [
        (json.dumps({"version": "3", "alerts": [good]}), "bad_version"),
        ('{"version": "4", "alerts": [', "not_json"),
        (json.dumps({"version": "4"}), "bad_fields"),
        (json.dumps([good]), "not_object"),
    ]
    for body, reason in bodies:
        status, answer = http("POST", alerter.url + "/api/alertmanager", body.encode())
        assert status == 400, body
        assert answer["error"].startswith(f"{reason}: ") and answer.get("reason") == reason, answer
        assert f"webhook rejected reason={reason} detail={answer['error']}" in alerter.logs()
        assert alerter.metric("numcast_rejected_total", f'path="webhook",reason="{reason}"') == 1
    assert post_announcing(alerter.url + "/api/alertmanager", 2**20 + 1) == 413
    bad = [
        {**good, "labels": {"severity": "x"}},
        {k: v for k, v in good.items() if k != "startsAt"},
        {**good, "status": "<b>"},
        {**good, "labels": {"alertname": "G", "<b>": "x"}},
        {**good, "fingerprint": "x"},
    ]
    payload = json.dumps({"version": "4", "alerts": [*bad, good]}).encode() + b" " * 500_000  # under 1 MiB: taken
    status, answer = http("POST", alerter.url + "/api/alertmanager", payload)
    assert (status, answer["published"], answer["rejected"]) == (200, 1, 5), answer
    assert answer["errors"][0].startswith("bad_labels: alerts[0]: ")
    message = eventually(lambda: listener.get_message(timeout=0.2), message="the good one")
    assert json.loads(message["data"])["alertname"] == "Good", "nothing before it"
    assert alerter.metric("numcast_rejected_total", 'path="webhook",reason="bad_labels"') == 2
    assert alerter.metric("numcast_rejected_total", 'path="webhook",reason="bad_fingerprint"') == 1
    listener.close()


def one_group_alertmanager(url: str) -> str:
    """Every alert in one group (no label to group by), so one webhook call carries them all."""
    return f"""\
route: {{receiver: numcast, group_by: [], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}
receivers:
  - name: numcast
    webhook_configs: [{{url: "{url}", send_resolved: true}}]
"""


def test_an_alertname_alertmanager_accepts_reaches_the_dashboards_and_a_bad_alert_costs_only_itself(
    redis_server, services, alertmanager, worker
):
    alerter = start_alerter(services, redis_server)
    manager = alertmanager(one_group_alertmanager(alerter.url + "/api/alertmanager"))
    browser = AlertsBrowser(worker.url)
    manager.post(
        [
            {"labels": {"alertname": "High CPU usage", "severity": "warning"}},
            {"labels": {"alertname": "Bell", "pod": "ring\x07"}},  # Alertmanager takes it; the dashboards do not
            {"labels": {"alertname": "NumcastDiskFull", "severity": "critical"}},
        ]
    )
    eventually(lambda: names(browser.active()) == {"High CPU usage", "NumcastDiskFull"}, timeout=15)
    eventually(lambda: alerter.metric("numcast_rejected_total", 'path="webhook",reason="bad_labels"') >= 1)
    assert "webhook alert skipped reason=bad_labels" in alerter.logs()


def test_a_label_with_an_empty_value_is_one_alert_on_both_paths(
    redis_server, services, alertmanager, rules_file, worker
):
    # The stream alert goes to Alertmanager, which routes it back to the webhook: one alert, not one per origin.
    port = free_port()  # each must know the other's address before it starts
    manager = alertmanager(webhook_alertmanager(f"http://127.0.0.1:{port}/api/alertmanager"))
    rules = rules_file(EMPTY_LABEL_RULES)
    alerter = start_alerter(services, redis_server, rules, PORT=str(port), ALERTMANAGER_URL=manager.url)
    publish(redis_server, envelope(1, value=99.0))
    eventually(lambda: "Empty" in names(manager.alerts()), message="in Alertmanager")

    def came_back():
        ignored = alerter.metric("numcast_alerts_ignored_total")
        return ignored + alerter.metric("numcast_alerts_published_total", 'origin="alertmanager"')

    eventually(came_back, timeout=15, message="the webhook call came back")
    client = redis_server.client()
    assert client.hlen(alerts.key("alerts")) == 1
    (shown,) = worker.json("/api/alerts")["alerts"]
    assert shown["labels"] == {"severity": "warning"} and shown["origin"] == "stream"
    assert shown["fingerprint"] == manager.alerts()[0]["fingerprint"]
    client.close()


JUNK = [
    ("not json", "not_json"),
    ('{"status": "firing"}', "bad_fields"),
    (b"\xff\xfe", "not_utf8"),
    ("x" * 20000, "too_large"),
]
MESSAGE = {
    "status": "firing", "alertname": "A", "labels": {}, "annotations": {}, "startsAt": "2026-01-01T00:00:00Z",
    "endsAt": None, "fingerprint": alerts.fingerprint("A", {}), "origin": "stream",
}  # fmt: skip


@pytest.mark.parametrize(
    ("junk", "reason"),
    [
        *JUNK,
        (json.dumps({**MESSAGE, "origin": "<script>"}), "bad_origin"),
        (json.dumps({**MESSAGE, "labels": {"x": 1}}), "bad_labels"),
        (json.dumps({**MESSAGE, "startsAt": "yesterday"}), "bad_time"),
        (json.dumps({**MESSAGE, "extra": 1}), "bad_fields"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 20 else None,
)
def test_junk_on_the_alerts_channel_is_rejected_counted_and_never_shown(
    module_redis, shared_worker, junk, reason, request
):
    """One worker for every case: each sends its junk, then a valid alert of its own, on the same channel."""
    worker = shared_worker
    rejected = f'path="alerts",reason="{reason}"'
    before = worker.metric("numcast_rejected_total", rejected)
    name = f"Case{request.node.callspec.indices['junk']}"
    valid = {**MESSAGE, "alertname": name, "fingerprint": alerts.fingerprint(name, {})}
    publish(module_redis, junk, json.dumps(valid), channel="alerts")

    def shown() -> list[dict]:
        return worker.json("/api/alerts")["alerts"]

    eventually(lambda: valid in shown(), message="the valid message after the junk")
    assert all(alert["alertname"].startswith("Case") for alert in shown()), "only the cases' valid alerts"
    assert [alert for alert in shown() if alert["alertname"] == name] == [valid]
    assert worker.metric("numcast_rejected_total", rejected) == before + 1


def test_the_alerter_runs_in_threading_mode_and_reloads_on_sighup_there(redis_server, services, rules_file):
    path = rules_file(HIGH_RULES.format(for_="0s"))
    alerter = start_alerter(services, redis_server, path, ASYNC_MODE="threading")
    publish(redis_server, envelope(1, value=99.0))
    eventually(lambda: alerter.json("/api/alerts")["rules"][0]["state"] == "firing")
    path.write_text("rules:\n  - {alert: Other, below: 1}\n")
    alerter.signal(signal.SIGHUP)
    eventually(lambda: [rule["alert"] for rule in alerter.json("/api/alerts")["rules"]] == ["Other"])
    client = redis_server.client()
    eventually(lambda: client.hlen(alerts.key("alerts")) == 0, message="the removed rule's alert resolved")
    client.close()
    assert "async_mode=threading" in alerter.logs()
    assert alerter.stop() == 0


def test_a_restarted_alerter_keeps_its_firing_alert_and_resolves_one_it_no_longer_has(
    redis_server, services, rules_file
):
    path = rules_file(HIGH_RULES.format(for_="0s"))
    client = redis_server.client()
    first = start_alerter(services, redis_server, path)
    publish(redis_server, envelope(1, value=99.0))
    eventually(lambda: client.hlen(alerts.key("alerts")) == 1)
    assert first.stop() == 0
    second = start_alerter(services, redis_server, path)
    eventually(lambda: second.json("/api/alerts")["rules"][0]["state"] == "firing", message="adopted")
    assert client.hlen(alerts.key("alerts")) == 1
    assert second.stop() == 0
    path.write_text("rules:\n  - {alert: Other, below: 1}\n")
    start_alerter(services, redis_server, path)
    eventually(lambda: client.hlen(alerts.key("alerts")) == 0, message="no rule of ours: resolved")
    client.close()


def test_after_a_redis_restart_the_alerter_writes_its_whole_set_back_and_the_workers_show_it(
    redis_server, services, rules_file, worker
):
    rules = rules_file("rules:\n  - {alert: High, above: 95, labels: {severity: warning}}\n")
    alerter = start_alerter(services, redis_server, rules)
    browser = AlertsBrowser(worker.url)
    publish(redis_server, envelope(1, value=99.0))
    status, _ = http("POST", alerter.url + "/api/alertmanager", webhook_payload(webhook_alert("NumcastDiskFull")))
    assert status == 200
    both = {"High", "NumcastDiskFull"}
    eventually(lambda: names(worker.json("/api/alerts")["alerts"]) == both, message="both on the dashboards")

    redis_server.kill()  # the shipped Redis keeps nothing: it comes back empty
    redis_server.restart()
    restarted = time.monotonic()
    eventually(lambda: worker.metric("numcast_reconnects_total", 'path="redis"') >= 1, message="the worker is back")
    eventually(lambda: names(worker.json("/api/alerts")["alerts"]) == both, timeout=10, message="the set written back")
    eventually(lambda: names(browser.active()) == both, timeout=5, message="and pushed to the browser")
    print(f"both alerts back on the dashboard {time.monotonic() - restarted:.2f} s after Redis restarted")
    client = redis_server.client()
    assert {json.loads(raw)["alertname"] for raw in client.hgetall(alerts.key("alerts")).values()} == both
    assert alerter.json("/api/alerts")["redis"]["synced"] is True
    client.close()


def test_an_alert_alertmanager_no_longer_has_leaves_the_dashboards_within_one_sync(
    redis_server, services, alertmanager, rules_file, worker
):
    port = free_port()
    manager = alertmanager(webhook_alertmanager(f"http://127.0.0.1:{port}/api/alertmanager"))
    alerter = start_alerter(
        services, redis_server, rules_file(NEVER_RULES), PORT=str(port), ALERTMANAGER_URL=manager.url,
        ALERTMANAGER_SYNC_SECONDS="1",
    )  # fmt: skip
    manager.post([{"labels": {"alertname": "NumcastDiskFull", "severity": "critical"}}])
    eventually(lambda: names(worker.json("/api/alerts")["alerts"]) == {"NumcastDiskFull"}, timeout=15)
    manager.kill()  # restarted on its emptyDir: the alert is gone, and no resolved notification will ever come
    manager.start()
    eventually(lambda: worker.json("/api/alerts")["alerts"] == [], timeout=10, message="gone within a sync or two")
    assert alerter.metric("numcast_alerts_expired_total", 'reason="sync"') == 1


def test_without_an_alertmanager_to_ask_a_webhook_alert_leaves_when_its_lease_runs_out(
    redis_server, services, rules_file, worker
):
    alerter = start_alerter(services, redis_server, rules_file(NEVER_RULES), WEBHOOK_LEASE_SECONDS="2")
    payload = webhook_payload(webhook_alert("NumcastDiskFull"))
    assert http("POST", alerter.url + "/api/alertmanager", payload)[0] == 200
    eventually(lambda: names(worker.json("/api/alerts")["alerts"]) == {"NumcastDiskFull"})
    assert alerter.json("/api/alerts")["webhook"]["held"] == 1
    eventually(lambda: worker.json("/api/alerts")["alerts"] == [], timeout=10, message="the lease ran out")
    assert alerter.metric("numcast_alerts_expired_total", 'reason="lease"') == 1


def test_a_value_rule_whose_stream_stops_goes_stale_and_resolves_everywhere(
    redis_server, services, alertmanager, rules_file, worker
):
    manager = alertmanager()
    rules = rules_file("rules:\n  - {alert: Stale, above: 95, stale_after: 2s, labels: {severity: warning}}\n")
    alerter = start_alerter(services, redis_server, rules, ALERTMANAGER_URL=manager.url)
    publish(redis_server, envelope(1, value=99.0))  # one value past the threshold, then silence
    eventually(lambda: "Stale" in names(manager.alerts()), message="fired")
    eventually(lambda: worker.json("/api/alerts")["alerts"] == [], timeout=10, message="stale: resolved")
    eventually(lambda: "Stale" not in names(manager.alerts()), message="resolved in Alertmanager too")
    (rule,) = alerter.json("/api/alerts")["rules"]
    assert (rule["state"], rule["stale_after"]) == ("inactive", 2)


def test_annotations_are_rendered_with_the_value_for_the_dashboards_and_for_alertmanager(
    redis_server, services, alertmanager, rules_file, worker
):
    manager = alertmanager()
    text = 'annotations: {summary: "value {{ $value }} above 95", big: "{{ $value | humanize }}"}'
    alerter = start_alerter(
        services, redis_server, rules_file(f"rules:\n  - {{alert: High, above: 95, {text}}}\n"),
        ALERTMANAGER_URL=manager.url,
    )  # fmt: skip
    publish(redis_server, envelope(1, value=1234567.0))
    (shown,) = eventually(lambda: worker.json("/api/alerts")["alerts"])
    assert shown["annotations"] == {"summary": "value 1.234567e+06 above 95", "big": "1.235M"}
    (held,) = eventually(lambda: [a for a in manager.alerts() if a["labels"]["alertname"] == "High"])
    assert held["annotations"] == shown["annotations"]
    assert alerter.json("/api/alerts")["rules"][0]["annotations"]["summary"] == "value {{ $value }} above 95"


def test_a_restarted_alerter_keeps_a_firing_silence_alert_and_its_start_without_resolving_it(
    redis_server, services, rules_file
):
    rules = rules_file("rules:\n  - {alert: Quiet, silent_for: 1s, labels: {severity: critical}}\n")
    client = redis_server.client()
    first = start_alerter(services, redis_server, rules)
    (raw,) = eventually(lambda: list(client.hgetall(alerts.key("alerts")).values()), message="silence fires")
    before = json.loads(raw)
    listener = client.pubsub()
    listener.subscribe("alerts")
    eventually(lambda: listener.get_message(timeout=0.1), message="subscribed")  # the confirmation
    assert first.stop() == 0
    restarted = time.time()
    second = start_alerter(services, redis_server, rules)

    def evaluated_past(moment: float) -> bool:
        status = second.json("/api/alerts")
        return (status.get("evaluated_at") or status["time"]) > moment

    # Past the first ticks and a whole silent_for more: when the old alerter resolved it and fired it again.
    eventually(lambda: evaluated_past(restarted + 2.5), message="the second alerter evaluated for 2.5 s")
    assert second.json("/api/alerts")["rules"][0]["state"] == "firing"
    heard = []
    while message := listener.get_message(timeout=0.2):
        heard.append(json.loads(message["data"]))
    assert [(m["status"], m["startsAt"]) for m in heard] == [], "nothing changed: never resolved in between"
    (raw,) = client.hgetall(alerts.key("alerts")).values()
    assert json.loads(raw)["startsAt"] == before["startsAt"]
    listener.close()
    client.close()


def test_a_rule_that_fires_before_the_first_sync_keeps_the_start_the_last_run_left_and_is_never_resolved(
    redis_server, rules_file
):
    # In process, to order the two for certain: the rule fires, then the sender reads what the last run left.
    rules = rules_file(HIGH_RULES.format(for_="0s"))
    settings = from_env(AlerterSettings, {"ALERT_RULES": str(rules), "REDIS_URL": redis_server.url})
    service = AlerterService(settings, Metrics())
    (rule,) = service.evaluator.rules
    left = alerts.build(
        "firing", rule.alert, rule.labels, {"summary": "value above 95"}, "2026-01-01T00:00:00.000Z", None, "stream"
    )
    client = redis_server.client()
    client.hset(alerts.key("alerts"), left["fingerprint"], alerts.encode(left))
    listener = client.pubsub()
    listener.subscribe("alerts")
    eventually(lambda: listener.get_message(timeout=0.1), message="subscribed")
    service._values([envelope(1, value=99.0).encode()])  # fires: a change queued before the first sync
    sender = threading.Thread(target=service.broadcaster.run)
    sender.start()
    try:
        eventually(lambda: service.broadcaster.synced and not len(service.broadcaster.backlog), message="delivered")
        heard = []
        while message := listener.get_message(timeout=0.2):
            heard.append(json.loads(message["data"]))
        # The set holds it already, as the last run left it: neither resolved nor published again (a replica
        # beside it may have written it; broadcast._already).
        assert heard == [], "never resolved"
        (raw,) = client.hgetall(alerts.key("alerts")).values()
        assert json.loads(raw)["startsAt"] == "2026-01-01T00:00:00.000Z"
    finally:
        service.broadcaster.stopping.set()
        sender.join(5)
        listener.close()
        client.close()


def test_in_threading_mode_concurrent_webhooks_reloads_and_values_leave_one_consistent_set(
    redis_server, services, rules_file
):
    path = rules_file(HIGH_RULES.format(for_="0s"))
    alerter = start_alerter(services, redis_server, path, ASYNC_MODE="threading")
    echo = webhook_alert("NumcastValueHigh", severity="warning")  # our own alert, as Alertmanager routes it back
    payload = webhook_payload(echo, webhook_alert("NumcastDiskFull"))
    statuses: list[int] = []
    done = threading.Event()

    def webhooks():
        while not done.is_set():
            statuses.append(http("POST", alerter.url + "/api/alertmanager", payload)[0])

    def values():
        client = redis_server.client()
        seq = 0
        while not done.is_set():
            seq += 1
            client.publish("numbers", envelope(seq, value=99.0 if seq % 2 else 10.0))
        client.close()

    def reloads():
        n = 0
        while not done.is_set():
            n += 1
            path.write_text(HIGH_RULES.format(for_="0s").replace("value above 95", f"version {n}"))
            alerter.signal(signal.SIGHUP)
            eventually(lambda n=n: f"version {n}" in json.dumps(alerter.json("/api/alerts")["rules"]))

    workers = [threading.Thread(target=work) for work in (webhooks, webhooks, values, reloads)]
    for worker_thread in workers:
        worker_thread.start()
    eventually(lambda: len(statuses) >= 400, timeout=60, message="400 webhook calls amid values and reloads")
    done.set()
    for worker_thread in workers:
        worker_thread.join()
    assert set(statuses) == {200}, f"answers: {sorted(set(statuses))}"

    publish(redis_server, envelope(10**6, value=99.0))
    eventually(lambda: alerter.json("/api/alerts")["rules"][0]["state"] == "firing")
    client = redis_server.client()

    def held():
        return {json.loads(raw)["alertname"]: json.loads(raw)["origin"] for raw in client.hvals(alerts.key("alerts"))}

    eventually(lambda: held() == {"NumcastValueHigh": "stream", "NumcastDiskFull": "alertmanager"}, message=held)
    assert "async_mode=threading" in alerter.logs()
    client.close()


class WebhookReceiver:
    """An HTTP server on a free port that keeps every notification posted to it, as a receiver would."""

    def __init__(self) -> None:
        self.payloads: list[dict] = []
        received = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def firing(self, alertname: str) -> list[dict]:
        """The notifications that told `alertname` was firing."""
        return [p for p in self.payloads for a in p["alerts"] if a["labels"]["alertname"] == alertname and
                a["status"] == "firing"]  # fmt: skip

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def am_metric(manager, name: str) -> float:
    """The sum of every sample of `name` in an Alertmanager's /metrics."""
    with urllib.request.urlopen(manager.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((name + " ", name + "{")))


def test_two_clustered_alertmanagers_each_get_every_alert_and_the_receiver_one_notification(
    redis_server, services, alertmanager, rules_file
):
    receiver = WebhookReceiver()
    config = webhook_alertmanager(receiver.url)
    ports = free_port(), free_port()
    first = alertmanager(config, cluster_port=ports[0], peers=(ports[1],))
    second = alertmanager(config, cluster_port=ports[1], peers=(ports[0],))
    for manager in (first, second):
        eventually(lambda manager=manager: am_metric(manager, "alertmanager_cluster_members") == 2, timeout=20)
    alerter = start_alerter(
        services, redis_server, rules_file(HIGH_RULES.format(for_="0s")),
        ALERTMANAGER_URLS=f"{first.url},{second.url}", ALERTMANAGER_BACKOFF_MAX_SECONDS="0.5",
    )  # fmt: skip
    try:
        publish(redis_server, envelope(1, value=99.0))
        for manager in (first, second):  # Alertmanagers share no alerts: the alerter sends to each
            eventually(lambda manager=manager: "NumcastValueHigh" in names(manager.alerts()), message=manager.url)
            assert alerter.metric("numcast_alertmanager_sent_total", f'url="{manager.url}"') >= 1
        eventually(lambda: receiver.firing("NumcastValueHigh"), timeout=20, message="notified")
        # Both replicas have flushed the group (one notified, one found it in the gossiped log and skipped it).
        eventually(lambda: all(am_metric(m, "alertmanager_nflog_queries_total") >= 1 for m in (first, second)))
        eventually(lambda: sum(am_metric(m, "alertmanager_notifications_total") for m in (first, second)) >= 1)
        assert len(receiver.firing("NumcastValueHigh")) == 1, "one notification, not one per replica"

        second.kill()  # one Alertmanager down: the other still gets every change at once
        publish(redis_server, envelope(2, value=10.0))
        eventually(lambda: "NumcastValueHigh" not in names(first.alerts()), message="resolved in the first")

        def waiting_for_second():
            (down,) = [a for a in alerter.json("/api/alerts")["alertmanagers"] if a["url"] == second.url]
            return down["connected"] is False and down["queued"] == 1

        eventually(waiting_for_second, message="the change waits for the second alone")
        second.start()
        eventually(lambda: alerter.json("/api/alerts")["alertmanagers"][1]["queued"] == 0, message="delivered")
    finally:
        receiver.close()
