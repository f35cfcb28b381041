"""Both supported async modes run the same pipeline: eventlet (the default) and threading."""

import threading
import time

import pytest
from conftest import envelope, eventually, mirror


@pytest.mark.parametrize("mode", ["eventlet", "threading"])
def test_the_pipeline_runs_in_each_async_mode(redis_server, services, mode):
    worker = services("worker", redis_server.url, wait="/readyz", ASYNC_MODE=mode)
    control = services(
        "control",
        redis_server.url,
        RATE_HZ="20",
        ASYNC_MODE=mode,
        TCP_MIRROR_TARGETS=f"127.0.0.1:{worker.env['TCP_PORT']}",
    )
    eventually(lambda: len(worker.json("/api/history")["envelopes"]) >= 10)
    status = worker.json("/api/status")
    assert status["counters"]["accepted"]["redis"] + status["counters"]["accepted"]["tcp"] >= 10
    assert status["counters"]["duplicates"] > 0, "each value came by both paths and was kept once"
    assert f"async_mode={mode}" in worker.logs()
    assert control.stop() == 0 and worker.stop() == 0


def test_threading_mode_under_load_keeps_every_count_exact(redis_server, services):
    """Redis, three TCP connections, catch-ups and HTTP readers, each in a thread of its own, on shared state.

    Sixty sources that each skip 9 seqs at every value keep the gap bookkeeping large and busy (housekeeping
    expires it while the other threads add to it); every value comes four times (Redis and three TCP
    connections), a load that keeps every thread busy for seconds.
    """
    sources, per_source, step = 60, 400, 10
    # Skipping at every value, each source would soon be held apart as jumping (SEQ_MAX_SKIP): allow it all.
    worker = services(
        "worker",
        redis_server.url,
        wait="/readyz",
        ASYNC_MODE="threading",
        MAX_TCP_CLIENTS="4",
        SEQ_MAX_SKIP="4000",
        SEQ_GRACE_SECONDS="0.5",
    )
    lines = [envelope(step * n, source=f"load-{s}") for n in range(1, per_source + 1) for s in range(sources)]
    total, chunk = len(lines), len(lines) // 20

    def paced(send) -> None:
        for start in range(0, total, chunk):
            send(lines[start : start + chunk])
            time.sleep(0.02)

    def send_tcp() -> None:
        connection = mirror(worker)
        paced(lambda part: connection.send([line.encode() for line in part]))
        eventually(lambda: worker.metric("numcast_received_total", 'path="tcp"') >= 3 * total, timeout=60)
        connection.close()

    def publish(part: list[str]) -> None:
        pipe = redis_server.client().pipeline(transaction=False)
        for line in part:
            pipe.publish("numbers", line)
        pipe.execute()

    stop = threading.Event()
    errors: list[Exception] = []

    def read_http() -> None:
        while not stop.is_set():
            try:
                worker.json("/api/history")
                worker.json("/api/status")
            except Exception as exc:  # any failure of a reader is the test's failure
                errors.append(exc)
                return

    threads = [threading.Thread(target=send_tcp) for _ in range(3)] + [threading.Thread(target=read_http)]
    for thread in threads:
        thread.start()
    paced(publish)
    for thread in threads[:3]:
        thread.join(90)
    eventually(lambda: worker.metric("numcast_received_total", 'path="redis"') == total, timeout=60)
    eventually(lambda: worker.json("/api/status")["counters"]["pending"] == 0, message="every skipped seq a gap")
    stop.set()
    threads[3].join(10)
    counters = worker.json("/api/status")["counters"]
    assert not errors
    assert counters["received"] == {"redis": total, "tcp": 3 * total, "replay": 0}
    assert counters["accepted"]["redis"] + counters["accepted"]["tcp"] == total
    assert counters["duplicates"] == 3 * total
    assert counters["gaps"] == sources * (per_source - 1) * (step - 1)
    eventually(lambda: worker.metric("numcast_sink_lines_total") == total)
    assert "task crashed" not in worker.logs() and "Traceback" not in worker.logs()
