"""Many browsers on one worker, spoken to byte for byte: every value once and in order, in both async modes,
a cap on browsers that refuses cleanly, and no WebSocket compression."""

import asyncio
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import envelope, eventually, mirror, publish
from raw_browsers import open_browsers, upgrade_request


def redis_flood(redis_server, seqs, source="flood-1", pipeline=500):
    """PUBLISH envelopes `seqs` in pipelines, as a busy control-plane does."""
    client = redis_server.client()
    pipe = client.pipeline(transaction=False)
    for n, seq in enumerate(seqs, 1):
        pipe.publish("numbers", envelope(seq, source=source))
        if n % pipeline == 0:
            pipe.execute()
    pipe.execute()
    client.close()


def tcp_flood(worker, seqs, source="flood-1"):
    """The same envelopes over the TCP mirror, one per signed line."""
    connection = mirror(worker)
    for start in range(0, len(seqs), 500):
        connection.send([envelope(seq, source=source).encode() for seq in seqs[start : start + 500]])
    connection.close()


async def watch(worker, count, during, expected, timeout=60.0):
    """Connect `count` browsers, run `during` in a thread, and wait until each has `expected` values."""
    browsers = await open_browsers(worker.port, count)
    await asyncio.to_thread(eventually, lambda: worker.json("/api/status")["clients"] == count)
    await asyncio.to_thread(during)
    deadline = time.monotonic() + timeout
    while any(len(b.values) < expected for b in browsers) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # anything extra (a value twice) would arrive now
    for browser in browsers:
        browser.transport.close()
    return browsers


def test_200_browsers_each_get_every_value_once_in_order(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz")

    def publish_in_bursts():
        redis_flood(redis_server, range(1, 501), pipeline=5)  # faster than rounds: browsers at many cursors
        time.sleep(0.2)
        for seq in range(501, 1001, 50):
            redis_flood(redis_server, range(seq, seq + 50), pipeline=50)
            time.sleep(0.02)  # bursts and pauses: rounds of many values and rounds of few

    browsers = asyncio.run(watch(worker, 200, publish_in_bursts, expected=1000))
    for browser in browsers:
        assert browser.seqs() == list(range(1, 1001))
    assert worker.metric("numcast_dropped_total", 'path="browser"') == 0


def test_a_browser_that_pauses_mid_flood_gets_whole_frames_a_drop_notice_then_every_later_value(redis_server, services):
    """It stops reading with a 4 KB receive window while more arrives than the kernel's buffers hold, so the
    worker's writes to it stop part-way through a frame: the rest of that frame must go out before anything
    else once it reads again, and the browsers that read never wait for it."""
    worker = services("worker", redis_server.url, wait="/readyz")
    paused_for, after = 40_000, 2_000  # 40,000 values of 120 bytes: more than the socket buffers (4 MB at most)
    source = "s" * 64

    def flood(seqs):
        for start in range(seqs.start, seqs.stop, 1000):
            redis_flood(redis_server, range(start, min(start + 1000, seqs.stop)), source=source)
            time.sleep(0.1)  # at most 10,000 values/s: the readers keep up, even on a loaded machine

    async def until(condition, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.05)

    async def scenario():
        readers = await open_browsers(worker.port, 2)
        [paused] = await open_browsers(worker.port, 1, rcvbuf=4096)
        await asyncio.to_thread(eventually, lambda: worker.json("/api/status")["clients"] == 3)
        paused.transport.pause_reading()
        await asyncio.to_thread(flood, range(1, paused_for + 1))
        await until(lambda: all(len(b.values) == paused_for for b in readers))  # none waited for the paused one
        paused.transport.resume_reading()
        await asyncio.to_thread(flood, range(paused_for + 1, paused_for + after + 1))
        last = paused_for + after
        await until(lambda: all(len(b.values) == last for b in readers) and paused.seqs()[-1:] == [last])
        await asyncio.sleep(0.3)  # anything extra would arrive now
        for browser in [*readers, paused]:
            browser.transport.close()
        return readers, paused

    readers, paused = asyncio.run(scenario())
    for reader in readers:
        assert reader.seqs() == list(range(1, paused_for + after + 1))
    expected, told = 1, 0  # each value in order; where some are missing, a `dropped` event for exactly those
    for event, data in paused.events:
        if event == "dropped":
            expected, told = expected + data["count"], told + data["count"]
        elif event == "numbers":
            assert [value["seq"] for value in data] == list(range(expected, expected + len(data)))
            expected += len(data)
    assert expected == paused_for + after + 1
    assert told > 0, "it fell behind the ring and was told"
    assert worker.metric("numcast_dropped_total", 'path="browser"') == told


@pytest.mark.parametrize("mode", ["threading", "eventlet"])
def test_under_load_from_both_paths_every_browser_gets_each_value_once(redis_server, services, mode):
    """Values pushed by the subscriber and the TCP threads while the fan-out thread sends: nothing lost or repeated."""
    worker = services("worker", redis_server.url, wait="/readyz", ASYNC_MODE=mode, CLIENT_QUEUE="100000")
    seqs = list(range(1, 20_001))

    def both_paths():
        tcp = threading.Thread(target=tcp_flood, args=(worker, seqs))
        tcp.start()
        redis_flood(redis_server, seqs)
        tcp.join(30)

    # Four browsers: the fan-out thread's work per round is one frame for all, so more readers add only
    # parsing in this process (test_200_browsers covers many browsers).
    browsers = asyncio.run(watch(worker, 4, both_paths, expected=len(seqs)))
    for browser in browsers:
        assert browser.seqs() == seqs
        assert not [data for event, data in browser.events if event == "dropped"]
    status = worker.json("/api/status")["counters"]
    assert status["accepted"]["redis"] + status["accepted"]["tcp"] == len(seqs)
    assert status["duplicates"] == len(seqs), "each value came by both paths and was kept once"
    assert worker.metric("numcast_dropped_total", 'path="browser"') == 0


def upgrade(port, deflate=False):
    """Open a WebSocket to /socket.io/ as a browser would; return the status line and headers, and the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(upgrade_request(port, deflate)[0])
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return head.split(b"\r\n\r\n", 1)[0].decode(), sock


def opens(port):
    """True if a WebSocket to /socket.io/ is accepted now (and closed again)."""
    head, sock = upgrade(port)
    sock.close()
    return head.startswith("HTTP/1.1 101")


@pytest.mark.parametrize("mode", ["eventlet", "threading"])
def test_browsers_over_max_browsers_are_refused_counted_and_the_worker_still_answers(redis_server, services, mode):
    worker = services("worker", redis_server.url, wait="/readyz", MAX_BROWSERS="3", ASYNC_MODE=mode)
    held = [upgrade(worker.port) for _ in range(3)]
    assert all(head.startswith("HTTP/1.1 101") for head, _ in held)
    refused, sock = upgrade(worker.port)
    sock.close()
    assert refused.startswith("HTTP/1.1 503"), refused
    assert worker.metric("numcast_browsers_refused_total") == 1
    assert worker.get("/healthz")[0] == 200, "probes still answered with every browser slot taken"
    held.pop()[1].close()
    eventually(lambda: opens(worker.port), message="a slot frees when a browser leaves")
    for _, sock in held:
        sock.close()
    assert "browser refused active=3 limit=3" in worker.logs()


def test_long_polling_sessions_are_refused_counted_and_take_no_browser_place(redis_server, services):
    # The page connects over WebSocket only; a long-polling client (python-socketio's default) would be a
    # browser no limit counted. 40 sessions opened together against 16 places.
    worker = services("worker", redis_server.url, wait="/readyz", MAX_BROWSERS="16")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: worker.get("/socket.io/?EIO=4&transport=polling"), range(40)))
    assert [status for status, _ in answers] == [400] * 40, answers[:3]
    assert all("WebSocket only" in body["error"] for _, body in answers)
    assert worker.metric("numcast_socketio_refused_total", 'layer="transport"') == 40
    assert "socket.io input refused layer=transport reason=not_websocket" in worker.logs()
    held = [upgrade(worker.port) for _ in range(16)]
    assert all(head.startswith("HTTP/1.1 101") for head, _ in held), "every place is still a browser's"
    for _, sock in held:
        sock.close()
    assert worker.metric("numcast_browsers_refused_total") == 0


def test_websocket_compression_is_declined(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz")
    head, sock = upgrade(worker.port, deflate=True)
    sock.close()
    assert head.startswith("HTTP/1.1 101"), head
    assert "sec-websocket-extensions" not in head.lower(), head


def test_an_envelope_reaches_a_browser_unchanged(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz")
    sent = envelope(7, value=-1.25, source="exact-1")

    async def scenario():
        [browser] = await open_browsers(worker.port, 1)
        await asyncio.to_thread(publish, redis_server, sent)
        while not browser.values:
            await asyncio.sleep(0.05)
        browser.transport.close()
        return browser

    browser = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert browser.values == [json.loads(sent)]
    assert "status" in [event for event, _ in browser.events], "the status, on connect"
