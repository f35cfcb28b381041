"""The replay log's contract, written and read by the library against a real Redis: ids, runs, pages."""

import json
import time

from numcast import replay_log

A, B = "control-aaaaaa", "control-bbbbbb"


def line(seq: int, source: str) -> str:
    return json.dumps({"seq": seq, "value": 1.5, "ts": 1764150000.5, "source": source}, separators=(",", ":"))


def received(pubsub, count: int) -> list[int]:
    """The seqs of the next `count` messages on the channel (fewer if they do not come within 2 s)."""
    seqs, deadline = [], time.monotonic() + 2
    while len(seqs) < count and time.monotonic() < deadline:
        if message := pubsub.get_message(timeout=0.1):
            seqs.append(json.loads(message["data"])["seq"])
    return seqs


def ids(conn) -> list[str]:
    return [entry_id.decode() for entry_id, _ in conn.xrange("numbers:log")]


def test_ids_are_run_and_seq_and_a_batch_sent_again_goes_out_once(redis_server):
    conn = redis_server.client()
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("numbers")
    writer = replay_log.Writer(conn, "numbers", 1000, A, run=5_000)
    assert writer.publish([line(1, A), line(2, A)]) == 0
    assert writer.publish([line(2, A), line(3, A)]) == 0  # the reply to the first was lost: sent again
    assert ids(conn) == ["5000-1", "5000-2", "5000-3"]
    assert received(pubsub, 4) == [1, 2, 3], "what the log holds was published already"


def test_after_a_reconnect_the_control_plane_sends_again_what_a_restarted_redis_lost(redis_server):
    """Redis may acknowledge a batch and die before it leaves for any subscriber: the log restarts empty."""
    from numcast.metrics import Metrics
    from numcast_control.outputs import RedisOutput

    metrics = Metrics()
    counters = {name: metrics.counter(name, "", ("path",)) for name in ("published", "errors", "dropped", "reconnects")}
    counters["log_errors"] = metrics.counter("log_errors", "")
    output = RedisOutput(redis_server.url, "numbers", 100, counters, {"maxlen": 1000, "source": A, "run": 5_000})
    conn = redis_server.client()
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("numbers")
    output.send([line(1, A), line(2, A)])
    output.close()  # a connection lost, Redis still holding everything: nothing goes out twice
    output.send([line(3, A)])
    assert received(pubsub, 4) == [1, 2, 3]
    conn.flushall()  # as a Redis restarted empty
    output.close()
    output.send([line(4, A)])
    assert received(pubsub, 4) == [1, 2, 3, 4], "what may have died with Redis goes out again (workers drop copies)"
    assert ids(conn) == ["5000-1", "5000-2", "5000-3", "5000-4"]


def test_a_new_run_starts_above_the_newest_id_whatever_its_clock(redis_server):
    conn = redis_server.client()
    replay_log.Writer(conn, "numbers", 1000, A, run=5_000).publish([line(1, A), line(2, A)])
    replay_log.Writer(conn, "numbers", 1000, B, run=4_000).publish([line(1, B)])  # a clock behind
    assert ids(conn) == ["5000-1", "5000-2", "5001-1"]


def test_a_reader_walks_back_to_the_newest_run_it_knows_and_reads_in_pages(redis_server):
    conn = redis_server.client()
    replay_log.Writer(conn, "numbers", 1000, A, run=5_000).publish([line(n, A) for n in range(1, 6)])
    replay_log.Writer(conn, "numbers", 1000, B, run=6_000).publish([line(n, B) for n in range(1, 4)])
    reader = replay_log.Reader(conn, "numbers")
    assert reader.start_after({A: 3}.get) == "5000-3", "past every run of a source it does not know"
    assert reader.start_after({A: 3, B: 1}.get) == "6000-1", "the newest run it knows"
    assert reader.start_after({"control-cccccc": 1}.get) is None
    pages = list(reader.pages("5000-3", 2))
    assert [[json.loads(raw)["seq"] for raw in page] for page in pages] == [[4, 5], [1, 2], [3]]
    assert [json.loads(raw)["seq"] for raw in reader.newest(4, 3)] == [5, 1, 2, 3]
    assert [len(page) for page in reader.pages("-", 1000)] == [8]


def test_a_log_that_is_not_a_stream_never_stops_the_publish(redis_server):
    conn = redis_server.client()
    conn.set("numbers:log", "something else")
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("numbers")
    assert replay_log.Writer(conn, "numbers", 1000, A, run=5_000).publish([line(1, A), line(2, A)]) == 2
    assert received(pubsub, 2) == [1, 2]


def test_two_writers_at_once_log_everything_once_in_id_order(redis_server):
    """WATCH: a writer whose read of the newest entry went stale before its EXEC reads again, so ids only grow."""
    import threading

    conn = redis_server.client()
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("numbers")
    failed: list[int] = []

    def write(source: str) -> None:
        writer = replay_log.Writer(redis_server.client(), "numbers", 10_000, source, run=5_000)
        failed.extend(writer.publish([line(n, source), line(n + 1, source)]) for n in range(1, 200, 2))

    threads = [threading.Thread(target=write, args=(source,)) for source in (A, B)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(failed) == 0, "every envelope logged"
    entries = conn.xrange("numbers:log")
    keys = [tuple(map(int, entry_id.split(b"-"))) for entry_id, _ in entries]
    assert keys == sorted(set(keys)) and len(keys) == 400
    logged = [json.loads(fields[b"envelope"]) for _, fields in entries]
    for source in (A, B):
        assert sorted(e["seq"] for e in logged if e["source"] == source) == list(range(1, 201)), source
    assert len(received(pubsub, 400)) == 400, "each published"
