"""The replay log, without the TCP mirror: what pub/sub loses, a worker reads back from Redis, once and in order."""

import json
import signal
import time

import pytest
from conftest import Browser, envelope, eventually, pause, sink_seqs

from numcast import replay_log

RATE = "200"


def history(worker) -> list[int]:
    return [e["seq"] for e in worker.json("/api/history")["envelopes"]]


def pending(worker) -> int:
    """Seqs the worker still awaits: once 0, the gap count is final."""
    return worker.json("/api/status")["counters"]["pending"]


def has_all(worker, last: int):
    return lambda: history(worker)[-1:] == [last]


@pytest.fixture
def control(redis_server, services):
    """A control-plane at 200 values/s (or `rate`), started once the test has its worker and browser in place."""
    return lambda rate=RATE: services("control", redis_server.url, RATE_HZ=rate, wait="/readyz")


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


def test_client_kill_ten_times_loses_and_duplicates_nothing(redis_server, services, control):
    worker = services("worker", redis_server.url, wait="/readyz")
    browser = Browser(worker.url)
    running = control()
    client = redis_server.client()
    for kill in range(1, 11):
        heard = worker.metric("numcast_received_total", 'path="redis"')
        eventually(
            lambda heard=heard: worker.metric("numcast_received_total", 'path="redis"') > heard + 20,
            message="subscribed again, and hearing the channel",
        )
        assert client.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        eventually(lambda kill=kill: worker.metric("numcast_reconnects_total", 'path="redis"') == kill, timeout=5)
    last = pause(running)
    eventually(has_all(worker, last), message=f"the worker has seq {last}")
    assert worker.metric("numcast_accepted_total", 'path="replay"') > 0, "the kills lost values on pub/sub"
    eventually(lambda: browser.seqs()[-1:] == [last], message="the browser has the last seq")
    assert browser.seqs() == list(range(1, last + 1)), "every value once, in order, on the socket"
    worker.stop()
    assert sink_seqs(worker.env["SINK_FILE"]) == list(range(1, last + 1)), "and in the file"
    browser.close()


def state(pid: int) -> str:
    """The process state letter in /proc (T: stopped)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def stop_with_lines_unwritten(worker) -> tuple[int, int]:
    """SIGKILL the worker at a moment its file lacks values it had accepted; (last accepted, last in the file)."""
    for _ in range(50):
        accepted = history(worker)[-1]
        worker.signal(signal.SIGSTOP)  # frozen: no flush can come between the look at the file and the kill
        eventually(lambda: state(worker.process.pid) == "T", message="the worker stops")
        in_file = sink_seqs(worker.env["SINK_FILE"])[-1:]
        if in_file and in_file[0] < accepted:
            worker.kill()
            return accepted, in_file[0]
        worker.signal(signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail("the file never lagged behind the worker")


def test_a_worker_killed_and_restarted_gets_the_downtime_from_the_log(redis_server, services, control):
    worker = services("worker", redis_server.url, wait="/readyz", HISTORY_SIZE="5000")
    running = control(rate="1000")  # 600 values before the kill and 500 during the downtime, in about a second
    eventually(lambda: len(history(worker)) >= 600)
    accepted, in_file = stop_with_lines_unwritten(worker)
    downtime_until = eventually(
        lambda: (seq := running.json("/api/status")["seq"]) >= accepted + 500 and seq, message="500 values missed"
    )

    worker.start(wait="/readyz")
    got = history(worker)
    assert got == list(range(max(1, got[-1] - 4999), got[-1] + 1)), "a full history the moment it is ready"
    assert got[0] <= in_file < accepted < downtime_until <= got[-1], "with what the file lacked, and the downtime"
    last = pause(running)
    eventually(has_all(worker, last))
    worker.stop()
    assert sink_seqs(worker.env["SINK_FILE"]) == list(range(1, last + 1)), "the file: every value once, in order"
    assert f"sink resumed path={worker.env['SINK_FILE']} lines_read={in_file}" in worker.logs()


def test_a_fresh_worker_fills_its_history_from_the_log(redis_server, services, control):
    running = control()
    eventually(lambda: redis_server.client().xlen("numbers:log") >= 300)
    worker = services("worker", redis_server.url, wait="/readyz", HISTORY_SIZE="100")
    got = history(worker)
    assert len(got) == 100 and got == list(range(got[0], got[0] + 100))
    assert got[0] > 200, "the newest of the log, not its start"
    last = pause(running)
    eventually(has_all(worker, last))
    worker.stop()
    seqs = sink_seqs(worker.env["SINK_FILE"])
    assert seqs == list(range(seqs[0], last + 1)) and seqs[0] <= got[0], "the file starts with the refill"


def test_redis_restarted_empty_counts_the_loss_as_gaps(redis_server, services):
    quick = {"REDIS_RETRY_MAX_SECONDS": "0.2"}
    worker = services("worker", redis_server.url, wait="/readyz", SEQ_GRACE_SECONDS="0.5", **quick)
    # A small queue: three seconds without Redis overflow it, so values are lost for good.
    running = services("control", redis_server.url, RATE_HZ=RATE, MIRROR_QUEUE="100", wait="/readyz", **quick)
    eventually(lambda: len(history(worker)) >= 100)
    redis_server.kill()
    eventually(lambda: running.metric("numcast_dropped_total", 'path="redis"') >= 300, message="the queue overflows")
    redis_server.restart()
    eventually(lambda: worker.get("/readyz")[1]["redis"] == "subscribed", timeout=10)
    last = pause(running)
    eventually(has_all(worker, last), message="recovery as before: new values flow")
    dropped = running.metric("numcast_dropped_total", 'path="redis"')
    assert dropped >= 300
    eventually(lambda: pending(worker) == 0, message="each missing seq come or counted as a gap")
    gaps = worker.json("/api/status")["counters"]["gaps"]
    worker.stop()
    seqs = sink_seqs(worker.env["SINK_FILE"])
    assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs), "nothing twice, nothing out of order"
    assert len(seqs) + gaps == last, "every seq is in the file or counted as a gap"
    assert gaps >= dropped


def test_a_skipped_seq_is_read_back_from_the_log(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz", SEQ_GRACE_SECONDS="0.5")
    writer = replay_log.Writer(redis_server.client(), "numbers", 1000, "test-1", 1_000)
    writer.publish([envelope(1)])
    for seq in (2, 3, 4):  # logged, but their PUBLISH never reached the worker
        redis_server.client().xadd("numbers:log", {"envelope": envelope(seq)}, id=f"1000-{seq}")
    writer.publish([envelope(5)])
    eventually(lambda: sorted(history(worker)) == [1, 2, 3, 4, 5])
    assert pending(worker) == 0, "nothing left awaited: nothing can become a gap"
    counters = worker.json("/api/status")["counters"]
    assert (counters["gaps"], counters["accepted"]["replay"]) == (0, 3)


def test_the_replay_log_is_trimmed_to_stream_maxlen(redis_server, services):
    running = services("control", redis_server.url, RATE_HZ="2000", STREAM_MAXLEN="1000", wait="/readyz")
    eventually(lambda: running.json("/api/status")["seq"] > 3000)
    assert 1000 <= redis_server.client().xlen("numbers:log") < 1500, "MAXLEN ~ trims in whole nodes"


def test_publish_goes_on_when_the_log_cannot_be_written(redis_server, services):
    redis_server.client().set("numbers:log", "not a stream")
    worker = services("worker", redis_server.url, wait="/readyz")
    running = services("control", redis_server.url, RATE_HZ="50", wait="/readyz")
    eventually(lambda: len(history(worker)) >= 10, message="values still flow")
    assert running.metric("numcast_log_errors_total") >= 10
    eventually(lambda: "envelopes published but not logged key=numbers:log" in running.logs())
    assert worker.metric("numcast_replay_errors_total") >= 1, "the worker's catch-up failed, and it got ready anyway"
    assert "WRONGTYPE" in worker.json("/api/status")["replay"]["last_error"]
