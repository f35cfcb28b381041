"""Browsers' side of the worker, spoken by a real Socket.IO client over a real WebSocket."""

import threading
import time

import pytest
import socketio
from conftest import envelope, eventually, publish


class Browser:
    """A Socket.IO client that records what the worker pushes."""

    def __init__(self, url: str, origin: str | None = None):
        self.batches: list[list[dict]] = []
        self.statuses: list[dict] = []
        self.client = socketio.Client(reconnection=False, websocket_extra_options={"origin": origin or url})
        self.client.on("numbers", self.batches.append)
        self.client.on("status", self.statuses.append)
        self.client.connect(url, transports=["websocket"], wait_timeout=5)

    def values(self) -> list[dict]:
        return [e for batch in self.batches for e in batch]


@pytest.fixture
def worker(redis_server, services):
    return services("worker", redis_server.url, wait="/readyz", BATCH_MS="100")


def test_values_arrive_in_batches_in_seq_order(redis_server, worker):
    browser = Browser(worker.url)
    eventually(lambda: worker.json("/api/status")["clients"] == 1)
    publish(redis_server, *(envelope(n) for n in range(1, 201)))
    eventually(lambda: len(browser.values()) == 200)
    assert [e["seq"] for e in browser.values()] == list(range(1, 201))
    assert len(browser.batches) < 50, "batched, not one event per value"
    assert all(set(e) == {"seq", "value", "ts", "source"} for e in browser.values())
    eventually(lambda: browser.statuses, message="a status push")
    assert browser.statuses[-1]["name"] == worker.env["WORKER_NAME"]
    assert worker.metric("numcast_connected_clients") == 1
    browser.client.disconnect()
    eventually(lambda: worker.json("/api/status")["clients"] == 0)


def test_rejected_messages_never_reach_a_browser(redis_server, worker):
    browser = Browser(worker.url)
    eventually(lambda: worker.json("/api/status")["clients"] == 1)
    publish(redis_server, '{"seq": 1, "value": 1, "ts": 1, "source": "<img src=x onerror=alert(1)>"}', envelope(2))
    eventually(lambda: browser.values())
    assert [e["seq"] for e in browser.values()] == [2]


def test_another_origin_is_refused_unless_configured(redis_server, services):
    worker = services("worker", redis_server.url, CORS_ORIGINS="https://ops.example")
    with pytest.raises(socketio.exceptions.ConnectionError):
        Browser(worker.url, origin="https://evil.example")
    Browser(worker.url, origin="https://ops.example").client.disconnect()
    Browser(worker.url).client.disconnect()


def test_a_client_that_stops_reading_does_not_slow_the_others(redis_server, worker):
    fast = Browser(worker.url)
    stalled = Browser(worker.url)
    block = threading.Event()
    stalled.client.on("numbers", lambda batch: block.wait(30))  # its event thread stops taking batches
    eventually(lambda: worker.json("/api/status")["clients"] == 2)
    for start in range(1, 5001, 500):
        publish(redis_server, *(envelope(n) for n in range(start, start + 500)))
        time.sleep(0.2)  # 2,500 values/s: a browser that keeps up is never CLIENT_QUEUE behind
    eventually(lambda: len(fast.values()) == 5000, timeout=15, message=f"fast client got {len(fast.values())}")
    assert [e["seq"] for e in fast.values()] == list(range(1, 5001))
    block.set()
    fast.client.disconnect()
    stalled.client.disconnect()
