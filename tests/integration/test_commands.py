"""The commands a user types: `numcast up`, `numcast tail`, and configuration errors."""

import os
import re
import signal
import subprocess
import time

import pytest
from conftest import NUMCAST, envelope, eventually, http, publish

from numcast.stack import free_port


def start_up(tmp_path, *args, env=None):
    """`numcast up` with free ports; returns the process and the ports it was given."""
    control, worker, tcp = free_port(), free_port(), free_port()
    while abs(worker - tcp) < 3 or abs(worker - control) < 3:
        worker, tcp = free_port(), free_port()
    argv = [NUMCAST, "up", "--control-port", str(control), "--worker-port", str(worker), "--tcp-port", str(tcp)]
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        [*argv, "--data-dir", str(tmp_path / "data"), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=tmp_path,
    )
    log.close()
    return process, control, worker


def output(tmp_path) -> str:
    return (tmp_path / "up.log").read_text()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_up_runs_the_pipeline_and_stops_every_process(tmp_path, signum):
    process, control, worker = start_up(tmp_path)
    try:
        eventually(lambda: "numcast is up" in output(tmp_path), timeout=30, message="the banner")
        text = output(tmp_path)
        for port in (control, worker, worker + 1):
            assert f"http://127.0.0.1:{port}/" in text
        assert re.search(r"redis-cli -h 127\.0\.0\.1 -p \d+ subscribe numbers", text)
        tail = re.search(r"REDIS_URL=(\S+) (\S+) tail", text)
        assert tail and os.access(tail.group(2), os.X_OK), "the printed tail command runs as printed"
        children = children_of(process.pid)
        assert len(children) == 4, "Redis, the control-plane and two workers"
        for port in (worker, worker + 1):
            eventually(lambda port=port: http("GET", f"http://127.0.0.1:{port}/api/history")[1]["envelopes"])
        process.send_signal(signum)
        assert process.wait(30) == 0
        assert not [pid for pid in children if alive(pid)], "no process left behind"
        assert "stopped the embedded Redis" in output(tmp_path)
        assert (tmp_path / "data" / "machine-1.jsonl").stat().st_size > 0
    finally:
        if process.poll() is None:
            process.kill()


def test_up_uses_a_reachable_redis_url(tmp_path, redis_server):
    process, _, worker = start_up(tmp_path, "--workers", "1", env={"REDIS_URL": redis_server.url})
    try:
        eventually(lambda: "numcast is up" in output(tmp_path), timeout=30)
        assert f"using Redis at {redis_server.url}" in output(tmp_path)
        assert len(children_of(process.pid)) == 2
        publish(redis_server, envelope(1, source="by-hand"))
        eventually(
            lambda: any(
                e["source"] == "by-hand" for e in http("GET", f"http://127.0.0.1:{worker}/api/history")[1]["envelopes"]
            )
        )
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_up_starts_an_embedded_redis_when_the_url_is_unreachable(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    process, _, _ = start_up(tmp_path, "--workers", "1", env={"REDIS_URL": url})
    try:
        eventually(lambda: "numcast is up" in output(tmp_path), timeout=30)
        assert f"{url} is unreachable; starting an embedded Redis" in output(tmp_path)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_tail_prints_the_channel_decoded(redis_server):
    tail = subprocess.Popen(
        [NUMCAST, "tail", "--count", "3"],
        env={**os.environ, "REDIS_URL": redis_server.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # let it subscribe

    def send():
        publish(redis_server, envelope(7, value=42.5, source="control-abc123"), "<b>junk</b>", envelope(8))
        return True

    eventually(send)
    out, _ = tail.communicate(timeout=10)
    lines = out.splitlines()
    assert re.match(r"control-abc123 seq=7 value=42.5 ts=\d\d:\d\d:\d\d\.\d{3} latency=[\d.]+ms", lines[0])
    assert lines[1].startswith("REJECTED not_json")
    assert "seq=8" in lines[2]
    assert tail.returncode == 0


@pytest.mark.parametrize(
    ("command", "env", "words"),
    [
        ("control", {"RATE_HZ": "-3"}, "RATE_HZ=-3.0: must be > 0"),
        ("control", {"PORT": "http"}, "PORT='http': not an integer"),
        ("worker", {"HISTORY_SIZE": "lots"}, "HISTORY_SIZE='lots': not an integer"),
        ("worker", {"ASYNC_MODE": "gevent"}, "ASYNC_MODE='gevent': one of eventlet, threading"),
    ],
)
def test_a_bad_setting_stops_start_up_with_a_message_naming_it(command, env, words):
    result = subprocess.run([NUMCAST, command], env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"invalid setting {words}" in result.stderr


def test_a_taken_port_is_a_clear_error(redis_server, services):
    worker = services("worker", redis_server.url)
    env = {"REDIS_URL": redis_server.url, "PORT": str(free_port()), "TCP_PORT": worker.env["TCP_PORT"]}
    result = subprocess.run([NUMCAST, "worker"], env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "Address already in use" in result.stderr
