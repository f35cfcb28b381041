"""The replay log: the control-plane adds every envelope it publishes to a Redis Stream, in the same step."""

import json
import time

import pytest
from conftest import eventually, http

RATE = "200"


def pause(control) -> int:
    """Stop generating; return the last seq generated."""
    assert http("PATCH", control.url + "/api/config", {"paused": True})[0] == 200
    time.sleep(0.2)  # a value being generated as the pause lands
    return control.json("/api/status")["seq"]


@pytest.fixture
def control(redis_server, services):
    """A control-plane at 200 values/s, started when the test says."""
    return lambda: services("control", redis_server.url, RATE_HZ=RATE, wait="/readyz")


def test_the_control_plane_logs_every_envelope_it_publishes(redis_server, control):
    pubsub = redis_server.client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("numbers")
    running = control()
    eventually(lambda: redis_server.client().xlen("numbers:log") >= 20)
    last = pause(running)
    entries = redis_server.client().xrange("numbers:log", "-", "+")
    assert [json.loads(fields[b"envelope"])["seq"] for _, fields in entries] == list(range(1, last + 1))
    ids = [entry_id.decode() for entry_id, _ in entries]
    run = ids[0].split("-")[0]
    assert ids == [f"{run}-{seq}" for seq in range(1, last + 1)], "the id is <run>-<seq>"
    assert abs(int(run) / 1000 - time.time()) < 60, "the run is the control-plane's start, in Unix ms"
    published, deadline = [], time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if message := pubsub.get_message(timeout=0.1):
            published.append(message["data"])
    assert published == [fields[b"envelope"] for _, fields in entries], "what was published, byte for byte"
    assert running.json("/api/status")["log"] == {"key": "numbers:log", "maxlen": 100_000}


def test_the_replay_log_is_trimmed_to_stream_maxlen(redis_server, services):
    running = services("control", redis_server.url, RATE_HZ="2000", STREAM_MAXLEN="1000", wait="/readyz")
    eventually(lambda: running.json("/api/status")["seq"] > 3000)
    assert 1000 <= redis_server.client().xlen("numbers:log") < 1500, "MAXLEN ~ trims in whole nodes"


def test_publish_goes_on_when_the_log_cannot_be_written(redis_server, services):
    redis_server.client().set("numbers:log", "not a stream")
    pubsub = redis_server.client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("numbers")
    running = services("control", redis_server.url, RATE_HZ="50", wait="/readyz")
    eventually(lambda: pubsub.get_message(timeout=0.1), message="values still flow")
    eventually(lambda: running.metric("numcast_log_errors_total") >= 10)
    eventually(lambda: "envelopes published but not logged key=numbers:log" in running.logs())
