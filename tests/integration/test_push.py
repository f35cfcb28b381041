"""Pushing metrics through the control-plane's three doors with the clients people have, against a real Redis and
a real worker: each sample reaches the push channel, its replay log, the worker's history and sink; a refused
push publishes nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import eventually, http

from numcast.envelope import decode
from numcast.push import stream

PUSH_TOKEN = "push-token-for-the-tests-0123"
CONTROL_TOKEN = "control-token-for-the-tests-01"


class Channel:
    """Every message of one channel, from the moment it is made."""

    def __init__(self, server, name: str) -> None:
        self.pubsub = server.client().pubsub()
        self.pubsub.subscribe(name)
        confirmed = eventually(lambda: self.pubsub.get_message(timeout=0.5), message=f"subscribed to {name}")
        assert confirmed["type"] == "subscribe"  # from here on nothing is missed
        self.messages: list[bytes] = []

    def read(self, at_least: int = 0, quiet: float = 0.3, most: float = 15.0) -> list[bytes]:
        """What came so far: at least `at_least` messages (waited for up to `most` seconds), then whatever more
        comes before `quiet` seconds pass without one (anything extra, a message twice, would come now)."""
        deadline = time.monotonic() + most
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=quiet)
            if message is None:
                if len(self.messages) >= at_least:
                    break
            elif message["type"] == "message":
                self.messages.append(message["data"])
        return self.messages

    def envelopes(self, at_least: int = 0) -> list[dict]:
        """The envelopes of every message so far, once there are at least `at_least` of them."""

        def decoded() -> list[dict]:
            return [decode(line).to_dict() for message in self.messages for line in stream.split(message)]

        deadline = time.monotonic() + 15
        while len(decoded()) < at_least and time.monotonic() < deadline:
            self.read(at_least=len(self.messages) + 1, most=max(0.0, deadline - time.monotonic()))
        self.read()
        return decoded()


@pytest.fixture
def pipeline(redis_server, services, tmp_path):
    """Redis, a worker (Redis only, no mirror), a control-plane with both tokens; and a watch on numbers:push."""
    worker = services("worker", redis_server.url, wait="/readyz")
    watch = Channel(redis_server, "numbers:push")
    control = services(
        "control", redis_server.url, wait="/readyz", PUSH_TOKEN=PUSH_TOKEN, CONTROL_TOKEN=CONTROL_TOKEN, RATE_HZ="5"
    )
    return control, worker, watch


def pushed_in(worker) -> list[dict]:
    return [e for e in worker.json("/api/history")["envelopes"] if "series" in e]


def sink_lines(worker) -> list[dict]:
    path = Path(worker.env["SINK_FILE"])
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def bearer(token: str = PUSH_TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def test_a_json_push_reaches_the_channel_its_log_and_the_worker_s_history_and_sink(pipeline, redis_server):
    control, worker, watch = pipeline
    generator = Channel(redis_server, "numbers")
    samples = [
        {"series": "queue_depth", "labels": {"queue": "billing"}, "value": 42},
        {"series": "queue_depth", "labels": {"queue": "mail"}, "value": 7.5, "ts": time.time() - 1},
        {"series": "temperature_celsius", "value": -3},
    ]
    status, body = http("POST", control.url + "/api/push", {"samples": samples}, bearer())
    assert (status, body) == (200, {"pushed": 3})
    (message,) = watch.read(at_least=1)  # one batch, one message
    envelopes = [decode(line) for line in stream.split(message)]
    source = control.json("/api/status")["source"] + ".push"
    assert [(e.seq, e.series, e.labels, e.value, e.source) for e in envelopes] == [
        (1, "queue_depth", {"queue": "billing"}, 42.0, source),
        (2, "queue_depth", {"queue": "mail"}, 7.5, source),
        (3, "temperature_celsius", {}, -3.0, source),
    ]
    assert envelopes[1].ts == pytest.approx(samples[1]["ts"])
    log = redis_server.client().xrange("numbers:push:log")
    assert [entry[1][b"envelope"] for entry in log] == stream.split(message)
    assert [entry[0].decode().split("-")[1] for entry in log] == ["1", "2", "3"]
    expected = [e.to_dict() for e in envelopes]
    eventually(lambda: pushed_in(worker) == expected, message="the worker's history")
    eventually(lambda: [line for line in sink_lines(worker) if "series" in line] == expected, message="the sink")
    # The generator publishes every 0.2 s: a 0.1 s quiet spell ends the read once two of its messages came.
    generated = generator.read(at_least=2, quiet=0.1)
    assert all("series" not in decode(raw).to_dict() for raw in generated), "numbers keeps its shape"
    assert control.json("/api/status")["push"] == {
        "channel": "numbers:push", "source": source, "seq": 3, "series": 3,
    }  # fmt: skip
    assert control.metric("numcast_pushed_total", 'format="json"') == 3


BAD_JSON = [
    (b'{"samples": [{"series": "ok", "value": 1}, {"series": "no good", "value": 1}]}', 400, "samples[1]"),
    (b'{"samples": [{"series": "ok", "value": "1"}]}', 400, "samples[0]"),
    (b'{"samples": [{"series": "ok", "labels": {"a": ""}, "value": 1}, {"series": "numcast_value", "value": 1}]}',
     400, "generator"),
    (b'{"samples": [{"series": "ok", "labels": {"__x": "1"}, "value": 1}]}', 400, "label name"),
    (b'{"samples": [{"series": "ok", "value": 1, "ts": 99999999999}]}', 400, "ahead"),
    (b'{"samples": [{"series": "ok", "value": 1}]', 400, "not JSON"),
    (b"\x1f\x8b not gzip", 400, "not UTF-8"),
    (json.dumps({"samples": [{"series": "ok", "value": 1}] * 10_001}).encode(), 413, "at most 10000"),
]  # fmt: skip


def test_bad_json_pushes_get_a_clear_4xx_and_publish_nothing(pipeline, redis_server):
    control, worker, watch = pipeline
    for body, status, words in BAD_JSON:
        got, answer = http("POST", control.url + "/api/push", body, bearer())
        assert got == status and words in answer["error"], (body[:80], got, answer)
    for headers in ({}, bearer(CONTROL_TOKEN), {"Authorization": "Bearer x" * 3}):
        got, answer = http("POST", control.url + "/api/push", {"samples": [{"series": "ok", "value": 1}]}, headers)
        assert got == 401 and answer["reason"] in ("missing", "wrong"), headers
    assert http("PATCH", control.url + "/api/config", {"paused": True}, bearer())[0] == 401, "no change by pushers"
    assert watch.read(quiet=0.5) == [] and redis_server.client().xlen("numbers:push:log") == 0
    assert control.json("/api/status")["push"]["seq"] == 0 and pushed_in(worker) == []
    assert control.metric("numcast_push_refused_total", 'reason="invalid"') == 7
    assert control.metric("numcast_push_refused_total", 'reason="too_many_samples"') == 1


def test_the_official_influxdb_client_writes_with_its_precision_and_gzip(pipeline):
    from influxdb_client import InfluxDBClient, Point, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.rest import ApiException

    control, worker, watch = pipeline
    with InfluxDBClient(url=control.url, token=PUSH_TOKEN, org="any", enable_gzip=True) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        point = (
            Point("room").tag("site", "lab").field("celsius", 21.5).field("doors", 2).time(1764150000, WritePrecision.S)
        )
        write.write("any", record=point, write_precision=WritePrecision.S)
        write.write("any", record="room,site=hall celsius=19.25 1764150001250", write_precision=WritePrecision.MS)
        with pytest.raises(ApiException) as caught:
            write.write("any", record=["room celsius=1 1764150002", "room"], write_precision=WritePrecision.S)
        assert caught.value.status == 400
        assert json.loads(caught.value.body) == {"code": "invalid", "message": json.loads(caught.value.body)["message"]}
        assert json.loads(caught.value.body)["message"].startswith("line 2: ")
    with InfluxDBClient(url=control.url, token="not-the-push-token-000", org="any") as client:
        with pytest.raises(ApiException) as caught:
            client.write_api(write_options=SYNCHRONOUS).write("any", record="room celsius=1")
        assert caught.value.status == 401 and json.loads(caught.value.body)["code"] == "unauthorized"
    got = {(e["series"], e["labels"]["site"], e["value"], e["ts"]) for e in watch.envelopes(at_least=3)}
    assert got == {
        ("room_celsius", "lab", 21.5, 1764150000.0),
        ("room_doors", "lab", 2.0, 1764150000.0),
        ("room_celsius", "hall", 19.25, 1764150001.25),
    }
    eventually(lambda: {(e["series"], e["ts"]) for e in pushed_in(worker)} == {(s, t) for s, _, _, t in got})


def test_prometheus_client_pushes_as_to_a_pushgateway(pipeline):
    from prometheus_client import CollectorRegistry, Counter, Gauge
    from prometheus_client.exposition import (
        basic_auth_handler,
        delete_from_gateway,
        push_to_gateway,
        pushadd_to_gateway,
    )
    from prometheus_client.metrics import enable_created_metrics

    control, worker, watch = pipeline

    def handler(url, method, timeout, headers, data):
        return basic_auth_handler(url, method, timeout, headers, data, "batch-pod", PUSH_TOKEN)

    # As in a batch job's own process: a numcast Metrics() built earlier in this test process turned *_created off.
    enable_created_metrics()
    registry = CollectorRegistry()
    depth = Gauge("queue_depth", "Jobs waiting", ["queue"], registry=registry)
    depth.labels("billing").set(4)
    Counter("jobs_done", "Jobs done", registry=registry).inc(3)
    group = {"instance": "pods/7"}  # a slash: the client sends it base64-encoded
    push_to_gateway(control.url, job="nightly", registry=registry, grouping_key=group, handler=handler)

    def exposition() -> dict:
        _, text = http("GET", control.url + "/api/push/metrics")
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[0] != "#"}

    labels = 'instance="pods/7",job="nightly"'
    shown = exposition()
    assert shown[f"jobs_done_total{{{labels}}}"] == 3 and shown[f'queue_depth{{{labels},queue="billing"}}'] == 4
    assert f"push_time_seconds{{{labels}}}" in shown
    only_depth = CollectorRegistry()
    Gauge("queue_depth", "Jobs waiting", ["queue"], registry=only_depth).labels("mail").set(1)
    pushadd_to_gateway(control.url, job="nightly", registry=only_depth, grouping_key=group, handler=handler)
    shown = exposition()  # POST: queue_depth replaced, jobs_done kept
    assert (
        f'queue_depth{{{labels},queue="billing"}}' not in shown and shown[f'queue_depth{{{labels},queue="mail"}}'] == 1
    )
    assert shown[f"jobs_done_total{{{labels}}}"] == 3
    push_to_gateway(control.url, job="nightly", registry=only_depth, grouping_key=group, handler=handler)
    assert f"jobs_done_total{{{labels}}}" not in exposition(), "PUT: the whole group replaced"
    delete_from_gateway(control.url, job="nightly", grouping_key=group, handler=handler)
    assert exposition() == {}
    envelopes = [e for e in watch.envelopes(at_least=5) if not e["series"].endswith("_created")]  # the client's own
    assert [(e["series"], e["labels"]) for e in envelopes] == [
        ("queue_depth", {"job": "nightly", "instance": "pods/7", "queue": "billing"}),
        ("jobs_done_total", {"job": "nightly", "instance": "pods/7"}),
        ("queue_depth", {"job": "nightly", "instance": "pods/7", "queue": "mail"}),
        ("queue_depth", {"job": "nightly", "instance": "pods/7", "queue": "mail"}),
    ]
    published = watch.envelopes()
    assert len(published) == 5, published  # jobs_done_created too
    seqs = [e["seq"] for e in published]
    eventually(lambda: [e["seq"] for e in pushed_in(worker)] == seqs, timeout=30, message=f"the worker has {seqs}")
    with pytest.raises(OSError):  # urllib's HTTPError: the client says the push failed
        push_to_gateway(control.url, job="nightly", registry=registry)  # no token


def test_a_mirrored_worker_gets_pushed_samples_by_tcp_and_a_late_one_from_the_log(redis_server, services):
    early = services("worker", redis_server.url, wait="/readyz")
    control = services(
        "control", redis_server.url, wait="/readyz", TCP_MIRROR_TARGETS=f"127.0.0.1:{early.env['TCP_PORT']}"
    )
    samples = [{"series": "depth", "labels": {"n": str(n)}, "value": n} for n in range(50)]
    for _ in range(4):
        assert http("POST", control.url + "/api/push", {"samples": samples})[0] == 200  # loopback: no token
    eventually(lambda: len(pushed_in(early)) == 200, message="200 pushed samples, once each")
    assert (
        early.metric("numcast_accepted_total", 'path="tcp"') + early.metric("numcast_accepted_total", 'path="redis"')
        >= 200
    )
    assert early.metric("numcast_duplicates_total") >= 150, "each came by both paths"
    late = services("worker", redis_server.url, wait="/readyz")
    assert [e["seq"] for e in pushed_in(late)] == list(range(1, 201)), "caught up from numbers:push:log"
    assert late.metric("numcast_accepted_total", 'path="replay"') >= 200


def test_a_push_that_does_not_fit_in_the_queue_to_redis_is_refused_not_dropped(redis_server, services):
    control = services(
        "control", redis_server.url, wait="/readyz", PUSH_MAX_SAMPLES="100", PUSH_QUEUE="5200", STREAM_MAXLEN="0"
    )
    redis_server.kill()
    eventually(lambda: control.json("/api/status")["outputs"][1]["connected"] is False)
    answers = []
    for _ in range(5):
        answers.append(http("POST", control.url + "/api/push", {"samples": [{"series": "a", "value": 1}] * 100}))
    assert [status for status, _ in answers[:2]] == [200, 200] and answers[-1][0] == 503
    assert answers[-1][1]["reason"] == "queue_full"
    assert control.json("/api/status")["outputs"][1]["dropped"] == 0
    redis_server.restart()

    def published() -> bool:
        (output,) = [o for o in control.json("/api/status")["outputs"] if o["path"] == "push"]
        return output["sent"] == 200 and output["queued"] == 0 and output["dropped"] == 0

    eventually(published, timeout=15, message="what was accepted goes out once Redis is back")
