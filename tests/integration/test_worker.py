"""The worker against a real Redis and real sockets: what it accepts, rejects, stores and serves."""

import json
import socket
import time
import urllib.request

import pytest
from conftest import envelope, eventually, mirror, publish

GRACE = 0.5  # SEQ_GRACE_SECONDS where a test waits for gaps


@pytest.fixture
def worker(redis_server, services):
    return services("worker", redis_server.url, wait="/readyz")


@pytest.fixture(scope="module")
def shared_worker(module_redis, module_services):
    """One worker for the tables of bad input: each case sends its own source, and compares counters before/after."""
    return module_services("worker", module_redis.url, wait="/readyz")


def sources(worker) -> list[tuple[str, int]]:
    """(source, seq) of every envelope in the worker's history."""
    return [(e["source"], e["seq"]) for e in history(worker)]


def history(worker, limit=None):
    return worker.json("/api/history" + (f"?limit={limit}" if limit else ""))["envelopes"]


def test_values_reach_history_sink_and_metrics(redis_server, worker):
    publish(redis_server, '{ "source": "test-1", "ts": 1764150000.5, "value": 1.5e0, "seq": 1 }')
    publish(redis_server, *(envelope(n, value=n * 1.5) for n in range(2, 6)))
    eventually(lambda: len(history(worker)) == 5, message="5 values in history")
    assert [(e["seq"], e["value"]) for e in history(worker)] == [(n, n * 1.5) for n in range(1, 6)]
    assert [e["seq"] for e in history(worker, limit=2)] == [4, 5]
    assert worker.metric("numcast_accepted_total", 'path="redis"') == 5
    assert worker.metric("numcast_latency_seconds_count") == 5
    worker.stop()  # the sink is flushed at shutdown
    with open(worker.env["SINK_FILE"]) as sink:
        lines = sink.read().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5]
    assert lines[0] == '{"seq":1,"value":1.5,"ts":1764150000.5,"source":"test-1"}', "the canonical encoding"


BAD_MESSAGES = [
    ("not json at all", "not_json"),
    ('{"seq": 1, "value": 1}', "bad_fields"),
    ('"just a string"', "not_object"),
    ('{"seq": 1, "value": "42", "ts": 1, "source": "x"}', "bad_type"),
    ('{"seq": 1, "value": true, "ts": 1, "source": "x"}', "bad_type"),
    ('{"seq": 1, "value": NaN, "ts": 1, "source": "x"}', "not_finite"),
    ('{"seq": 1, "value": 1, "ts": 1, "source": "<script>alert(1)</script>"}', "bad_source"),
    ("x" * 1_000_000, "too_large"),
    (b"\x00\xff\xfe binary", "not_utf8"),
    ('{"seq": 9, "value": 1.0, "ts": 1, "source": "dup", "value": 99999}', "duplicate_key"),
    ("[" * 1000, "not_json"),  # under the 1 KiB limit: Python's decoder would raise RecursionError
]


@pytest.mark.parametrize(
    ("message", "reason"),
    BAD_MESSAGES,
    ids=[f"{n}-{reason}" for n, (_, reason) in enumerate(BAD_MESSAGES)],
)
def test_bad_messages_are_rejected_counted_and_never_shown(module_redis, shared_worker, message, reason, request):
    worker, source = shared_worker, f"bad-{request.node.callspec.id}"
    before, rejected = sources(worker), worker.metric("numcast_rejected_total", f'path="redis",reason="{reason}"')
    publish(module_redis, message, envelope(1, source=source))
    eventually(lambda: len(sources(worker)) > len(before), message="the valid envelope after the bad one")
    assert sources(worker) == [*before, (source, 1)]
    assert worker.metric("numcast_rejected_total", f'path="redis",reason="{reason}"') == rejected + 1
    assert worker.json("/healthz") == {"status": "ok"}


# `²` (an int() that fails) answered 500, and `٣` (Arabic-Indic three) was read as 3: ASCII digits only.
@pytest.mark.parametrize(
    "limit", ["0", "-1", "abc", "1001", "1e3", "", "%C2%B2", "%D9%A3", pytest.param("9" * 5000, id="5000-digits")]
)
def test_history_limit_is_validated(shared_worker, limit):
    status, body = shared_worker.get(f"/api/history?limit={limit}")
    assert status == 400
    assert "limit" in body["error"]


def tcp_send(port: int, data: bytes) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn.sendall(data)
    return conn


def closed_by_peer(conn: socket.socket) -> bool:
    """True once the worker has closed `conn`; what it sent before (its challenge) is skipped."""
    try:
        while data := conn.recv(4096):
            assert data.startswith(b"numcast-mirror/1 "), data
        return True
    except ConnectionResetError:
        return True


def test_tcp_mirror_lines_are_treated_like_redis_messages(redis_server, worker):
    conn = mirror(worker)
    conn.send([envelope(1).encode(), envelope(2).encode()])
    eventually(lambda: len(history(worker)) == 2)
    publish(redis_server, envelope(2), envelope(3))  # 2 again, by the other path
    eventually(lambda: len(history(worker)) == 3)
    assert [e["seq"] for e in history(worker)] == [1, 2, 3]
    assert worker.metric("numcast_duplicates_total") == 1
    assert worker.metric("numcast_accepted_total", 'path="tcp"') == 2
    conn.close()


@pytest.mark.parametrize(
    ("junk", "reason", "closed"),
    [
        (b"\x00\x01\x02\xff" * 100, "not_utf8", "invalid"),
        (b"not json", "not_json", "invalid"),
        (b"[" * 1000, "not_json", "invalid"),  # under the 1 KiB limit: Python's decoder would raise RecursionError
        (None, "", "too_long"),
    ],
    ids=["binary", "not json", "deep json", "endless line"],
)
def test_junk_on_the_tcp_port_closes_that_connection_only(shared_worker, junk, reason, closed, request):
    """Junk from a holder of the key (signed): rejected like a Redis message, and only that connection closed."""
    worker, source = shared_worker, f"junk-{request.node.callspec.id.replace(' ', '-')}"
    before = worker.json("/api/status")["counters"]["rejected"]
    counted = worker.metric("numcast_rejected_total", f'path="tcp",reason="{reason}"')
    closes = worker.metric("numcast_tcp_closed_total", f'reason="{closed}"')
    good = mirror(worker)
    good.send([envelope(1, source=source).encode()])
    eventually(lambda: (source, 1) in sources(worker))
    bad = mirror(worker)
    if junk is None:
        bad.sock.sendall(b"x" * 200_000)  # no line end, ever
    else:
        bad.send([junk])
    assert closed_by_peer(bad.sock)
    good.send([envelope(2, source=source).encode()])
    eventually(lambda: (source, 2) in sources(worker), message="the good connection still works")
    assert worker.metric("numcast_tcp_closed_total", f'reason="{closed}"') == closes + 1
    after = worker.json("/api/status")["counters"]["rejected"]
    if reason:
        assert worker.metric("numcast_rejected_total", f'path="tcp",reason="{reason}"') == counted + 1
        assert after == {**before, "tcp": before.get("tcp", 0) + 1}, "and nothing else rejected"
    else:
        assert after == before, "a line never finished is no message"
    good.close()


def test_tcp_connections_beyond_the_limit_take_the_slot_of_an_idle_one(redis_server, services):
    worker = services("worker", redis_server.url, MAX_TCP_CLIENTS="2")
    port = int(worker.env["TCP_PORT"])
    first, second = tcp_send(port, b""), tcp_send(port, b"")
    eventually(lambda: worker.json("/api/status")["tcp"]["connections"] == 2)
    third = mirror(worker)
    third.send([envelope(1).encode()])
    assert closed_by_peer(first), "the oldest one that sent nothing gave up its slot"
    eventually(lambda: [e["seq"] for e in history(worker)] == [1], message="the newcomer is served")
    assert worker.metric("numcast_tcp_closed_total", 'reason="evicted"') == 1
    assert worker.json("/api/status")["tcp"]["connections"] == 2
    for conn in (first, second, third):
        conn.close()


def counters(worker) -> dict:
    return worker.json("/api/status")["counters"]


def test_a_new_control_plane_run_is_neither_a_gap_nor_a_duplicate(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz", SEQ_GRACE_SECONDS=str(GRACE))
    publish(redis_server, *(envelope(n, source="control-aaaaaa") for n in range(1, 4)))
    publish(redis_server, *(envelope(n, source="control-bbbbbb") for n in range(1, 4)))
    eventually(lambda: len(history(worker)) == 6)
    assert counters(worker)["pending"] == 0, "no seq is awaited: nothing can become a gap"
    assert (counters(worker)["gaps"], counters(worker)["duplicates"]) == (0, 0)


def test_a_lost_value_is_a_gap(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz", SEQ_GRACE_SECONDS=str(GRACE))
    publish(redis_server, envelope(1), envelope(2), envelope(5))
    eventually(lambda: len(history(worker)) == 3)
    began = time.monotonic()
    eventually(lambda: counters(worker)["gaps"] == 2, message="3 and 4 given up after the grace period")
    assert time.monotonic() - began >= GRACE / 2, "awaited first, not counted at once"
    assert counters(worker)["pending"] == 0


def test_pages_carry_a_strict_content_security_policy(worker):
    with urllib.request.urlopen(worker.url + "/") as response:
        csp = response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    assert "cdn" not in page.lower()
    assert worker.get("/static/vendor/socket.io.esm.min.js")[0] == 200, "the client library is served locally"
