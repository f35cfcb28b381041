"""Pushed series stored by a real Prometheus, configured from the prometheus.yml infra/monitoring ships (its job
`numcast-pushed`, honor_labels: true), as `numcast up --monitoring` configures it."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest
from conftest import eventually, http

from numcast import monitoring

CONFIG = Path(__file__).resolve().parents[2] / "infra" / "monitoring" / "config"


@pytest.fixture
def prometheus(redis_server, services):
    """A control-plane, and the shipped Prometheus scraping it every second; (control, prometheus URL)."""
    if len(monitoring.binaries()) < 2:
        hint = f"Prometheus and Alertmanager not found: {monitoring.INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(hint)
        pytest.skip(hint)
    control = services("control", redis_server.url, wait="/readyz")
    target = monitoring.Target("control-plane", "control-plane", control.port)
    watch = monitoring.Monitoring([target], None, CONFIG, intervals="1s").start()
    try:
        yield control, watch.prometheus_url
    finally:
        watch.stop()


def query(url: str, promql: str) -> list[dict]:
    status, body = http("GET", f"{url}/api/v1/query?query={urllib.parse.quote(promql)}")
    assert status == 200, body
    return body["data"]["result"]


def test_prometheus_stores_a_pushed_series_with_the_pushed_job_and_forgets_a_deleted_group(prometheus):
    from prometheus_client import CollectorRegistry, Gauge
    from prometheus_client.exposition import delete_from_gateway, push_to_gateway

    control, url = prometheus
    registry = CollectorRegistry()
    Gauge("queue_depth", "Jobs waiting", ["queue"], registry=registry).labels("billing").set(4)
    push_to_gateway(control.url, job="nightly", registry=registry, grouping_key={"instance": "pod-7"})
    assert http("POST", control.url + "/api/push", {"samples": [{"series": "room_celsius", "value": 21.5}]})[0] == 200

    (stored,) = eventually(lambda: query(url, "queue_depth"), timeout=30, message="scraped and stored")
    assert stored["metric"] == {"__name__": "queue_depth", "job": "nightly", "instance": "pod-7", "queue": "billing"}
    assert stored["value"][1] == "4"
    (room,) = eventually(lambda: query(url, "room_celsius"), timeout=30)
    assert room["metric"]["job"] == "numcast-pushed", "no job pushed: the scrape's own"
    assert room["value"][1] == "21.5"
    (pushed_at,) = query(url, 'push_time_seconds{job="nightly"}')
    assert pushed_at["metric"]["instance"] == "pod-7"

    delete_from_gateway(control.url, job="nightly", grouping_key={"instance": "pod-7"})
    eventually(lambda: query(url, "queue_depth") == [], timeout=30, message="stale once the group is deleted")
    assert query(url, "room_celsius"), "another group stays"
