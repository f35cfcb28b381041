"""The push doors in front of one path, without a server: who may push, what each door refuses, and that a refused
push queues, stamps and remembers nothing (the app is built but not started, so its queues only fill)."""

from __future__ import annotations

import base64
import gzip
import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from numcast import admin, auth, mirror_key
from numcast.envelope import decode
from numcast.settings import from_env
from numcast_control import create_app
from numcast_control.settings import ControlSettings

PUSH, CONTROL = "push-token-0123456789", "control-token-0123456789"
FAR = {"REMOTE_ADDR": "10.0.0.7"}


def make(**environ: str):
    return create_app(from_env(ControlSettings, environ, async_mode="threading"))


def service(app):
    return app.extensions["numcast"]


def queued(app) -> list[dict]:
    """The envelopes waiting for the push channel, decoded."""
    return [decode(line).to_dict() for line in service(app).push.outbox._items]


def push(client, samples: list[dict], **kw):
    return client.post("/api/push", json={"samples": samples}, **kw)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_a_push_is_stamped_and_queued_for_the_push_channel_and_every_mirror(tmp_path):
    key_file = tmp_path / "mirror.key"
    key_file.write_text(mirror_key.new_key() + "\n")
    app = make(TCP_MIRROR_TARGETS="127.0.0.1:9", MIRROR_KEY_FILE=str(key_file))
    response = push(
        app.test_client(), [{"series": "q", "labels": {"job": "a"}, "value": 3}, {"series": "t", "value": 1}]
    )
    assert response.status_code == 200 and response.json == {"pushed": 2}
    envelopes = queued(app)
    source = service(app).generator.source + ".push"
    assert [(e["seq"], e["series"], e["labels"], e["value"], e["source"]) for e in envelopes] == [
        (1, "q", {"job": "a"}, 3.0, source),
        (2, "t", {}, 1.0, source),
    ]
    (mirror,) = service(app).mirrors
    assert list(mirror.outbox._items) == list(service(app).push.outbox._items)
    assert not service(app).redis.outbox._items, "nothing on the generator's channel"


def test_every_route_that_changes_answers_to_exactly_one_of_the_two_tokens():
    app = make(CONTROL_TOKEN=CONTROL, PUSH_TOKEN=PUSH)
    client = app.test_client()
    routes = [
        (method, rule.rule.replace("<path:key>", "job/x"), rule.endpoint.startswith("push."))
        for rule in app.url_map.iter_rules()
        for method in sorted(rule.methods - auth.SAFE_METHODS)
    ]
    assert {(m, p) for m, p, is_push in routes if is_push} == {
        ("PUT", "/metrics/job/x"), ("POST", "/metrics/job/x"), ("DELETE", "/metrics/job/x"),
        ("POST", "/api/v2/write"), ("POST", "/api/push"),
    }  # fmt: skip
    for method, path, is_push in routes:
        own, other = (PUSH, CONTROL) if is_push else (CONTROL, PUSH)
        refused = client.open(path, method=method, data=b"{}", headers=bearer(other), environ_base=FAR)
        assert refused.status_code == 401, (method, path, "the other token")
        passed = client.open(path, method=method, data=b"{}", headers=bearer(own), environ_base=FAR)
        assert passed.status_code not in (401, 403), (method, path)
    assert not queued(app)


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (f"Bearer {PUSH}", 200),
        (f"bearer {PUSH}", 200),
        (f"Token {PUSH}", 200),  # what InfluxDB's clients send
        ("Basic " + base64.b64encode(f"pod-7:{PUSH}".encode()).decode(), 200),  # push_to_gateway's handler
        ("Basic " + base64.b64encode(f":{PUSH}".encode()).decode(), 200),
        ("Basic " + base64.b64encode(f"{PUSH}:".encode()).decode(), 401),  # the token is the password
        ("Basic " + base64.b64encode(b"pod-7:wrong-token-0123456").decode(), 401),
        ("Basic not-base64!", 401),
        (f"Token {PUSH}x", 401),
        (f"Digest {PUSH}", 401),
        ("", 401),
    ],
)
def test_the_push_token_in_each_scheme_a_client_sends(authorization, status):
    app = make(PUSH_TOKEN=PUSH)
    headers = {"Authorization": authorization} if authorization else {}
    response = push(app.test_client(), [{"series": "a", "value": 1}], headers=headers, environ_base=FAR)
    assert response.status_code == status, response.json
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer") and not queued(app)


def test_without_a_push_token_only_this_machine_may_push():
    app = make()
    client = app.test_client()
    sample = [{"series": "a", "value": 1}]
    assert push(client, sample, environ_base=FAR).json["reason"] == "not_loopback"
    assert push(client, sample, headers={"Origin": "http://evil.example"}).json["reason"] == "cross_origin"
    assert not queued(app)
    assert push(client, sample).status_code == 200
    metrics = client.get("/metrics", environ_base={admin.ENVIRON: True}).get_data(as_text=True)
    assert 'numcast_push_refused_total{reason="not_loopback"} 1.0' in metrics
    assert 'numcast_push_refused_total{reason="cross_origin"} 1.0' in metrics
    assert 'numcast_pushed_total{format="json"} 1.0' in metrics


GOOD = {"series": "a", "value": 1}


@pytest.mark.parametrize(
    ("samples", "reason", "words"),
    [
        ([GOOD, {"series": "9a", "value": 1}], "invalid", "samples[1]: '9a' is not a Prometheus metric name"),
        ([{"series": "numcast_value", "value": 1}], "invalid", "the generator's series"),
        ([{"series": "a", "labels": ["x"], "value": 1}], "invalid", "samples[0]: labels must be an object"),
        ([{"series": "a", "labels": {"__name__": "x"}, "value": 1}], "invalid", "not a label name"),
        ([{"series": "a", "labels": {"a-b": "x"}, "value": 1}], "invalid", "not a label name"),
        ([{"series": "a", "labels": {"a": 1}, "value": 1}], "invalid", "samples[0]: label a must be a string"),
        ([{"series": "a", "labels": {"a": "x\ny"}, "value": 1}], "invalid", "control characters"),
        ([{"series": "a", "value": 10**400}], "invalid", "finite"),
        ([{"series": "a", "value": 1, "ts": 0}], "invalid", "ts Unix seconds"),
        ([{"series": "a", "value": 1, "ts": time.time() + 3600}], "invalid", "ahead of this server's clock"),
        ([{"series": "a", "labels": {f"l{n}": "v" for n in range(17)}, "value": 1}], "too_many_labels", "17 labels"),
        ([{"series": "a", "labels": {"a": "x" * 257}, "value": 1}], "label_too_long", "at most 256"),
        ([{"series": "a", "labels": {f"l{n}": "x" * 200 for n in range(6)}, "value": 1}], "too_large", "bytes"),
    ],
)
def test_a_bad_sample_refuses_the_whole_push_naming_it(samples, reason, words):
    app = make()
    response = push(app.test_client(), samples)
    assert response.status_code == 400 and response.json["reason"] == reason, response.json
    assert words in response.json["error"]
    assert not queued(app) and service(app).pusher.seq == 0 and len(service(app).pusher.table) == 0


def test_an_empty_label_is_no_label_as_in_prometheus():
    app = make()
    push(app.test_client(), [{"series": "a", "labels": {"x": "", "y": "1"}, "value": 1}])
    assert queued(app)[0]["labels"] == {"y": "1"}


def test_bodies_over_the_limits_get_413_and_gzip_is_read():
    app = make(PUSH_MAX_BODY_BYTES="2048", PUSH_MAX_SAMPLES="3", PUSH_RATE="100")
    client = app.test_client()
    big = json.dumps({"samples": [{"series": "a", "value": 1, "labels": {"x": "y" * 100}}] * 20}).encode()
    assert client.post("/api/push", data=big).status_code == 413
    bomb = gzip.compress(b" " * 100_000)
    response = client.post("/api/push", data=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413 and "gunzipped" in response.json["error"]
    four = json.dumps({"samples": [GOOD] * 4}).encode()
    response = client.post("/api/push", data=four)
    assert response.status_code == 413 and response.json["reason"] == "too_many_samples"
    assert (
        client.post("/api/push", data=gzip.compress(four)[:-4], headers={"Content-Encoding": "gzip"}).status_code == 400
    )
    three = gzip.compress(json.dumps({"samples": [GOOD] * 3}).encode())
    assert client.post("/api/push", data=three, headers={"Content-Encoding": "gzip"}).json == {"pushed": 3}
    assert len(queued(app)) == 3


def test_the_rate_limit_answers_429_with_retry_after():
    app = make(PUSH_RATE="10", PUSH_MAX_SAMPLES="10")
    client = app.test_client()
    assert push(client, [GOOD] * 10).status_code == 200
    response = push(client, [GOOD] * 10)
    assert response.status_code == 429 and response.json["reason"] == "rate"
    assert int(response.headers["Retry-After"]) >= 1
    assert len(queued(app)) == 10


def test_a_full_queue_to_redis_answers_503_and_drops_nothing():
    app = make(PUSH_MAX_SAMPLES="100", PUSH_QUEUE="5200")  # room: 5200 - 5000 kept for a batch in flight
    client = app.test_client()
    for _ in range(2):
        assert push(client, [GOOD] * 100).status_code == 200
    response = push(client, [GOOD] * 100)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert len(queued(app)) == 200 and service(app).push.outbox.dropped == 0


def test_distinct_series_are_bounded_and_a_deleted_group_makes_room():
    app = make(PUSH_MAX_SERIES="3")
    client = app.test_client()
    assert push(client, [{"series": "a", "labels": {"n": str(n)}, "value": 1} for n in range(2)]).status_code == 200
    assert client.put("/metrics/job/batch", data=b"done 1\n").status_code == 202
    again = push(client, [{"series": "a", "labels": {"n": "0"}, "value": 2}])  # known: no new series
    assert again.status_code == 200
    response = push(client, [{"series": "a", "labels": {"n": "9"}, "value": 1}])
    assert response.status_code == 400 and response.json["reason"] == "series_limit"
    assert "PUSH_MAX_SERIES" in response.json["error"]
    assert client.delete("/metrics/job/batch").status_code == 202
    assert push(client, [{"series": "a", "labels": {"n": "9"}, "value": 1}]).status_code == 200


def scrape(client) -> dict[tuple, float]:
    text = client.get("/api/push/metrics").get_data(as_text=True)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.startswith("push_")
    }


def test_pushgateway_put_replaces_the_group_post_replaces_the_names_delete_forgets_it():
    app = make()
    client = app.test_client()
    group = (("instance", ""), ("job", "batch"))
    x1, x2 = (("instance", ""), ("job", "batch"), ("x", "1")), (("instance", ""), ("job", "batch"), ("x", "2"))
    assert client.put("/metrics/job/batch", data=b'a{x="1"} 1\nb 2\n').status_code == 202
    assert scrape(client) == {("a", x1): 1.0, ("b", group): 2.0}
    assert client.post("/metrics/job/batch", data=b'a{x="2"} 3\n').status_code == 202
    assert scrape(client) == {("a", x2): 3.0, ("b", group): 2.0}, "POST: every series of the pushed names replaced"
    assert client.put("/metrics/job/batch", data=b"c 4\n").status_code == 202
    assert scrape(client) == {("c", group): 4.0}, "PUT: the whole group"
    assert client.delete("/metrics/job/batch").status_code == 202
    assert scrape(client) == {}
    assert [e["series"] for e in queued(app)] == ["a", "b", "a", "c"], "a DELETE publishes nothing"


def test_the_grouping_key_may_be_base64_and_a_sample_may_not_contradict_it():
    app = make()
    client = app.test_client()
    encoded = base64.urlsafe_b64encode(b"pod/7").decode().rstrip("=")
    assert client.put(f"/metrics/job/batch/instance@base64/{encoded}", data=b"a 1\n").status_code == 202
    assert queued(app)[0]["labels"] == {"job": "batch", "instance": "pod/7"}
    response = client.put("/metrics/job/batch", data=b'a{job="other"} 1\n')
    assert response.status_code == 400 and "grouping key" in response.json["error"]
    for path in ("/metrics/job", "/metrics/job/a/b", "/metrics/other/x", "/metrics/job/a/9x/1", "/metrics/job/a/x/"):
        assert client.put(path, data=b"a 1\n").status_code in (400, 404, 405), path
    response = client.put("/metrics/job/batch", data=b"a 1\na 2\n")
    assert response.status_code == 400 and "twice" in response.json["error"]
    assert client.put("/metrics/job/batch", data=b"# TYPE a gauge\na 1\n").status_code == 202
    response = client.put("/metrics/job/batch", data=b"# TYPE a summary\na_sum 1\na_count 1\n")
    assert response.status_code == 400 and "a is a gauge, not a summary" in response.json["error"]
    assert len(queued(app)) == 2


def test_influx_errors_come_in_influx_terms():
    app = make(PUSH_TOKEN=PUSH)
    client = app.test_client()
    response = client.post("/api/v2/write", data=b"m f=1")
    assert response.status_code == 401 and response.json["code"] == "unauthorized" and "message" in response.json
    token = {"Authorization": f"Token {PUSH}"}
    response = client.post("/api/v2/write?precision=s", data=b"m f=1 1\nm\n", headers=token)
    assert response.status_code == 400 and response.json["code"] == "invalid"
    assert response.json["message"].startswith("line 2: ")
    response = client.post("/api/v2/write?precision=hours", data=b"m f=1", headers=token)
    assert response.status_code == 400 and "precision" in response.json["message"]
    assert not queued(app)
    response = client.post("/api/v2/write?precision=s&org=o&bucket=b", data=b"m,t=x f=1.5 1764150000", headers=token)
    assert response.status_code == 204 and response.data == b""
    ((envelope),) = queued(app)
    assert (envelope["series"], envelope["labels"], envelope["ts"]) == ("m_f", {"t": "x"}, 1764150000.0)


def test_the_exposition_is_valid_text_with_push_times_per_group():
    app = make()
    client = app.test_client()
    client.put("/metrics/job/batch/instance/i1", data=b'# TYPE jobs_total counter\njobs_total{q="a"} 3\n')
    push(client, [{"series": "temp", "labels": {"room": 'l"a\\b'}, "value": 21.5}])
    text = client.get("/api/push/metrics").get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["jobs"].type == "counter"
    assert families["temp"].samples[0].labels == {"room": 'l"a\\b'}
    (pushed_at,) = families["push_time_seconds"].samples
    assert pushed_at.labels == {"job": "batch", "instance": "i1"} and pushed_at.value == pytest.approx(time.time(), 5)
