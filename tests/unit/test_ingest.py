"""The ingest: one door for every path, and safe when threads share it."""

import json
import sys
import threading
import time

import pytest

from numcast.metrics import FastHistogram
from numcast_worker.ingest import Ingest
from numcast_worker.sequences import Sequences
from numcast_worker.sink import FileSink
from numcast_worker.stats import Stats


class Pushed(list):
    """Stands in for the fan-out: what would go to browsers."""

    push = list.append


def make(tmp_path) -> Ingest:
    sink = FileSink(str(tmp_path / "n.jsonl"), max_bytes=1 << 30, backups=1)
    return Ingest(Sequences(), sink, Pushed(), Stats(), FastHistogram("latency", "", (1.0,)), history_size=100)


def line(seq: int, source: str) -> bytes:
    return json.dumps({"seq": seq, "value": 1.0, "ts": time.time(), "source": source}).encode()


@pytest.fixture
def switch_often():
    """Make threads switch every few microseconds, so an unguarded read-modify-write shows at once."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_threads_feeding_expiring_and_reading_at_once_keep_every_count(tmp_path, switch_often):
    """Threading mode: the subscriber, TCP connections and housekeeping each have a thread of their own."""
    ingest = make(tmp_path)
    sources, per_source, step = 40, 300, 5
    batches = [[line(step * n, f"s{s}") for s in range(sources)] for n in range(1, per_source + 1)]
    errors: list[BaseException] = []
    feeding = threading.Event()

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as exc:  # any exception in a thread is this test's failure
                errors.append(exc)

        return threading.Thread(target=run)

    def feed(path):
        return guarded(lambda: [ingest.accept_batch(batch, path) for batch in batches])

    def housekeeping():
        while feeding.is_set():
            ingest.expire()
            ingest.flush()
            ingest.recent(100)

    feeding.set()
    keeper = guarded(housekeeping)
    keeper.start()
    feeders = [feed("redis"), feed("tcp"), feed("tcp")]
    for thread in feeders:
        thread.start()
    for thread in feeders:
        thread.join(60)
    feeding.clear()
    keeper.join(60)
    assert not errors, errors[:3]
    total = sources * per_source
    stats = ingest.stats
    assert stats.received == {"redis": total, "tcp": 2 * total}
    assert stats.accepted["redis"] + stats.accepted["tcp"] == total == len(ingest.fanout)
    assert stats.duplicates == 2 * total
    ingest.sequences.expire(time.monotonic() + 10)
    assert ingest.sequences.gaps == sources * (per_source - 1) * (step - 1)
    ingest.flush()
    assert ingest.sink.lines == total
