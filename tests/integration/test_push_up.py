"""`numcast up` prints the push token in a ready curl line per door, and the viewer's command to watch the push
channel: each works as printed."""

import os
import re
import shutil
import subprocess

import pytest
from conftest import eventually, http
from test_commands import Up

from numcast.envelope import decode


@pytest.fixture
def running(tmp_path):
    if shutil.which("curl") is None:
        if os.environ.get("CI"):
            pytest.fail("curl not found: apt-get install -y curl")
        pytest.skip("curl not found: apt-get install -y curl")
    up = Up(tmp_path, "--workers", "1")
    try:
        eventually(lambda: "numcast is up" in up.output(), timeout=30, message="the banner")
        yield up
    finally:
        if up.process.poll() is None:
            up.stop()


def run(line: str) -> str:
    """Run a printed command line with bash, as a user pastes it; the HTTP status curl got."""
    done = subprocess.run(
        ["bash", "-c", line + " -s -o /dev/null -w '%{http_code}'"], capture_output=True, text=True, timeout=20
    )
    return done.stdout


def test_each_printed_push_line_works_and_the_printed_watch_shows_the_samples(running):
    text = running.output()
    doors = [
        line.strip()
        for line in text.splitlines()
        if ("curl -X POST" in line or "curl -X PUT" in line) and "/api/alertmanager" not in line  # the alerter's
    ]
    assert [re.search(r"(/api/push|/api/v2/write|/metrics/job/\w+)", line).group(1) for line in doors] == [
        "/api/push",
        "/api/v2/write",
        "/metrics/job/nightly",
    ]
    token = re.search(r"Bearer ([\w-]+)'", doors[0]).group(1)
    assert f"Token {token}" in doors[1] and f"pusher:{token}" in doors[2]
    control_token = re.search(r"#token=([\w-]+)", text).group(1)
    assert token != control_token
    watch = re.search(r"REDISCLI_AUTH=(\w+) (\S+) --user viewer -h 127\.0\.0\.1 -p (\d+) subscribe numbers:push", text)
    assert watch, "the viewer's redis-cli command for the push channel"
    env = {**os.environ, "REDISCLI_AUTH": watch.group(1)}
    command = [watch.group(2), "--user", "viewer", "-h", "127.0.0.1", "-p", watch.group(3), "subscribe", "numbers:push"]
    watching = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    tail = re.search(
        r"REDIS_USERNAME=viewer REDIS_PASSWORD=(\w+) REDIS_URL=(\S+) (\S+) tail --channel numbers:push", text
    )
    assert tail, "the printed numcast tail command for the push channel"
    tail_env = {**os.environ, "REDIS_USERNAME": "viewer", "REDIS_PASSWORD": tail.group(1), "REDIS_URL": tail.group(2)}
    tailing = subprocess.Popen(
        [tail.group(3), "tail", "--channel", "numbers:push", "--count", "3"],
        env=tail_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert [watching.stdout.readline().strip() for _ in range(3)] == ["subscribe", "numbers:push", "1"]
        assert "subscribed to 'numbers:push'" in tailing.stderr.readline()
        for line in doors:
            assert run(line.replace(token, control_token)) == "401", "the control token does not push"
        assert [run(line) for line in doors] == ["200", "204", "202"]
        messages = [[watching.stdout.readline().strip() for _ in range(3)] for _ in doors]
        tailed, _ = tailing.communicate(timeout=20)
    finally:
        for process in (watching, tailing):
            process.kill()
            process.wait()
    assert {kind for kind, channel, _ in messages} == {"message"}
    series = [decode(payload).series for _, _, payload in messages]
    assert series == ["queue_depth", "room_temperature_celsius", "jobs_done_total"]
    assert [line.split()[2].split("{")[0] for line in tailed.splitlines()] == series, tailed

    def pushed() -> list[str]:
        history = http("GET", f"http://127.0.0.1:{running.worker}/api/history")[1]["envelopes"]
        return [e["series"] for e in history if "series" in e]

    eventually(lambda: pushed() == series, message="the worker has them")
