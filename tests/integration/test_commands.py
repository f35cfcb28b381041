"""The commands a user types: `numcast up`, `numcast tail`, and configuration errors."""

import json
import os
import random
import re
import select
import signal
import socket
import subprocess

import pytest
import redis
from conftest import NUMCAST, envelope, eventually, http, publish

from numcast.envelope import decode
from numcast.local import free_port


def free_block(count: int) -> int:
    """The first of `count` consecutive free ports, below the kernel's ephemeral range.

    Ports from bind(0) lie inside that range, where every outgoing connection also takes its source port; as
    `numcast up` starts five processes that poll each other, worker + 1 could be taken before machine-2 binds it.
    """
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        ephemeral = int(ports.read().split()[0])
    while True:
        base = random.randrange(10000, ephemeral - count)
        if all(port_free(base + n) for n in range(count)):
            return base


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Up:
    """`numcast up` on free ports, in `tmp_path`; its log is `up.log` there."""

    command = "up"

    def __init__(self, tmp_path, *args: str, env: dict | None = None) -> None:
        base = free_block(8)
        self.control, self.worker, tcp, self.alerter = base, base + 2, base + 4, base + 6  # workers take +1 too
        ports = ["--control-port", str(self.control), "--worker-port", str(self.worker), "--tcp-port", str(tcp)]
        ports += ["--alerter-port", str(self.alerter)]
        self.log = tmp_path / "up.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [NUMCAST, "up", *ports, "--data-dir", str(tmp_path / "data"), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=tmp_path,
            )

    def output(self) -> str:
        return self.log.read_text()

    def logs(self) -> str:
        """The log, as conftest's failure report reads a service's."""
        return self.output()

    def history(self, port: int) -> list[dict]:
        return http("GET", f"http://127.0.0.1:{port}/api/history")[1]["envelopes"]

    def stop(self, signum: int = signal.SIGINT) -> int:
        self.process.send_signal(signum)
        return self.process.wait(30)


@pytest.fixture
def up(tmp_path, request):
    """Start `numcast up` with the given arguments and wait for its banner; killed after the test if still up."""
    started: list[Up] = []
    request.node.numcast_services = started  # a failed test's report shows the log

    def start(*args: str, env: dict | None = None) -> Up:
        running = Up(tmp_path, *args, env=env)
        started.append(running)
        eventually(lambda: "numcast is up" in running.output(), timeout=30, message="the banner")
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()


def watch_as_viewer(password: str, cli: str, port: int) -> bytes:
    """Run the banner's redis-cli command and return the envelope it shows; the viewer's PUBLISH and FLUSHALL get
    NOPERM."""
    env = {**os.environ, "REDISCLI_AUTH": password}
    command = [cli, "--user", "viewer", "-h", "127.0.0.1", "-p", str(port)]
    watching = subprocess.Popen([*command, "subscribe", "numbers", "alerts"], env=env, stdout=subprocess.PIPE)
    try:
        # subscribe, numbers, 1, subscribe, alerts, 2, then message, numbers, <envelope>
        lines = [watching.stdout.readline().removesuffix(b"\n") for _ in range(9)]
    finally:
        watching.kill()
        watching.wait()
    assert lines[6:8] == [b"message", b"numbers"], lines
    for refused in (["publish", "numbers", "forged"], ["flushall"]):
        result = subprocess.run([*command, *refused], env=env, capture_output=True, text=True, timeout=10)
        assert "NOPERM" in result.stdout + result.stderr, (refused, result)
    return lines[8]


def published(pids: list[int], port: int) -> list[bytes]:
    """Every envelope in the replay log (the messages exactly as published), read as the user `numcast up` gave
    its worker: the name and password file in the worker process's environment."""
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if b"worker" not in cmdline.read().split(b"\0"):
                continue
        with open(f"/proc/{pid}/environ", "rb") as environ:
            env = dict(item.split(b"=", 1) for item in environ.read().split(b"\0") if b"=" in item)
        with open(env[b"REDIS_PASSWORD_FILE"]) as password:
            conn = redis.Redis(port=port, username=env[b"REDIS_USERNAME"].decode(), password=password.read().strip())
        return [fields[b"envelope"] for _, fields in conn.xrange("numbers:log")]
    raise AssertionError("no worker among the processes of numcast up")


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
def test_up_runs_the_pipeline_and_stops_every_process(up, tmp_path, signum):
    running = up()
    text = running.output()
    for port in (running.control, running.worker, running.worker + 1):
        assert f"http://127.0.0.1:{port}/" in text
    assert f"alerter (built-in rules)   http://127.0.0.1:{running.alerter}/api/alerts" in text
    # The embedded Redis has a user per role: what the banner prints runs as the viewer, who may only subscribe.
    viewer = re.search(
        r"REDISCLI_AUTH=(\w+) (\S+) --user viewer -h 127\.0\.0\.1 -p (\d+) subscribe numbers alerts", text
    )
    assert viewer, "the viewer's redis-cli command"
    shown = watch_as_viewer(viewer.group(1), viewer.group(2), int(viewer.group(3)))
    # A token of its own for each run: in the control page's link and in a curl command that works as printed.
    (token,) = re.findall(rf"http://127\.0\.0\.1:{running.control}/#token=([\w-]+)", text)
    curl = re.search(r"curl -X PATCH (\S+) -H 'Authorization: Bearer ([\w-]+)' .* -d '(.+)'", text)
    assert curl and curl.group(2) == token and len(token) >= 32
    assert http("PATCH", curl.group(1), json.loads(curl.group(3)))[0] == 401, "no change without the token"
    status, body = http("PATCH", curl.group(1), json.loads(curl.group(3)), {"Authorization": f"Bearer {token}"})
    assert status == 200 and body["config"]["rate_hz"] == 5
    webhook = f"http://127.0.0.1:{running.alerter}/api/alertmanager"
    assert http("POST", webhook, {"version": "4", "alerts": []}, {"Authorization": f"Bearer {token}"})[0] == 401
    tail = re.search(r"REDIS_USERNAME=viewer REDIS_PASSWORD=(\w+) REDIS_URL=(\S+) (\S+) tail", text)
    assert tail and os.access(tail.group(3), os.X_OK), "the printed tail command runs as printed"
    env = {**os.environ, "REDIS_USERNAME": "viewer", "REDIS_PASSWORD": tail.group(1), "REDIS_URL": tail.group(2)}
    tailed = subprocess.run(
        [tail.group(3), "tail", "--count", "1"], env=env, capture_output=True, text=True, timeout=20
    )
    assert tailed.returncode == 0 and " seq=" in tailed.stdout, tailed.stderr
    children = children_of(running.process.pid)
    assert len(children) == 5, "Redis, the control-plane, two workers and the alerter"
    decode(shown)  # a valid envelope, whole: byte for byte one the control-plane published
    assert shown in published(children, int(viewer.group(3))), shown
    rules = http("GET", f"http://127.0.0.1:{running.alerter}/api/alerts")[1]["rules"]
    assert [rule["alert"] for rule in rules] == ["NumcastValueHigh", "NumcastStreamSilent"], "the built-in rules"
    for port in (running.worker, running.worker + 1):
        eventually(lambda port=port: running.history(port))
    assert running.stop(signum) == 0
    assert not [pid for pid in children if alive(pid)], "no process left behind"
    assert "stopped the embedded Redis" in running.output()
    sink = (tmp_path / "data" / "machine-1.jsonl").read_bytes().splitlines()
    assert shown in sink, "the worker's file has the envelope redis-cli showed, byte for byte"


def test_up_uses_a_reachable_redis_url(up, redis_server):
    running = up("--workers", "1", env={"REDIS_URL": redis_server.url})
    assert f"using Redis at {redis_server.url}" in running.output()
    assert len(children_of(running.process.pid)) == 3, "a worker and the alerter"
    publish(redis_server, envelope(1, source="by-hand"))
    eventually(lambda: any(e["source"] == "by-hand" for e in running.history(running.worker)))
    assert running.stop() == 0


def test_up_starts_an_embedded_redis_when_the_url_is_unreachable(up):
    url = f"redis://127.0.0.1:{free_port()}/0"
    running = up("--workers", "1", env={"REDIS_URL": url})
    assert f"{url} is unreachable; starting an embedded Redis" in running.output()
    assert running.stop() == 0


def test_tail_prints_the_channel_decoded(redis_server):
    tail = subprocess.Popen(
        [NUMCAST, "tail", "--count", "3"],
        env={**os.environ, "REDIS_URL": redis_server.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The line comes once Redis has confirmed the subscription, so what is published after it is printed.
        assert select.select([tail.stderr], [], [], 10)[0], "tail says it is subscribed"
        assert tail.stderr.readline() == "# subscribed to 'numbers'; Ctrl-C to stop\n"
        assert redis_server.client().pubsub_numsub("numbers") == [(b"numbers", 1)]
        publish(redis_server, envelope(7, value=42.5, source="control-abc123"), "<b>junk</b>", envelope(8))
        out, _ = tail.communicate(timeout=10)
    finally:
        tail.kill()
        tail.wait()
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
    env["MIRROR_KEY_FILE"] = worker.env["MIRROR_KEY_FILE"]  # without one, the mirror port does not listen
    result = subprocess.run([NUMCAST, "worker"], env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "Address already in use" in result.stderr
