"""`numcast relay` as a user runs it: a real exporter (prometheus_client's HTTP server) scraped on a schedule, what
matches pushed to a real control-plane, live on the stream; it survives failures and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from conftest import NUMCAST, eventually, http

from numcast.local import free_port

TOKEN = "relay-push-token-0123456789"


@pytest.fixture
def exporter():
    """An exporter on a free port: two gauges of its own and one that --match leaves out."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    gauges = {
        name: Gauge(name, name, ["disk"], registry=registry) for name in ("node_load1", "node_free_bytes", "other")
    }
    for gauge in gauges.values():
        gauge.labels("sda").set(1)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield f"http://127.0.0.1:{port}/metrics", gauges
    server.shutdown()
    thread.join(5)


def relay(tmp_path, *args: str, token: str = TOKEN) -> subprocess.Popen:
    log = open(tmp_path / "relay.log", "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        [NUMCAST, "relay", *args], env={**os.environ, "PUSH_TOKEN": token}, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    return process


def exposition(control) -> dict[str, float]:
    text = http("GET", control.url + "/api/push/metrics")[1]
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[0] != "#"}


def test_the_relay_pushes_what_matches_on_schedule_and_stops_on_sigterm(redis_server, services, exporter, tmp_path):
    url, gauges = exporter
    control = services("control", redis_server.url, wait="/readyz", PUSH_TOKEN=TOKEN)
    health = free_port()
    args = ["--scrape", url, "--every", "200ms", "--match", "node_.*", "--to", control.url, "--instance", "node-a"]
    process = relay(tmp_path, *args, "--health-port", str(health))
    try:
        load = 'node_load1{disk="sda",instance="node-a",job="relay"}'
        eventually(lambda: exposition(control).get(load) == 1.0, message="the relay's first push")
        assert not [key for key in exposition(control) if key.startswith("other")], "--match leaves it out"
        gauges["node_load1"].labels("sda").set(7.5)
        eventually(lambda: exposition(control).get(load) == 7.5, message="the next ticks follow the exporter")
        seq = control.json("/api/status")["push"]["seq"]
        eventually(lambda: control.json("/api/status")["push"]["seq"] >= seq + 4, message="a push every 200 ms")
        assert http("GET", f"http://127.0.0.1:{health}/readyz")[0] == 200
        assert http("GET", f"http://127.0.0.1:{health}/healthz")[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "relay stopped" in (tmp_path / "relay.log").read_text()


def test_a_relay_that_is_refused_or_cannot_scrape_logs_it_and_keeps_trying(redis_server, services, tmp_path):
    control = services("control", redis_server.url, wait="/readyz", PUSH_TOKEN=TOKEN)
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    health = free_port()
    args = [
        "--scrape",
        control.admin_url + "/metrics",
        "--every",
        "200ms",
        "--to",
        control.url,
        "--health-port",
        str(health),
    ]
    refused = relay(tmp_path, *args, token="not-the-push-token-0000")
    unreachable = relay(tmp_path, "--scrape", dead, "--every", "200ms", "--to", control.url)
    try:
        log = tmp_path / "relay.log"
        eventually(lambda: "push failed" in log.read_text() and "401" in log.read_text(), message="refused")
        eventually(lambda: "scrape failed" in log.read_text(), message="nothing to scrape")
        assert control.metric("numcast_push_refused_total", 'reason="wrong"') >= 1
        assert refused.poll() is None and unreachable.poll() is None, "both keep trying"
        assert http("GET", f"http://127.0.0.1:{health}/readyz")[0] == 503, "not ready: no push went through"
        assert http("GET", f"http://127.0.0.1:{health}/healthz")[0] == 200, "alive: it keeps ticking"
        assert control.json("/api/status")["push"]["seq"] == 0
    finally:
        for process in (refused, unreachable):
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--scrape", "http://x/metrics", "--every", "soon", "--to", "http://y"],
        ["--scrape", "http://x/metrics", "--every", "10ms", "--to", "http://y"],
        ["--scrape", "http://x/metrics", "--every", "1s", "--to", "http://y", "--match", "("],
        ["--scrape", "x", "--every", "1s", "--to", "http://y"],
        ["--every", "1s", "--to", "http://y"],
    ],
)
def test_bad_arguments_are_a_clear_error(args):
    done = subprocess.run([NUMCAST, "relay", *args], capture_output=True, text=True, timeout=20)
    assert done.returncode == 2 and "numcast relay: error:" in done.stderr
