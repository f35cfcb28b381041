"""The ingest: one door for every path, in order behind a catch-up, and safe when threads share it."""

import json
import sys
import threading
import time

import pytest

from numcast import alerts, envelope
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


def line(seq: int, source: str = "a") -> bytes:
    return json.dumps({"seq": seq, "value": 1.0, "ts": time.time(), "source": source}).encode()


def test_live_values_wait_behind_a_catch_up_and_then_go_in_in_order(tmp_path):
    ingest = make(tmp_path)
    ingest.accept_batch([line(1)], "redis")
    ingest.hold()  # a resubscription: what was missed comes first
    ingest.accept_batch([line(5), line(6)], "redis")
    assert [e["seq"] for e in ingest.fanout] == [1], "held while the log is read"
    ingest.accept_batch([line(2), line(3), line(4), line(5)], "replay")
    ingest.release()
    assert [e["seq"] for e in ingest.fanout] == [1, 2, 3, 4, 5, 6]
    assert ingest.stats.duplicates == 1 and ingest.sequences.skips == 0
    ingest.flush()
    assert [json.loads(raw)["seq"] for raw in (tmp_path / "n.jsonl").read_bytes().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_a_hold_never_lasts_past_its_limit(tmp_path, monkeypatch):
    from numcast_worker import ingest as module

    monkeypatch.setattr(module, "HOLD_SECONDS", 0.05)
    ingest = make(tmp_path)
    ingest.hold()
    ingest.accept_batch([line(1)], "tcp")
    time.sleep(0.1)
    ingest.accept_batch([line(2)], "tcp")  # the catch-up is late: everything goes in now
    assert [e["seq"] for e in ingest.fanout] == [1, 2]


def test_a_skip_on_a_live_path_asks_for_a_catch_up(tmp_path):
    ingest = make(tmp_path)
    asked = []
    ingest.on_skip = lambda: asked.append(True)
    ingest.accept_batch([line(1), line(2)], "redis")
    ingest.accept_batch([line(4)], "replay")  # the log itself may have holes: no catch-up for those
    assert not asked
    ingest.accept_batch([line(9)], "tcp")
    assert asked == [True]


def test_a_restart_remembers_the_file_without_writing_it_again(tmp_path):
    ingest = make(tmp_path)
    assert ingest.prime([line(1), line(2), b"junk", line(4)]) == 3
    assert ingest.resume_points() == {"a": 2}, "after 2, since 3 is missing"
    assert [e["seq"] for e in ingest.recent(10)] == [1, 2, 4]
    ingest.accept_batch([line(2), line(3)], "replay")
    assert ingest.stats.duplicates == 1 and ingest.sink.pending == 1


def test_the_sink_gets_the_canonical_encoding_and_never_a_duplicate_key(tmp_path):
    ingest = make(tmp_path)
    spaced = b'{ "source": "a", "ts": 1764150000.5, "value": 1e0, "seq": 1 }'
    twice = b'{"seq": 2, "value": 1.0, "ts": 1764150000.5, "source": "a", "value": 99999}'
    assert ingest.accept_batch([spaced, twice], "tcp") == 1
    assert ingest.stats.rejected["tcp", "duplicate_key"] == 1
    ingest.flush()
    assert (tmp_path / "n.jsonl").read_bytes() == b'{"seq":1,"value":1.0,"ts":1764150000.5,"source":"a"}\n'


@pytest.mark.parametrize("logged", [{"real": 10}, None], ids=["checked against the log", "log unreadable"])
def test_a_poisoned_line_in_the_file_is_not_trusted_at_start(tmp_path, logged):
    """The file as an attack on an older version left it: 64 made-up sources, then the real one far ahead."""
    ingest = make(tmp_path)
    poisoned = [line(n, "real") for n in range(1, 11)] + [line(1, f"fake-{n}") for n in range(64)]
    ingest.prime([*poisoned, line(10**12, "real")], logged)
    assert ingest.resume_points()["real"] == 10, "resumes where the real source really is"
    reason = "beyond_log" if logged else "far_ahead"
    assert ingest.stats.quarantined["sink", reason] == 1
    ingest.accept_batch([line(11, "real")], "redis")
    assert [e["seq"] for e in ingest.fanout] == [11], "the real values go on"


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
    # Every value skips `step - 1` seqs, and they stay awaited: let them all be taken, none held apart as a jump.
    ingest.sequences.max_skip = per_source * step
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
            ingest.resume_points()

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
    assert stats.received == {"redis": total, "tcp": 2 * total, "replay": 0}
    assert stats.accepted["redis"] + stats.accepted["tcp"] == total == len(ingest.fanout)
    assert stats.duplicates == 2 * total
    ingest.sequences.expire(time.monotonic() + 10)
    assert ingest.sequences.gaps == sources * (per_source - 1) * (step - 1)
    ingest.flush()
    assert ingest.sink.lines == total


def test_every_rejection_and_mirror_close_reason_is_served_at_zero_from_the_start():
    """A labelled counter that appears at its first increment has no increase(): NumcastRejectedMessages needs 0."""
    samples = {
        (family.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in Stats().collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    for path in ("redis", "tcp", "replay"):
        for reason in envelope.REASONS:
            assert samples[("numcast_rejected", (("path", path), ("reason", reason)))] == 0, (path, reason)
    for reason in alerts.REASONS:
        assert samples[("numcast_rejected", (("path", "alerts"), ("reason", reason)))] == 0, reason
    for reason in ("bad_mac", "too_long", "invalid", "idle", "evicted", "refused"):
        assert samples[("numcast_tcp_closed", (("reason", reason),))] == 0, reason
    assert Stats().to_dict()["rejected"] == {}, "the status counts only what was rejected"
