"""Pure parts of running two of everything: the generator gated by its lease, the bounded resend window, the
alert change another replica wrote already, and a Sentinel error in one readable line."""

import threading
import time

import pytest
import redis.sentinel

from numcast import alerts
from numcast.metrics import Metrics
from numcast.redis_conn import describe
from numcast_alerter.broadcast import _already
from numcast_control import outputs
from numcast_control.config import Config
from numcast_control.generator import Generator


class Collect:
    def __init__(self):
        self.lines = []

    def put(self, line):
        self.lines.append(line)


def test_a_generator_without_the_lease_generates_nothing_and_starts_on_time_when_it_gets_it():
    out = Collect()
    generator = Generator(Config(100.0, 0, 1), "control-abc123", [out], Metrics())
    generator.may_run.clear()
    thread = threading.Thread(target=generator.run)
    thread.start()
    time.sleep(0.3)
    assert out.lines == [], "no lease, no values"
    generator.may_run.set()
    time.sleep(0.3)
    generator.stop()
    thread.join(2)
    assert 15 <= len(out.lines) <= 45, "the schedule starts with the lease: no burst for the time without it"


def message(status="firing", summary="value above 95", startsAt="2026-01-01T00:00:00.000Z"):
    return {
        "status": status, "alertname": "High", "labels": {"severity": "warning"},
        "annotations": {"summary": summary}, "startsAt": startsAt, "endsAt": None,
        "fingerprint": alerts.fingerprint("High", {"severity": "warning"}), "origin": "stream",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("held", "change", "already"),
    [
        (None, message(), False),  # nobody wrote it
        (message(startsAt="2026-01-01T00:00:01.000Z"), message(), True),  # the other replica did, a moment earlier
        (message(summary="other"), message(), False),  # something changed: written
        (None, message("resolved"), True),  # the other replica resolved it already
        (message(), message("resolved"), False),
        (b"not json", message(), False),  # junk in the hash is overwritten
    ],
)
def test_a_change_the_active_set_holds_already_is_not_written_twice(held, change, already):
    raw = held if isinstance(held, bytes) or held is None else alerts.encode(held).encode()
    assert _already(raw, change) is already


def test_the_resend_window_is_bounded_in_envelopes_and_in_time(monkeypatch):
    metrics = Metrics()
    counters = {
        name: metrics.counter(name, name, ("path",)) for name in ("published", "errors", "dropped", "reconnects")
    }
    counters["log_errors"] = metrics.counter("log_errors", "x")
    output = outputs.RedisOutput("redis://127.0.0.1:1/0", "numbers", 100, counters)
    monkeypatch.setattr(outputs, "RESEND_MAX_LINES", 1000)
    for n in range(30):
        output._remember([f"{n}-{i}" for i in range(100)])
    assert 1000 <= output._recent_lines < 1100 and output._recent[-1][1][-1] == "29-99"
    monkeypatch.setattr(outputs, "RESEND_SECONDS", 0.0)
    output._remember(["last"])
    assert [batch for _, batch in output._recent] == [["last"]], "older than RESEND_SECONDS: forgotten"


def test_a_sentinel_error_is_one_short_line_with_each_sentinel_s_reason():
    text = (
        "No master found for 'numcast' : <redis.client.Redis(<ConnectionPool(<Connection(host=10.0.0.1,port=26379,"
        "socket_keepalive_options=<object object at 0x7f>)>)>)> - auth:AuthenticationError, <redis.client.Redis(<"
        "ConnectionPool(<Connection(host=10.0.0.2,port=26380)>)>)> - network:ConnectionError"
    )
    assert describe(redis.sentinel.MasterNotFoundError(text)) == (
        "MasterNotFoundError: No master found for 'numcast' "
        "(Sentinels: :26379 auth:AuthenticationError, :26380 network:ConnectionError)"
    )
