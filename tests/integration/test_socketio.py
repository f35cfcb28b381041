"""Browsers' side of the worker, spoken by a real Socket.IO client over a real WebSocket."""

import asyncio
import time

import pytest
import socketio
from conftest import envelope, eventually, publish, socketio_client
from raw_browsers import open_browsers, stalled_browser


class Browser:
    """A Socket.IO client that records what the worker pushes."""

    def __init__(self, url: str, origin: str | None = None):
        self.batches: list[list[dict]] = []
        self.statuses: list[dict] = []
        self.client = socketio_client(reconnection=False, websocket_extra_options={"origin": origin or url})
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
    assert len(browser.batches) <= 100, "batched: at most half as many events as values, not one per value"
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


def rss_mib(pid):
    """Resident memory of `pid` in MiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def test_a_browser_that_stops_reading_loses_values_alone_counted_and_costs_no_memory(redis_server, services):
    """A raw socket with a 4 KB receive buffer joins, then never reads: the worker's send to it really blocks."""
    worker = services("worker", redis_server.url, wait="/readyz")
    count = 50_000

    def flood():
        client = redis_server.client()
        for start in range(1, count + 1, 1000):
            pipe = client.pipeline(transaction=False)
            for seq in range(start, start + 1000):
                pipe.publish("numbers", envelope(seq, source="flood-1"))
            pipe.execute()
            time.sleep(0.1)  # at most 10,000 values/s: a flood the reader and the worker keep up with, even loaded
        client.close()

    async def scenario():
        [reader] = await open_browsers(worker.port, 1)
        stalled = await asyncio.to_thread(stalled_browser, worker.port)
        await asyncio.to_thread(eventually, lambda: worker.json("/api/status")["clients"] == 2)
        rss = [rss_mib(worker.process.pid)]
        publishing = asyncio.create_task(asyncio.to_thread(flood))
        deadline = time.monotonic() + 60
        while (len(reader.values) < count or not publishing.done()) and time.monotonic() < deadline:
            if any(event == "dropped" for event, _ in reader.events):
                break
            rss.append(rss_mib(worker.process.pid))
            await asyncio.sleep(0.1)
        await publishing
        rss.append(rss_mib(worker.process.pid))
        stalled.close()
        reader.transport.close()
        return reader, rss

    reader, rss = asyncio.run(scenario())
    assert reader.seqs() == list(range(1, count + 1)), "the browser that reads is unaffected"
    assert not [data for event, data in reader.events if event == "dropped"]
    assert max(rss) - rss[0] < 8, f"worker RSS grew from {rss[0]:.1f} to {max(rss):.1f} MiB"
    dropped = worker.metric("numcast_dropped_total", 'path="browser"')
    assert 0 < dropped <= count, "what the stalled browser missed is counted"
