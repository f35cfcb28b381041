"""Faults: Redis dies, drops only the subscriber, or goes silent; processes get SIGTERM. Nothing is lost."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import redis
from conftest import NUMCAST, envelope, eventually, http, publish

from numcast import presence


def seqs(worker) -> list[int]:
    return [e["seq"] for e in worker.json("/api/history")["envelopes"]]


def ready(service) -> bool:
    return service.get("/readyz")[0] == 200


def redis_state(service) -> str:
    """What /readyz reports of Redis: the worker says subscribed or down, the control-plane up or down."""
    return service.get("/readyz")[1]["redis"]


def published_then_seen(redis_server, worker, seq: int, timeout: float = 10.0) -> float:
    """Publish `seq` until the worker has it; return how long that took."""
    started = time.monotonic()

    def arrived():
        try:
            publish(redis_server, envelope(seq))
        except redis.exceptions.ConnectionError as exc:
            if type(exc) is not redis.exceptions.ConnectionError:
                raise  # a Redis that answers and refuses (a password, an ACL), or loads: a cause to show, not a wait
            return False  # refused or reset: Redis is not back yet
        return seq in seqs(worker)

    eventually(arrived, timeout=timeout, interval=0.1, message=f"seq {seq} reaches the worker")
    return time.monotonic() - started


def test_redis_killed_and_restarted(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz")
    control = services("control", redis_server.url, RATE_HZ="10", wait="/readyz")
    publish(redis_server, envelope(1))
    eventually(lambda: 1 in seqs(worker))

    redis_server.kill()
    eventually(
        lambda: redis_state(worker) == redis_state(control) == "down", timeout=5, message="/readyz reports the outage"
    )
    assert ready(worker) and ready(control), "an outage of Redis takes no replica out of its Service"
    assert worker.metric("numcast_subscribed") == 0 and control.metric("numcast_connected", 'path="redis"') == 0
    assert worker.json("/api/status")["redis"]["subscribed"] is False
    assert worker.json("/healthz") == control.json("/healthz") == {"status": "ok"}
    time.sleep(1.5)  # both keep running, backing off
    redis_server.restart()

    eventually(
        lambda: (redis_state(worker), redis_state(control)) == ("subscribed", "up"),
        timeout=6,
        message="both reconnect within seconds",
    )
    assert worker.metric("numcast_subscribed") == 1 and control.metric("numcast_connected", 'path="redis"') == 1
    took = published_then_seen(redis_server, worker, 2)
    assert took < 5
    assert worker.metric("numcast_reconnects_total", 'path="redis"') >= 1
    assert worker.process.poll() is None and control.process.poll() is None


def test_only_the_subscriber_is_killed(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz")
    assert redis_server.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
    eventually(lambda: worker.metric("numcast_reconnects_total", 'path="redis"') >= 1, timeout=5)
    assert published_then_seen(redis_server, worker, 1) < 5


def test_the_pubsub_output_buffer_limit_is_hit_by_a_burst(redis_server, services):
    worker = services("worker", redis_server.url, wait="/readyz")
    client = redis_server.client()
    client.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
    pipe = client.pipeline(transaction=False)
    for _ in range(20_000):
        pipe.publish("numbers", "x" * 900)  # 18 MB at once: more than the subscriber can drain under 64 kB
    pipe.execute()
    client.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
    eventually(
        lambda: worker.metric("numcast_reconnects_total", 'path="redis"') >= 1, timeout=10, message="disconnect noticed"
    )
    assert published_then_seen(redis_server, worker, 1) < 5
    assert worker.process.poll() is None


def test_a_silent_connection_is_noticed_not_trusted(redis_server, services):
    """Redis frozen (SIGSTOP): the socket stays open but nothing comes back, not even a PONG."""
    worker = services("worker", redis_server.url, wait="/readyz")
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        eventually(lambda: redis_state(worker) == "down", timeout=6, message="deafness detected by the missing PONG")
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    eventually(lambda: redis_state(worker) == "subscribed", timeout=8)
    assert published_then_seen(redis_server, worker, 1) < 5


def test_started_while_redis_is_down_the_control_page_serves_and_the_mirror_makes_a_worker_ready(services):
    from numcast.local import free_port

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    worker = services("worker", nowhere)
    control = services(
        "control", nowhere, RATE_HZ="20", TCP_MIRROR_TARGETS=f"127.0.0.1:{worker.env['TCP_PORT']}", wait="/readyz"
    )
    assert control.get("/readyz") == (200, {"status": "ready", "redis": "down"})
    assert control.get("/")[0] == 200, "the page shows the outage"
    eventually(lambda: ready(worker), message="a first value over the TCP mirror")
    assert worker.get("/readyz")[1] == {"status": "ready", "redis": "down", "sink": "ok", "history": "pending"}
    assert worker.json("/api/status")["counters"]["accepted"]["tcp"] > 0


def test_a_worker_is_not_ready_before_it_serves(services):
    from numcast.local import free_port

    worker = services("worker", f"redis://127.0.0.1:{free_port()}/0")
    eventually(lambda: "reconnecting url=" in worker.logs(), message="its first try to reach Redis failed")
    assert worker.get("/readyz") == (503, {"status": "not ready", "redis": "down", "sink": "ok", "history": "pending"})


def test_the_tcp_mirror_keeps_the_worker_complete_while_redis_is_down(redis_server, services):
    worker = services(
        "worker", redis_server.url, wait="/readyz", SEQ_GRACE_SECONDS="0.5", REDIS_RETRY_MAX_SECONDS="0.2"
    )
    control = services(
        "control", redis_server.url, RATE_HZ="20", TCP_MIRROR_TARGETS=f"127.0.0.1:{worker.env['TCP_PORT']}"
    )
    eventually(lambda: len(seqs(worker)) >= 5)
    redis_server.kill()
    down_at = max(seqs(worker))
    eventually(lambda: max(seqs(worker)) >= down_at + 40, timeout=6, message="values keep coming over TCP")
    redis_server.restart()
    eventually(lambda: redis_state(worker) == "subscribed", timeout=6)
    eventually(lambda: worker.json("/api/status")["counters"]["pending"] == 0, message="nothing left awaited")
    got = seqs(worker)
    assert sorted(got) == list(range(min(got), max(got) + 1)), "every seq exactly once"
    counters = worker.json("/api/status")["counters"]
    assert counters["gaps"] == 0
    assert counters["accepted"]["tcp"] > 0
    assert control.process.poll() is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_is_a_clean_shutdown(redis_server, services, signum):
    worker = services("worker", redis_server.url, wait="/readyz")
    control = services(
        "control", redis_server.url, RATE_HZ="50", TCP_MIRROR_TARGETS=f"127.0.0.1:{worker.env['TCP_PORT']}"
    )
    eventually(lambda: len(seqs(worker)) >= 20)
    for service in (control, worker):
        started = time.monotonic()
        service.signal(signum)
        assert service.process.wait(10) == 0
        assert time.monotonic() - started < 5
    assert f"shutting down signal={signal.Signals(signum).name}" in worker.logs()
    written = int(re.search(r"worker stopped lines_written=(\d+)", worker.logs()).group(1))
    with open(worker.env["SINK_FILE"]) as sink:
        lines = [json.loads(line) for line in sink]
    assert len(lines) == written >= 20, "every accepted value is in the file after shutdown"
    assert len(lines) == len({(e["source"], e["seq"]) for e in lines}), "and each once"
    conn = redis_server.client()
    assert presence.workers(conn, "numbers") == [], "a clean stop withdraws from presence"
    assert all(conn.pttl(key) <= 1000 for key in conn.keys("numcast:presence:*")), "what is left goes within 1 s"


def test_a_wrong_redis_password_is_logged_never_shown_and_reported(redis_server, services):
    redis_server.client().config_set("requirepass", "s3cret")
    in_url = redis_server.url.replace("redis://", "redis://:wr0ng-in-url@")
    worker = services("worker", in_url)
    control = services("control", redis_server.url, REDIS_PASSWORD="wr0ng-in-env")
    eventually(lambda: "error=AuthenticationError" in worker.logs(), message="the worker logs why")
    eventually(lambda: "redis output unreachable" in control.logs() and "AuthenticationError" in control.logs())
    assert f"url={redis_server.url} " in worker.logs(), "the URL is logged without its password"
    assert "wr0ng-in-url" not in worker.logs() + str(worker.json("/api/status"))
    assert "wr0ng-in-env" not in control.logs() + str(control.json("/api/status"))
    assert not ready(worker), "a worker that never subscribed (and has no mirror) serves nothing yet"
    assert ready(control) and redis_state(control) == "down", "the control page stays up to show the outage"
    good = services("worker", redis_server.url, wait="/readyz", REDIS_PASSWORD="s3cret")
    assert good.json("/readyz")["redis"] == "subscribed"


@pytest.mark.parametrize("mode", ["eventlet", "threading"])
def test_a_port_already_taken_stops_the_start_instead_of_sharing_it(redis_server, services, mode):
    # Eventlet's listen() sets SO_REUSEPORT unless told not to: a second process on the same port would then get
    # half of the first one's connections, and nobody would know.
    first = services("control", redis_server.url, ASYNC_MODE=mode)
    env = {**os.environ, **first.env, "ASYNC_MODE": mode}
    second = subprocess.run([NUMCAST, "control"], env=env, capture_output=True, text=True, timeout=30)
    assert second.returncode == 1, second.stderr
    assert "numcast control: cannot start" in second.stderr and "Address already in use" in second.stderr
    for _ in range(20):  # every connection reaches the first, which alone listens there
        assert http("GET", first.url + "/api/status")[1]["source"] == first.json("/api/status")["source"]
    assert first.process.poll() is None
