"""One envelope must not silence a source: a seq far ahead is held apart, and the real values keep coming."""

import time

from conftest import Browser, envelope, eventually, mirror, publish, sink_seqs

from numcast import replay_log

SPOOF = 2**53  # the largest seq an envelope may carry

STALE = 1.0  # SEQ_STALE_SECONDS where a test waits it out (5 s by default)


def history(worker) -> list[int]:
    return [e["seq"] for e in worker.json("/api/history")["envelopes"]]


def test_a_spoofed_seq_far_ahead_does_not_silence_the_running_control_plane(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz")
    control = services("control", redis_server.url, RATE_HZ="20", wait="/readyz")
    browser = Browser(worker.url)
    try:
        source = control.json("/api/status")["source"]
        eventually(lambda: len(history(worker)) >= 5 and browser.seqs(), message="the real values flow")
        spoof = envelope(SPOOF, value=-1.0, source=source)
        publish(redis_server, spoof)  # someone who may PUBLISH, but not write the replay log
        signed = mirror(worker)  # and someone who holds the mirror key
        signed.send([spoof.encode()])
        eventually(lambda: worker.json("/api/status")["counters"]["quarantined"] == 2, message="both copies held apart")
        after = control.json("/api/status")["seq"]

        # 40 values at 20 Hz after the spoof; before the fix only the first of them was shown.
        def real(seqs):
            return len([seq for seq in seqs if after < seq < SPOOF])

        eventually(lambda: real(history(worker)) >= 40, message="the real values go on after the spoof")
        eventually(lambda: real(browser.seqs()) >= 40, message="and reach the browser")
        eventually(lambda: real(sink_seqs(worker.env["SINK_FILE"])) >= 40, message="and the sink file")
        for name, seqs in [
            ("history", history(worker)),
            ("browser", browser.seqs()),
            ("sink", sink_seqs(worker.env["SINK_FILE"])),
        ]:
            shown = [seq for seq in seqs if seq > after]
            assert shown == list(range(after + 1, after + 1 + len(shown))), f"{name}: every real seq, once, in order"
            assert SPOOF not in seqs, f"{name}: the spoofed value is never shown"
        assert worker.metric("numcast_quarantined_total", 'path="redis",reason="far_ahead"') == 1
        assert worker.metric("numcast_quarantined_total", 'path="tcp",reason="far_ahead"') == 1
        assert worker.json("/api/status")["counters"]["quarantined"] == 2
        assert worker.metric("numcast_tcp_closed_total", 'reason="invalid"') == 0, "a jump is valid: no close"
        assert "value held apart" in worker.logs()
        signed.close()
    finally:
        browser.close()


def test_a_far_jump_the_replay_log_holds_is_taken(redis_server, services):
    """A worker cut off for long: what it hears next is far ahead, and the log confirms it."""
    worker = services("worker", redis_server.url, wait="/readyz")
    writer = replay_log.Writer(redis_server.client(), "numbers", 100_000, "test-1", 1_000)
    writer.publish([envelope(seq) for seq in range(1, 11)])
    eventually(lambda: history(worker) == list(range(1, 11)))
    pipe = redis_server.client().pipeline(transaction=False)
    for seq in range(11, 5001):  # logged, but their PUBLISH never reached this worker
        pipe.xadd("numbers:log", {"envelope": envelope(seq)}, id=f"1000-{seq}")
    pipe.execute()
    writer.publish([envelope(5001)])
    eventually(lambda: history(worker)[-1:] == [5001], message="the jump is taken once the log confirms it")
    writer.publish([envelope(5002)])
    eventually(lambda: history(worker)[-1:] == [5002], message="and the live values after it")
    assert sink_seqs(worker.env["SINK_FILE"])[:10] == list(range(1, 11))
    eventually(lambda: sink_seqs(worker.env["SINK_FILE"]) == list(range(1, 5003)), message="nothing lost, in order")
    assert worker.metric("numcast_quarantined_total", 'path="redis",reason="far_ahead"') <= 1
    assert worker.json("/api/status")["counters"]["gaps"] == 0


def test_a_far_jump_with_no_log_is_taken_on_continuity_once_the_source_was_silent(redis_server, services):
    """No replay log to ask (a publish-only deployment): consecutive seqs confirm a jump, after STALE_SECONDS."""
    worker = services("worker", redis_server.url, wait="/readyz", SEQ_STALE_SECONDS=str(STALE))
    publish(redis_server, *(envelope(seq) for seq in range(1, 11)))
    eventually(lambda: history(worker) == list(range(1, 11)))
    time.sleep(STALE + 0.2)  # the scenario: the source's own line silent longer than SEQ_STALE_SECONDS
    publish(redis_server, *(envelope(seq) for seq in range(9001, 9006)))
    eventually(lambda: 9005 in history(worker), message="the jump is taken on continuity")
    assert history(worker) == [*range(1, 11), 9003, 9004, 9005], "the first two, unconfirmed then, are gaps"
    assert worker.metric("numcast_quarantined_total", 'path="redis",reason="far_ahead"') == 2
    assert worker.metric("numcast_jumps_confirmed_total") == 1


def test_made_up_sources_cannot_black_out_the_real_one_even_after_a_restart(redis_server, services):
    """64 made-up sources (one more than the worker follows beside the real one), then the real source far ahead."""
    worker = services("worker", redis_server.url, wait="/readyz")
    control = services("control", redis_server.url, RATE_HZ="50", wait="/readyz")
    source = control.json("/api/status")["source"]
    eventually(lambda: len(history(worker)) >= 5, message="the real values flow")
    publish(redis_server, *(envelope(1, source=f"made-up-{n}") for n in range(64)))
    publish(redis_server, envelope(10**12, value=666.0, source=source))
    after = control.json("/api/status")["seq"]

    def real(seqs, since=after):
        return [seq for seq in seqs if since < seq < 10**12]

    eventually(lambda: len(real(history(worker))) > 10, message="the real values go on after the flood")
    assert worker.metric("numcast_quarantined_total", 'path="redis",reason="far_ahead"') == 1
    assert worker.metric("numcast_quarantined_total", 'path="redis",reason="sources_full"') == 1
    worker.stop()
    with open(worker.env["SINK_FILE"], "a") as sink:  # the line the version before this fix wrote
        sink.write(envelope(10**12, value=666.0, source=source) + "\n")
    again = services(
        "worker", redis_server.url, wait="/readyz", SINK_FILE=worker.env["SINK_FILE"], WORKER_NAME="machine-1"
    )
    restarted = control.json("/api/status")["seq"]
    eventually(lambda: len(real(history(again), restarted)) > 10, message="and after a restart")
    assert again.metric("numcast_quarantined_total", 'path="sink",reason="beyond_log"') == 1, "the line not trusted"
    seqs = real(sink_seqs(worker.env["SINK_FILE"]))
    assert seqs == list(range(after + 1, after + 1 + len(seqs))), "every real seq in the file, once, in order"
    assert 10**12 not in history(again)
