"""The control-plane against a real Redis: it publishes at the configured rate, and its API validates."""

import json
import os
import socket
import threading
import time

import pytest
from conftest import eventually, http, pause

from numcast import mirror_key
from numcast.envelope import decode


@pytest.fixture
def control(redis_server, services):
    return services("control", redis_server.url, RATE_HZ="20")


@pytest.fixture(scope="module")
def shared_control(module_redis, module_services):
    """One control-plane for the table of refused patches: each leaves the configuration as it found it."""
    return module_services("control", module_redis.url, RATE_HZ="20")


def collect(redis_server, seconds: float) -> list:
    """Every message on the channel for `seconds`, decoded."""
    pubsub = redis_server.client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("numbers")
    found, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message:
            found.append(decode(message["data"]))
    pubsub.close()
    return found


def test_publishes_valid_envelopes_at_the_configured_rate(redis_server, control):
    envelopes = collect(redis_server, 2.0)
    assert 34 <= len(envelopes) <= 46
    seqs = [e.seq for e in envelopes]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert all(0 <= e.value <= 100 and e.source == envelopes[0].source for e in envelopes)
    status = control.json("/api/status")
    assert status["config"] == {"rate_hz": 20.0, "min": 0.0, "max": 100.0, "paused": False}
    assert status["seq"] >= seqs[-1]
    assert control.metric("numcast_published_total", 'path="redis"') >= len(envelopes)


def test_patch_changes_rate_range_and_pause(redis_server, control):
    status, body = http("PATCH", control.url + "/api/config", {"rate_hz": 50, "min": 5, "max": 6})
    assert status == 200 and body["config"]["rate_hz"] == 50
    envelopes = collect(redis_server, 1.0)
    assert 40 <= len(envelopes) <= 60
    assert all(5 <= e.value <= 6 for e in envelopes)
    last = pause(control)
    assert collect(redis_server, 0.6) == [], "paused: nothing more is published"
    assert control.json("/api/status")["seq"] == last


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "JSON object"),
        (b"[]", 400, "JSON object"),
        (b'{"rate_hz": 0}', 400, "rate_hz"),
        (b'{"rate_hz": 1e9}', 400, "rate_hz"),
        (b'{"rate_hz": "10"}', 400, "must be a number"),
        (b'{"min": 50, "max": 10}', 400, "must be <= max"),
        (b'{"colour": "red"}', 400, "unknown setting"),
        (b'{"paused": 1}', 400, "true or false"),
        (b'{"rate_hz": NaN}', 400, "rate_hz"),
        (b"[" * 3000, 400, "not valid JSON"),
        (json.dumps({"rate_hz": 1, "pad": "x" * 10_000}).encode(), 413, ""),
    ],
    ids=lambda v: v.decode()[:30] if isinstance(v, bytes) else None,
)
def test_bad_patches_are_refused_and_change_nothing(shared_control, body, status, words):
    control = shared_control
    before = control.json("/api/status")["config"]
    code, answer = http("PATCH", control.url + "/api/config", body, {"Content-Type": "application/json"})
    assert code == status
    assert words in answer["error"]
    assert control.json("/api/status")["config"] == before


def test_unknown_routes_and_methods_answer_json(control):
    assert http("GET", control.url + "/api/nope")[0] == 404
    code, body = http("POST", control.url + "/api/config", {"rate_hz": 2})
    assert code == 405 and "error" in body


def test_tcp_mirror_sends_every_envelope_as_a_signed_line(redis_server, services, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    key_file = tmp_path / "mirror.key"
    key_file.write_text(mirror_key.new_key() + "\n")
    keys = mirror_key.MirrorKeys(str(key_file))
    received, counters = [], []

    def read():
        conn, _ = listener.accept()
        nonce = os.urandom(mirror_key.NONCE_BYTES)
        conn.sendall(mirror_key.greeting(nonce))  # the challenge, as a worker sends it
        buffer, counter = b"", 0
        while len(received) < 10:
            data = conn.recv(4096)
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                given, _, payload = line.partition(b" ")
                counters.append(keys.verify(nonce, counter, payload, given))
                counter += 1
                if payload:  # an empty payload is a heartbeat
                    received.append(decode(payload))
        conn.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    control = services(
        "control", redis_server.url, RATE_HZ="50", TCP_MIRROR_TARGETS=f"127.0.0.1:{port}", MIRROR_KEY_FILE=str(key_file)
    )
    reader.join(10)
    assert len(received) >= 10
    assert counters == [0] * len(counters), "each line signed with the key, bound to the challenge and its place"
    assert [e.seq for e in received] == list(range(received[0].seq, received[0].seq + len(received)))
    outputs = {o["path"]: o for o in control.json("/api/status")["outputs"]}
    assert outputs["tcp"]["name"] == f"127.0.0.1:{port}"
    listener.close()


def test_an_unreachable_mirror_target_does_not_slow_redis(redis_server, services):
    from numcast.local import free_port

    control = services("control", redis_server.url, RATE_HZ="100", TCP_MIRROR_TARGETS=f"127.0.0.1:{free_port()}")
    envelopes = collect(redis_server, 1.0)
    assert len(envelopes) >= 85
    tcp = next(o for o in control.json("/api/status")["outputs"] if o["path"] == "tcp")
    assert tcp["connected"] is False
    eventually(lambda: control.metric("numcast_publish_errors_total", 'path="tcp"') >= 2)


def test_a_full_mirror_queue_drops_the_oldest_and_counts(redis_server, services):
    from numcast.local import free_port

    control = services(
        "control", redis_server.url, RATE_HZ="200", MIRROR_QUEUE="50", TCP_MIRROR_TARGETS=f"127.0.0.1:{free_port()}"
    )
    eventually(lambda: control.metric("numcast_dropped_total", 'path="tcp"') > 50, timeout=5)
    tcp = next(o for o in control.json("/api/status")["outputs"] if o["path"] == "tcp")
    assert tcp["queued"] <= 50 and tcp["dropped"] > 50


def test_presence_lists_the_live_workers(redis_server, services):
    control = services("control", redis_server.url)
    one = services("worker", redis_server.url, wait="/readyz", WORKER_NAME="machine-1")
    services("worker", redis_server.url, wait="/readyz", WORKER_NAME="machine-2")

    def names():
        return [w["name"] for w in control.json("/api/workers")["workers"]]

    eventually(lambda: names() == ["machine-1", "machine-2"], message="both workers announce themselves")
    worker = control.json("/api/workers")["workers"][0]
    assert {"name", "host", "clients", "received", "last_seen"} <= set(worker)
    one.stop()
    eventually(lambda: names() == ["machine-2"], timeout=3, message="a stopped worker leaves at once")


def test_presence_of_a_killed_worker_expires(redis_server, services):
    control = services("control", redis_server.url)
    worker = services("worker", redis_server.url, wait="/readyz")
    eventually(lambda: control.json("/api/workers")["workers"])
    worker.process.kill()
    worker.process.wait()
    eventually(lambda: not control.json("/api/workers")["workers"], timeout=10, message="the key expires")
