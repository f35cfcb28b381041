"""The generator's schedule and the bounded outbox between it and each output."""

import json
import threading
import time

from numcast.metrics import Metrics
from numcast_control.config import Config
from numcast_control.generator import Generator, new_source
from numcast_control.outbox import Outbox


class Collect:
    """An output that keeps what it is given, and when."""

    def __init__(self):
        self.lines = []
        self.times = []

    def put(self, line):
        self.lines.append(line)
        self.times.append(time.monotonic())


def run_for(generator, seconds):
    thread = threading.Thread(target=generator.run)
    thread.start()
    time.sleep(seconds)
    generator.stop()
    thread.join(2)
    return thread


def test_rate_is_kept_without_drift():
    out = Collect()
    generator = Generator(Config(200.0, 0, 1), "test-1", [out], Metrics())
    run_for(generator, 1.0)
    # value n is due at start + n/rate: however late a wake-up, the values made by then match the schedule
    # (a loop that slept 1/rate after each send would fall behind by the cost of every send)
    elapsed = out.times[-1] - out.times[0]
    assert len(out.lines) >= 150
    assert abs(len(out.lines) - (1 + 200 * elapsed)) <= 2


def test_seq_grows_by_one_and_values_stay_in_range():
    out = Collect()
    generator = Generator(Config(500.0, -2, 3), "test-1", [out], Metrics())
    run_for(generator, 0.3)
    envelopes = [json.loads(line) for line in out.lines]
    assert [e["seq"] for e in envelopes] == list(range(1, len(envelopes) + 1))
    assert all(-2 <= e["value"] <= 3 and e["source"] == "test-1" for e in envelopes)


def test_paused_generates_nothing_and_resume_restarts_the_schedule():
    out = Collect()
    generator = Generator(Config(100.0, 0, 1, paused=True), "test-1", [out], Metrics())
    thread = threading.Thread(target=generator.run)
    thread.start()
    time.sleep(0.3)
    assert out.lines == []
    generator.reconfigure(Config(100.0, 0, 1, paused=False))
    time.sleep(0.3)
    generator.stop()
    thread.join(2)
    assert 15 <= len(out.lines) <= 45


def test_each_run_is_a_new_source():
    assert new_source("control") != new_source("control")
    assert new_source("control").startswith("control-")


def test_outbox_drops_the_oldest_and_counts():
    drops = []
    box = Outbox(3, drops.append)
    for n in range(5):
        box.put(n)
    assert box.take(10, timeout=0) == [2, 3, 4]
    assert box.dropped == 2 and sum(drops) == 2


def test_outbox_requeue_keeps_order_within_the_limit():
    box = Outbox(4)
    box.put(1)
    box.put(2)
    batch = box.take(10, timeout=0)
    box.put(3)
    box.requeue(batch)
    assert box.take(10, timeout=0) == [1, 2, 3]
    box.put(10)
    box.put(11)
    box.put(12)
    box.requeue([7, 8, 9])
    assert box.take(10, timeout=0) == [9, 10, 11, 12]
    assert box.dropped == 2


def test_backoff_doubles_up_to_its_cap_with_jitter_and_resets():
    from numcast.redis_conn import Backoff

    backoff = Backoff(base=0.1, cap=2.0)
    delays = [backoff.next() for _ in range(40)]
    assert 0.05 <= delays[0] <= 0.1 and 0.1 <= delays[1] <= 0.2
    assert all(1.0 <= d <= 2.0 for d in delays[5:]), "capped, never zero"
    assert backoff.attempt == 40
    backoff.reset()
    assert backoff.next() <= 0.1
