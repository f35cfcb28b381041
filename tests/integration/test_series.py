"""Browsers choose what they watch: `subscribe` over a real WebSocket to a real worker, fed by a real control-plane's
push API or by hand on the push channel; /api/series and /api/history?series=; every bound, and bad input."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import envelope, eventually, http, publish, socketio_client

SOURCE = "hand-1.push"


class Watcher:
    """A python-socketio client over WebSocket that subscribes as the dashboard does and keeps what it gets."""

    def __init__(self, url: str, subscription: dict | None = None) -> None:
        self.values: list[dict] = []
        self.errors: list[dict] = []
        self._lock = threading.Lock()
        self.client = socketio_client(reconnection=False)
        self.client.on("numbers", self._numbers)
        self.client.on("subscribe_error", self.errors.append)
        self.client.connect(url, transports=["websocket"], wait_timeout=10)
        self._since = 0  # seen() starts here: values before the first subscription was acknowledged are left out
        if subscription is not None:
            reply = self.subscribe(subscription, first=True)
            assert "subscribed" in reply, reply

    def subscribe(self, *args, first: bool = False) -> dict:
        """Emit `subscribe` with `args` and return the acknowledgement.

        The acknowledgement comes on the same connection as the values, so what arrived before it was sent for the
        generator's series a new browser gets: with `first`, seen() starts after it.
        """
        acknowledged = threading.Event()
        reply: list = []

        def ack(*answer) -> None:
            if first:
                with self._lock:
                    self._since = len(self.values)
            reply.append(answer[0] if len(answer) == 1 else answer)
            acknowledged.set()

        self.client.emit("subscribe", args[0] if len(args) == 1 else args, callback=ack)
        assert acknowledged.wait(10), "no acknowledgement of subscribe within 10 s"
        return reply[0]

    def _numbers(self, batch: list[dict]) -> None:
        with self._lock:
            self.values.extend(batch)

    def seen(self) -> list[tuple]:
        """(series, labels, seq) of each value received, in order; the generator's series as None."""
        with self._lock:
            values = self.values[self._since :]
            return [(e.get("series"), json.dumps(e.get("labels"), sort_keys=True), e["seq"]) for e in values]

    def close(self) -> None:
        self.client.disconnect()


@pytest.fixture
def watchers():
    """A factory of Watchers, all closed after the test."""
    made: list[Watcher] = []

    def make(url: str, subscription: dict | None = None) -> Watcher:
        made.append(Watcher(url, subscription))
        return made[-1]

    yield make
    for watcher in made:
        watcher.close()


def sample(seq: int, series: str, value: float = 1.0, ts: float | None = None, **labels: str) -> str:
    """A pushed envelope, as the control-plane stamps it."""
    body = {"seq": seq, "value": value, "ts": ts or time.time(), "source": SOURCE, "series": series, "labels": labels}
    return json.dumps(body)


def push(server, *lines: str) -> None:
    """One message on the push channel: envelope lines, as the control-plane publishes a batch."""
    publish(server, "\n".join(lines), channel="numbers:push")


def key(series: str | None, labels: dict | None, seq: int) -> tuple:
    return (series, json.dumps(labels, sort_keys=True), seq)


def test_each_browser_gets_only_the_series_and_label_sets_it_subscribed_to(redis_server, services, watchers):
    """Pushed through the control-plane's JSON door: each browser gets exactly its series, in seq order."""
    worker = services("worker", redis_server.url, wait="/readyz")
    control = services("control", redis_server.url, wait="/readyz", RATE_HZ="20")
    default = watchers(worker.url)
    queues = watchers(worker.url, {"series": ["queue_depth"]})
    billing = watchers(worker.url, {"series": ["queue_depth", "temperature"], "match": ["queue=~bill.*"]})
    lab = watchers(worker.url, {"series": ["temperature"], "match": {"site": "lab"}})
    not_mail = watchers(worker.url, {"series": ["queue_depth"], "match": ["queue!=mail", "queue!~x.*"]})
    both = watchers(worker.url, {"series": ["temperature", "queue_depth", "numcast_value"]})
    eventually(lambda: worker.json("/api/status")["clients"] == 6)
    samples = []
    for n in range(5):
        samples += [
            {"series": "queue_depth", "labels": {"queue": "billing"}, "value": n},
            {"series": "queue_depth", "labels": {"queue": "mail"}, "value": n},
            {"series": "queue_depth", "labels": {"queue": "xray"}, "value": n},
            {"series": "temperature", "labels": {"site": "lab"}, "value": n},
            {"series": "temperature", "labels": {"site": "hall", "queue": "billing-2"}, "value": n},
            {"series": "other", "value": n},
        ]
    for start in range(0, len(samples), 6):
        status, body = http("POST", control.url + "/api/push", {"samples": samples[start : start + 6]})
        assert status == 200, body
    pushed = eventually(
        lambda: (
            (found := [e for e in worker.json("/api/history")["envelopes"] if "series" in e])
            and len(found) == len(samples)
            and found
        ),
        message="every sample in the worker",
    )
    eventually(lambda: len(default.values) >= 3, message="the generator's values")

    def expected(keep) -> list[tuple]:
        return [key(e["series"], e["labels"], e["seq"]) for e in pushed if keep(e)]

    cases = [
        (queues, lambda e: e["series"] == "queue_depth"),
        (billing, lambda e: e["labels"].get("queue", "").startswith("bill")),
        (lab, lambda e: e["series"] == "temperature" and e["labels"].get("site") == "lab"),
        (not_mail, lambda e: e["series"] == "queue_depth" and e["labels"]["queue"] == "billing"),
        (both, lambda e: e["series"] in ("temperature", "queue_depth")),
    ]
    for watcher, keep in cases:
        want = expected(keep)
        eventually(
            lambda watcher=watcher, want=want: [s for s in watcher.seen() if s[0] is not None] == want,
            message=f"exactly {len(want)} samples, in order",
        )
    assert all(series is None for series, _, _ in default.seen()), "no subscribe: the generator's series only"
    assert any(series is None for series, _, _ in both.seen()), "numcast_value names the generator's series"
    assert not [s for w in (queues, billing, lab, not_mail) for s in w.seen() if s[0] is None]


def test_browsers_that_watch_the_same_set_share_one_frame_per_round(redis_server, services, watchers):
    """Ten browsers on one set, ten on another: each message costs two frames, not one per browser."""
    worker = services("worker", redis_server.url, wait="/readyz")
    a = [watchers(worker.url, {"series": ["a_total", "b_total"]}) for _ in range(10)]
    b = [watchers(worker.url, {"series": ["b_total"], "match": ["job=x"]}) for _ in range(10)]
    idle = [watchers(worker.url) for _ in range(3)]  # the generator's series: nothing of it comes
    eventually(lambda: worker.json("/api/status")["clients"] == 23)
    assert worker.metric("numcast_subscriptions") == 3
    before = worker.metric("numcast_frames_encoded_total")
    messages = 8
    for n in range(messages):
        push(redis_server, sample(2 * n + 1, "a_total", job="y"), sample(2 * n + 2, "b_total", job="x"))
        eventually(
            lambda n=n: all(len(w.values) == 2 * (n + 1) for w in a) and all(len(w.values) == n + 1 for w in b),
            message="every browser has the message before the next is sent",
        )
    assert worker.metric("numcast_frames_encoded_total") - before == 2 * messages
    assert all(not w.values for w in idle)
    assert all(w.values == a[0].values for w in a) and all(w.values == b[0].values for w in b)


def test_subscribing_again_changes_what_comes_next_and_nothing_is_skipped(redis_server, services, watchers):
    worker = services("worker", redis_server.url, wait="/readyz")
    watcher = watchers(worker.url, {"series": ["a_total"]})
    push(redis_server, sample(1, "a_total"), sample(2, "b_total"))
    eventually(lambda: [s[2] for s in watcher.seen()] == [1])
    assert watcher.subscribe({"series": ["b_total"]}) == {"subscribed": {"series": ["b_total"], "match": []}}
    push(redis_server, sample(3, "a_total"), sample(4, "b_total"))
    publish(redis_server, envelope(1))
    eventually(lambda: [s[2] for s in watcher.seen()] == [1, 4])
    assert worker.metric("numcast_subscriptions") == 2, "a_total's subscription was let go; the default stays"


def test_api_series_lists_each_label_set_with_its_last_value_time_and_rate(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz")
    now = time.time()
    seq = 0
    for n in range(20):
        lines = []
        for queue in ("billing", "mail"):
            seq += 1
            lines.append(sample(seq, "queue_depth", value=n + (queue == "mail") * 100, ts=now + n * 0.01, queue=queue))
        push(redis_server, *lines)
    push(redis_server, sample(seq + 1, "temperature", value=-3.5, ts=now))
    publish(redis_server, envelope(1, 42.0))
    body = eventually(
        lambda: (got := worker.json("/api/series")) and len(got["series"]) == 3 and got, message="three series"
    )
    assert body["worker"] == "machine-1" and body["limit"] == 10_000 and body["unlisted"] == 0
    names = [series["name"] for series in body["series"]]
    assert names == ["numcast_value", "queue_depth", "temperature"]
    queue = body["series"][1]["label_sets"]
    assert [(s["labels"], s["value"], s["ts"]) for s in queue] == [
        ({"queue": "billing"}, 19.0, pytest.approx(now + 0.19)),
        ({"queue": "mail"}, 119.0, pytest.approx(now + 0.19)),
    ]
    assert all(s["rate"] >= 19 for s in queue), "20 samples within a second: at least 19 per second so far"
    generator = body["series"][0]["label_sets"]
    assert [(s["labels"], s["value"]) for s in generator] == [({}, 42.0)] and 0 < generator[0]["rate"] <= 1
    only = worker.json("/api/series?series=queue_depth&match=queue=mail")["series"]
    assert [(s["name"], [x["labels"] for x in s["label_sets"]]) for s in only] == [("queue_depth", [{"queue": "mail"}])]
    assert [s["name"] for s in worker.json("/api/series?match=queue=~.*")["series"]] == names, "as PromQL: '' matches"
    assert [s["name"] for s in worker.json("/api/series?match=queue=~.%2B")["series"]] == ["queue_depth"]


def test_history_is_filtered_by_series_and_matchers_and_a_busy_series_never_pushes_out_a_quiet_one(
    redis_server, services
):
    worker = services("worker", redis_server.url, wait="/readyz", HISTORY_SIZE="100", HISTORY_TOTAL="100",
                      MAX_SERIES="10")  # fmt: skip
    push(redis_server, sample(1, "quiet", value=7.0, job="a"), sample(2, "quiet", value=8.0, job="b"))
    seq = 2
    for _ in range(10):  # 300 samples of a busy series: three times the total
        push(redis_server, *(sample(seq + n, "busy", job="a") for n in range(1, 31)))
        seq += 30
    publish(redis_server, *(envelope(n) for n in range(1, 4)))
    eventually(lambda: worker.metric("numcast_accepted_total", 'path="redis"') == 305, message="all taken")

    def history(query: str) -> list[dict]:
        return worker.json("/api/history" + query)["envelopes"]

    assert [(e["value"], e["labels"]) for e in history("?series=quiet")] == [(7.0, {"job": "a"}), (8.0, {"job": "b"})]
    assert [e["value"] for e in history("?series=quiet&match=job!=a")] == [8.0]
    assert [e["seq"] for e in history("?series=numcast_value")] == [1, 2, 3]
    busy = history("?series=busy")
    assert 20 <= len(busy) <= 96 and [e["seq"] for e in busy] == list(range(seq - len(busy) + 1, seq + 1))
    assert len(history("")) <= 100, "HISTORY_TOTAL holds for everything together"
    assert [e["seq"] for e in history("?series=busy&limit=2")] == [seq - 1, seq]
    both = history("?series=quiet&series=numcast_value&limit=1")
    assert [(e.get("series"), e["seq"]) for e in both] == [("quiet", 1), ("quiet", 2), (None, 3)], "in arrival order"
    for query, field in [
        ("?series=no%20good", "series"),
        ("?series=" + "&series=".join(f"s{n}" for n in range(17)), "series"),
        ("?match=job", "match"),
        ("?match=job=~(", "match"),
        ("?match=__name__=x", "match"),
        ("?limit=101", "limit"),
    ]:
        status, body = worker.get("/api/history" + query)
        assert status == 400 and body["field"] == field, (query, status, body)
    status, body = worker.get("/api/series?match=job=~a{1001}")
    assert status == 400 and body["field"] == "match", body


def test_max_series_bounds_the_listing_and_counts_the_rest_which_still_reach_their_browsers(
    redis_server, services, watchers
):
    worker = services("worker", redis_server.url, wait="/readyz", MAX_SERIES="3")
    watcher = watchers(worker.url, {"series": ["flood"]})
    push(redis_server, *(sample(n, "flood", pod=f"p{n}") for n in range(1, 6)))
    eventually(lambda: len(watcher.values) == 5, message="every label set reaches the browser")
    listed = worker.json("/api/series")["series"]
    assert [[s["labels"]["pod"] for s in series["label_sets"]] for series in listed] == [["p1", "p2", "p3"]]
    assert worker.metric("numcast_series") == 3
    assert worker.metric("numcast_series_unlisted_total") == 2
    assert worker.json("/api/series")["unlisted"] == 2
    assert [e["labels"]["pod"] for e in worker.json("/api/history?series=flood")["envelopes"]] == ["p1", "p2", "p3"]
    push(redis_server, sample(6, "flood", pod="p1"), sample(7, "flood", pod="p9"))
    eventually(lambda: worker.metric("numcast_series_unlisted_total") == 3, message="p9: one more sample unlisted")
    assert worker.metric("numcast_series") == 3


def test_series_silent_past_series_ttl_are_forgotten(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz", SERIES_TTL="1")
    push(redis_server, sample(1, "short_lived", job="a"))
    eventually(lambda: worker.metric("numcast_series") == 1)
    eventually(lambda: worker.metric("numcast_series_expired_total") == 1, message="forgotten after a second")
    assert (
        worker.json("/api/series")["series"] == [] and worker.json("/api/history?series=short_lived")["envelopes"] == []
    )


BAD_SUBSCRIBE = [
    ("a string", "invalid"),
    (["series"], "invalid"),
    ({}, "invalid"),
    ({"series": []}, "invalid"),
    ({"series": "a_total"}, "invalid"),
    ({"series": ["a_total"], "extra": 1}, "invalid"),
    ({"series": ["no good"]}, "invalid"),
    ({"series": [1]}, "invalid"),
    ({"series": ["a" * 129]}, "invalid"),
    ({"series": [f"s{n}" for n in range(17)]}, "too_many_series"),
    ({"series": ["a_total"], "match": "job=x"}, "invalid"),
    ({"series": ["a_total"], "match": ["job"]}, "invalid"),
    ({"series": ["a_total"], "match": ["job=~("]}, "invalid"),
    ({"series": ["a_total"], "match": ["job=~" + "a" * 257]}, "invalid"),
    ({"series": ["a_total"], "match": ["__name__=a"]}, "invalid"),
    ({"series": ["a_total"], "match": {"job": 3}}, "invalid"),
    ({"series": ["a_total"], "match": {"job": "x\n"}}, "invalid"),
    ({"series": ["a_total"], "match": [f"l{n}=x" for n in range(17)]}, "invalid"),
    (None, "invalid"),
]


def test_a_bad_subscribe_gets_an_error_event_is_counted_and_changes_nothing(redis_server, services, watchers):
    worker = services("worker", redis_server.url, wait="/readyz")
    watcher = watchers(worker.url, {"series": ["a_total"]})
    for payload, reason in BAD_SUBSCRIBE:
        reply = watcher.subscribe(payload)
        assert reply.get("reason") == reason and reply["error"], (payload, reply)
    assert watcher.subscribe(1, 2)["reason"] == "invalid", "two arguments"
    eventually(lambda: len(watcher.errors) == len(BAD_SUBSCRIBE) + 1, message="an error event for each")
    assert watcher.errors[0] == {"error": watcher.errors[0]["error"], "reason": "invalid", "field": ""}
    assert "SUBSCRIBE_MAX_SERIES" in watcher.errors[9]["error"] and watcher.errors[9]["field"] == "series"
    invalid = sum(reason == "invalid" for _, reason in BAD_SUBSCRIBE) + 1
    assert worker.metric("numcast_subscribe_refused_total", 'reason="invalid"') == invalid
    assert worker.metric("numcast_subscribe_refused_total", 'reason="too_many_series"') == 1
    push(redis_server, sample(1, "a_total"), sample(2, "b_total"))
    eventually(lambda: [s[2] for s in watcher.seen()] == [1], message="still subscribed to a_total")
    assert watcher.client.connected and worker.get("/healthz")[0] == 200
    assert "subscribe refused" in worker.logs()


def test_a_subscribe_larger_than_the_message_limit_closes_that_browser_only(redis_server, services, watchers):
    worker = services("worker", redis_server.url, wait="/readyz")
    other = watchers(worker.url, {"series": ["a_total"]})
    greedy = watchers(worker.url)
    greedy.client.emit("subscribe", {"series": ["a_total"], "match": ["job=" + "x" * 20_000]})
    eventually(lambda: not greedy.client.connected, message="the oversized message closed its connection")
    push(redis_server, sample(1, "a_total"))
    eventually(lambda: len(other.values) == 1, message="the other browser is served")


def test_distinct_subscriptions_are_bounded_and_a_slot_frees_when_its_browsers_leave(redis_server, services, watchers):
    worker = services("worker", redis_server.url, wait="/readyz", MAX_SUBSCRIPTIONS="2")
    first = watchers(worker.url, {"series": ["a_total"]})
    watchers(worker.url, {"series": ["b_total"], "match": {"job": "x"}})
    third = watchers(worker.url)
    reply = third.subscribe({"series": ["c_total"]})
    assert reply["reason"] == "subscriptions_full" and "MAX_SUBSCRIPTIONS" in reply["error"], reply
    assert "subscribed" in third.subscribe({"series": ["a_total"]}), "a set another browser holds is shared"
    assert "subscribed" in third.subscribe({"match": {"job": "x"}, "series": ["b_total", "b_total"]}), "in any form"
    assert worker.metric("numcast_subscribe_refused_total", 'reason="subscriptions_full"') == 1
    assert worker.metric("numcast_subscriptions") == 3
    first.close()
    eventually(lambda: worker.metric("numcast_subscriptions") == 2, message="a_total let go with its browser")
    assert "subscribed" in third.subscribe({"series": ["c_total"]})
