"""Prometheus and Alertmanager beside the pipeline, real servers configured from the files infra/monitoring ships."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import NUMCAST, eventually, http
from needs import missing

from numcast import monitoring
from numcast.local import free_port

CONFIG = Path(__file__).resolve().parents[2] / "infra" / "monitoring" / "config"
HOLD = "3s"  # every alert's `for:` in the live tests


@pytest.fixture
def servers_on_path():
    """Prometheus and Alertmanager must be installed: a failure in CI, a skip with the apt hint elsewhere."""
    if len(monitoring.binaries()) < 2:
        missing(f"Prometheus and Alertmanager not found: {monitoring.INSTALL_HINT}")


def shipped(config: Path = CONFIG) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in config.iterdir()}


def quick_copy(tmp_path: Path) -> Path:
    """The shipped configuration, copied with every scrape, evaluation and grouping interval at 1 s.

    What `numcast up --monitoring` does with the files is under test here, not the intervals (tests/k8s checks them).
    """
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    for name, section, keys in [
        ("prometheus.yml", "global", ("scrape_interval", "scrape_timeout", "evaluation_interval")),
        ("alertmanager.yml", "route", ("group_wait", "group_interval")),
    ]:
        content = yaml.safe_load((config / name).read_text())
        content[section].update(dict.fromkeys(keys, "1s"))
        (config / name).write_text(yaml.safe_dump(content, sort_keys=False))
    return config


def metric(url: str, sample: str) -> float:
    """The value of one sample in `url`/metrics (0 when absent)."""
    for line in http("GET", url + "/metrics")[1].splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def banner_url(output: str, what: str) -> str:
    (line,) = [line for line in output.splitlines() if line.strip().startswith(what + " ")]
    return line.split()[-1].rstrip("/")


def test_up_with_monitoring_scrapes_every_process_with_the_shipped_rules(tmp_path, servers_on_path):
    config = quick_copy(tmp_path)
    before = shipped(config)
    control, worker, tcp = free_port(), free_port(), free_port()
    ports = ["--control-port", str(control), "--worker-port", str(worker), "--tcp-port", str(tcp), "--workers", "1"]
    options = ["--data-dir", str(tmp_path / "data"), "--monitoring", "--monitoring-config", str(config)]
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen(
            [NUMCAST, "up", *ports, *options],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        eventually(lambda: "numcast is up" in log.read_text(), timeout=60, message="the banner")
        output = log.read_text()
        prometheus = banner_url(output, "prometheus").removesuffix("/alerts")
        alertmanager = banner_url(output, "alertmanager")

        def targets():
            active = http("GET", prometheus + "/api/v1/targets")[1]["data"]["activeTargets"]
            return active if active and all(t["health"] == "up" for t in active) else None

        active = eventually(targets, timeout=60)
        # The job numcast-pushed scrapes the control-plane's pushed series (docs/push.md), with no labels of its own.
        pushed = [t for t in active if t["labels"]["job"] == "numcast-pushed"]
        assert [t["scrapeUrl"] for t in pushed] == [f"http://127.0.0.1:{control}/api/push/metrics"]
        assert [t["honorLabels"] for t in pushed if "honorLabels" in t] in ([], [True])
        active = [t for t in active if t not in pushed]
        labels = sorted((t["labels"] for t in active), key=lambda labels: labels["pod"])
        assert [(t["component"], t["pod"], t.get("worker")) for t in labels] == [
            ("alerter", "alerter", None),
            ("control-plane", "control-plane", None),
            ("worker", "machine-1", "machine-1"),
        ]
        assert {t["job"] for t in labels} == {"numcast"}
        groups = http("GET", prometheus + "/api/v1/rules")[1]["data"]["groups"]
        rules = [rule["name"] for group in groups for rule in group["rules"]]
        assert "NumcastWorkerDown" in rules and len(rules) == len(set(rules)) >= 10
        sent_to = http("GET", prometheus + "/api/v1/alertmanagers")[1]["data"]["activeAlertmanagers"]
        assert [a["url"] for a in sent_to] == [alertmanager + "/api/v2/alerts"]
        status, body = http("GET", alertmanager + "/api/v2/status")
        alerter = banner_url(output, "alerter").removesuffix("/api/alerts")
        alerter_admin = banner_url(output, "metrics of alerter").removesuffix("/metrics")  # ADMIN_PORT
        assert status == 200 and f"url: {alerter}/api/alertmanager" in body["config"]["original"]
        assert "send_resolved: true" in body["config"]["original"]
        # The alerter's token, new for this run, reaches Alertmanager as a file beside its configuration.
        (credentials,) = re.findall(r"credentials_file: (\S+)", body["config"]["original"])
        assert credentials.endswith("/alerter-token") and os.path.isfile(credentials), "a file beside its config"
        assert http("GET", alerter + "/api/alerts")[1]["auth"] == "token"
        alert = json.dumps([{"labels": {"alertname": "ByHand"}}]).encode()
        assert http("POST", alertmanager + "/api/v2/alerts", alert, {"Content-Type": "application/json"})[0] == 200
        # ... and Alertmanager calls the webhook with it.
        eventually(lambda: metric(alerter_admin, 'numcast_received_total{path="webhook"}') >= 1, timeout=30)
        assert metric(alerter_admin, 'numcast_auth_refused_total{reason="missing"}') == 0
        assert metric(alerter_admin, 'numcast_auth_refused_total{reason="wrong"}') == 0
        # The alerter sends its stream alerts to the same Alertmanager.
        (sending,) = http("GET", alerter + "/api/alerts")[1]["alertmanagers"]
        assert sending["url"] == alertmanager
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, log.read_text()
    output = log.read_text()
    assert "stopped prometheus (exit code 0)" in output and "stopped alertmanager (exit code 0)" in output
    assert shipped(config) == before, "the configuration files are read, never written"


def test_up_with_monitoring_says_how_to_get_the_servers(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # neither server on it
    result = subprocess.run(
        [NUMCAST, "up", "--monitoring", "--monitoring-config", str(CONFIG)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "apt-get install prometheus prometheus-alertmanager" in result.stderr
    assert "numcast is up" not in result.stdout, "nothing starts"


def test_up_with_monitoring_needs_the_shipped_files(tmp_path, servers_on_path):
    result = subprocess.run(
        [NUMCAST, "up", "--monitoring"], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "infra/monitoring/config/prometheus.yml" in result.stderr and "--monitoring-config" in result.stderr


def in_prometheus(url: str, alertname: str, state: str) -> list[dict]:
    alerts = http("GET", url + "/api/v1/alerts")[1]["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == state]


def firing_in_prometheus(url: str, alertname: str) -> list[dict]:
    return in_prometheus(url, alertname, "firing")


def pending_in_prometheus(url: str, alertname: str) -> list[dict]:
    return in_prometheus(url, alertname, "pending")


def active_in_alertmanager(url: str, alertname: str) -> list[dict]:
    alerts = http("GET", url + "/api/v2/alerts")[1]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["status"]["state"] == "active"]


def test_a_killed_worker_fires_in_prometheus_and_reaches_the_other_workers_browser_through_alertmanager(
    servers_on_path,
):
    from test_alerter import AlertsBrowser  # the alerter's tests' Socket.IO client for `alerts` events

    from numcast.local import service
    from numcast.stack import Stack

    stack = Stack(2, tokens=True)  # the alerter takes the webhook only with its token, from Alertmanager's file
    # The shipped rules and routes, with every scrape, evaluation and grouping interval at 1 s and every `for:` at
    # 3 s: the minute of the shipped rules is promtool's to prove (tests/k8s/numcast-alerts.test.yaml).
    watch = monitoring.for_stack(stack, CONFIG, intervals="1s", hold=HOLD)
    stack.alerter_env["ALERTMANAGER_URL"] = watch.alertmanager_url
    with stack:
        watch.start()
        try:
            prometheus, alertmanager = watch.prometheus_url, watch.alertmanager_url
            browser = AlertsBrowser(stack.worker_urls[1])

            def all_up():
                active = http("GET", prometheus + "/api/v1/targets")[1]["data"]["activeTargets"]
                # The control-plane, two workers, the alerter, and the control-plane's pushed series (numcast-pushed).
                return len(active) == 5 and all(t["health"] == "up" for t in active)

            eventually(all_up, timeout=60, message="every process scraped")
            name, process, port = next(entry for entry in stack.processes if entry[0] == "machine-1")
            process.kill()
            process.wait()

            # NumcastWorkerDown is pending for its `for:`, then fires in Prometheus...
            killed = time.monotonic()
            eventually(lambda: pending_in_prometheus(prometheus, "NumcastWorkerDown"), timeout=30)
            (fired,) = eventually(lambda: firing_in_prometheus(prometheus, "NumcastWorkerDown"), timeout=30)
            assert time.monotonic() - killed >= 3, "not before its `for:`"
            assert fired["labels"] == {"alertname": "NumcastWorkerDown", "severity": "critical", "worker": name}
            # ... reaches Alertmanager ...
            eventually(lambda: active_in_alertmanager(alertmanager, "NumcastWorkerDown"), timeout=30)
            # ... and through the alerter's webhook and the `alerts` channel, the other worker's browser.

            def shown():
                return [a for a in browser.active() if a["alertname"] == "NumcastWorkerDown"]

            (alert,) = eventually(shown, timeout=30, message="the alert in machine-2's browser")
            assert (alert["status"], alert["origin"]) == ("firing", "alertmanager")
            assert alert["labels"] == {"severity": "critical", "worker": name}
            assert alert["annotations"]["summary"] == f"Worker {name} is down"
            # An absolute link, to the docs beside the configuration; the base never became a label (above).
            assert alert["annotations"]["runbook_url"] == (CONFIG.parents[2] / "docs").as_uri() + (
                "/monitoring.md#numcastworkerdown"
            )

            # The worker comes back on its port: the alert resolves and leaves the browser's list.
            env = {"REDIS_URL": stack.redis_url, "HOST": "127.0.0.1", "WORKER_NAME": name, "PORT": str(port)}
            env["ADMIN_PORT"] = str(stack.admin_ports[name])  # where Prometheus scrapes it
            env |= {"TCP_PORT": str(stack.workers[0][2]), "SINK_FILE": f"{stack.data_dir}/{name}.jsonl"}
            stack.processes = [(n, service("worker", env) if n == name else p, h) for n, p, h in stack.processes]
            eventually(lambda: not shown(), timeout=60, message="the resolved alert leaves the list")
            assert not firing_in_prometheus(prometheus, "NumcastWorkerDown")
        finally:
            watch.stop()
