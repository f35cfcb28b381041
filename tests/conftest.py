"""Fixtures that start real parts: a Redis server on a free port, and `numcast` processes as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from needs import missing

from numcast.local import (
    ALERTMANAGER_MISSING,
    QUIET_ALERTMANAGER,
    Alertmanager,
    Redis,
    _die_with_parent,
    alertmanager_binary,
    free_port,
    stop,
    wait_http,
)
from numcast.mirror_key import MirrorConnection, MirrorKeys, new_key

NUMCAST = shutil.which("numcast", path=os.path.dirname(sys.executable)) or "numcast"
LOG_LINES_ON_FAILURE = 200  # of each service's log, in the report of a failed test
ADMIN_ROUTES = ("/metrics", "/api/status")  # on the admin port (ADMIN_PORT) only, or in full only
STOP_WITHIN = 8.0  # seconds a service has to stop after SIGTERM at the end of a test; measured: well under 1 s


def eventually(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, message: str = ""):
    """Poll `check` until it returns something truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s: {message or check}")
        time.sleep(interval)


def http(method: str, url: str, body: bytes | dict | None = None, headers: dict | None = None):
    """(status, parsed JSON or text) of one real HTTP request."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    return status, json.loads(raw) if "json" in kind else raw.decode()


class RedisServer(Redis):
    """A test Redis that can be killed and brought back on the same port."""

    def client(self) -> redis.Redis:
        """A plain client for the test's own commands."""
        return redis.Redis.from_url(self.url)

    def kill(self) -> None:
        """SIGKILL the server: every connection drops at once."""
        self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        """Start again on the same port."""
        self.start()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on a free port, killed after the test."""
    server = RedisServer().start()
    yield server
    server.stop()


class Service:
    """A `numcast control`, `worker` or `alerter` process started with the user's own command.

    It runs in a session of its own and dies with the test run (PR_SET_PDEATHSIG), so a crashed or interrupted
    run leaves nothing listening behind.
    """

    def __init__(self, command: str, env: dict[str, str], log: Path, prefix: tuple[str, ...] = ()) -> None:
        """`prefix` runs the command through another (setpriv, to run as another user)."""
        # Each process its own admin port: the default (9180) would be every test's (numcast.admin).
        env = {"ADMIN_PORT": str(free_port()), **env}
        self.command, self.env, self.log_path, self.prefix = command, env, log, prefix
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        # /metrics and the full /api/status are on the admin port; get() goes there for them.
        self.admin_url = f"http://127.0.0.1:{env['ADMIN_PORT']}"
        self.process: subprocess.Popen | None = None

    def start(self, wait: str = "/healthz") -> Service:
        """Run the process and wait until `wait` answers 200."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [*self.prefix, NUMCAST, self.command],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        wait_http(self.url + wait, 20, self.process)
        return self

    def get(self, path: str):
        """GET `path`, on the admin port for /metrics and /api/status; (status, body)."""
        admin = path.partition("?")[0] in ADMIN_ROUTES
        return http("GET", (self.admin_url if admin else self.url) + path)

    def json(self, path: str) -> dict:
        """GET `path`, which must answer 200 with JSON."""
        status, body = self.get(path)
        assert status == 200, (path, status, body)
        return body

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample in /metrics (0 when absent)."""
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(f"{name}{{{labels}}} " if labels else f"{name} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send `signum` to the process."""
        self.process.send_signal(signum)

    def stop(self) -> int:
        """SIGTERM and wait; return the exit code."""
        return stop(self.process, grace=10) if self.process else 0

    def logs(self) -> str:
        """Everything the process printed."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        self.process.kill()
        self.process.wait()


def stop_all(started: list[Service], grace: float = STOP_WITHIN) -> list[str]:
    """SIGTERM every service the test left running, all at once, and wait; what went wrong, one line each.

    A service the test stopped, killed or waited for itself is left alone. Any other must still be running,
    and must stop with exit code 0 within `grace` seconds: a crash or a hung stop fails the test.
    """
    problems, running = [], []
    for service in started:
        process = service.process
        if process is None or process.returncode is not None:
            continue
        code = process.poll()
        if code is not None:
            problems.append(f"{service.command} on :{service.port} had exited by itself with code {code}")
            continue
        if process.send_signal(signal.SIGTERM) is None:
            running.append(service)
    deadline = time.monotonic() + grace
    for service in running:
        try:
            code = service.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
            problems.append(f"{service.command} on :{service.port} did not stop within {grace:g}s of SIGTERM")
            continue
        if code != 0:
            problems.append(f"{service.command} on :{service.port} stopped with exit code {code}")
    return problems


class Services:
    """Starts services for a test (or a module) and stops them all at the end, checking how each ended."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Service] = []

    def __call__(
        self, command: str, redis_url: str, wait: str = "/healthz", prefix: tuple[str, ...] = (), **env: str
    ) -> Service:
        env = {"REDIS_URL": redis_url, "HOST": "127.0.0.1", "PORT": str(free_port()), **env}
        if command in ("worker", "control"):
            env.setdefault("MIRROR_KEY_FILE", self.mirror_key())
        if command == "worker":
            env.setdefault("TCP_PORT", str(free_port()))
            env.setdefault("WORKER_NAME", f"machine-{len(self.started) + 1}")
            env.setdefault("SINK_FILE", str(self.directory / f"{env['WORKER_NAME']}.jsonl"))
        service = Service(command, env, self.directory / f"{command}-{len(self.started)}.log", prefix)
        self.started.append(service)
        return service.start(wait)

    def mirror_key(self) -> str:
        """The TCP mirror's key file that every control-plane and worker of these services shares (made once)."""
        path = self.directory / "mirror.key"
        if not path.exists():
            path.write_text(new_key() + "\n")
        return str(path)

    def close(self) -> None:
        """Stop every service; fail if one had crashed or did not stop cleanly."""
        problems = stop_all(self.started)
        if os.environ.get("NUMCAST_TEST_LOGS"):
            for service in self.started:
                print(f"--- {service.command} log ---\n{service.logs()}")
        if problems:
            pytest.fail("; ".join(problems))


@pytest.fixture
def services(tmp_path: Path, request) -> Iterator[Services]:
    """A factory of started services; every one is stopped after the test, and its log shown on failure."""
    started = Services(tmp_path)
    request.node.numcast_services = started.started  # for pytest_runtest_makereport, below
    yield started
    started.close()


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    """One redis-server for a whole module: for table-driven cases that each leave the data as they found it."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_services(tmp_path_factory, request) -> Iterator[Services]:
    """Like `services`, but the services live for the whole module: cases assert differences, not totals."""
    started = Services(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    request.module.numcast_services = started.started  # every failing case of the module shows their logs
    yield started
    started.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the last lines of each service it started: CI shows why."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        module = getattr(item, "module", None)
        shown = [*getattr(item, "numcast_services", ()), *getattr(module, "numcast_services", ())]
        for n, service in enumerate(shown):
            try:
                lines = service.logs().splitlines()[-LOG_LINES_ON_FAILURE:]
            except OSError as exc:
                lines = [f"(no log: {exc})"]
            report.sections.append((f"numcast {service.command} #{n} log, last lines", "\n".join(lines)))


def socketio_client(**options):
    """A python-socketio client that handles messages one at a time, in the order they came, as a browser does.

    engineio's client hands each message to a thread of its own, so two batches (or a batch and an
    acknowledgement) can be handled out of order under load; a test of order would then fail by the client's doing.
    """
    import socketio

    client = socketio.Client(**options)
    trigger = client.eio._trigger_event

    def in_order(event, *args, **kwargs):
        kwargs["run_async"] = False
        return trigger(event, *args, **kwargs)

    client.eio._trigger_event = in_order
    return client


class Browser:
    """A Socket.IO client, as the dashboard connects (WebSocket only), that keeps every value pushed to it."""

    def __init__(self, url: str) -> None:
        self.values: list[dict] = []
        self._lock = threading.Lock()
        self.client = socketio_client(reconnection=False)
        self.client.on("numbers", self._numbers)
        self.client.connect(url, transports=["websocket"], wait_timeout=10)

    def _numbers(self, batch: list[dict]) -> None:
        with self._lock:
            self.values.extend(batch)

    def seqs(self) -> list[int]:
        """The seqs received so far, in the order they came."""
        with self._lock:
            return [envelope["seq"] for envelope in self.values]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()


def as_user(uid: int) -> tuple[str, ...]:
    """setpriv arguments that run a command as `uid` (group the same), with no groups and no privileges.

    It keeps one capability, read-only: reading and searching any path, because this host may keep the
    interpreter in a directory only root can enter. It grants no write anywhere.
    """
    return (
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
        "--bounding-set=-all,+dac_read_search", "--inh-caps=-all,+dac_read_search",
        "--ambient-caps=-all,+dac_read_search",
    )  # fmt: skip


def sink_seqs(path: str | Path, backups: int = 0) -> list[int]:
    """The seqs in a sink file and its rotated backups, oldest file first; fails on a line that is not whole."""
    seqs = []
    for name in [f"{path}.{n}" for n in range(backups, 0, -1)] + [str(path)]:
        if os.path.exists(name):
            data = Path(name).read_bytes()
            assert not data or data.endswith(b"\n"), f"{name} ends in half a line"
            seqs += [json.loads(line)["seq"] for line in data.splitlines()]
    return seqs


def publish(server: RedisServer, *messages: str | bytes, channel: str = "numbers") -> None:
    """PUBLISH each message by hand, as `redis-cli publish` would."""
    client = server.client()
    for message in messages:
        client.publish(channel, message)
    client.close()


def mirror(worker: Service, key_file: str = "") -> MirrorConnection:
    """A connection to the worker's TCP mirror, greeted and signing with its key file, as the control-plane's."""
    keys = MirrorKeys(key_file or worker.env["MIRROR_KEY_FILE"])
    return MirrorConnection(("127.0.0.1", int(worker.env["TCP_PORT"])), keys, timeout=10)


def pause(control: Service) -> int:
    """Pause the control-plane's generator; the last seq, once it stands still between two looks with every output's
    queue empty (a value being generated as the pause lands comes after it)."""
    assert http("PATCH", control.url + "/api/config", {"paused": True})[0] == 200
    seqs = []

    def settled() -> int:
        status = control.json("/api/status")
        seqs.append(status["seq"])
        idle = status["config"]["paused"] and not any(output["queued"] for output in status["outputs"])
        return idle and seqs[-2:] == [status["seq"]] * 2 and status["seq"]

    return eventually(settled, interval=0.1, message="the control-plane stops generating and sending")


def envelope(seq: int, value: float = 1.0, source: str = "test-1", ts: float | None = None) -> str:
    """A valid envelope, as the control-plane would send it."""
    return json.dumps({"seq": seq, "value": value, "ts": ts or time.time(), "source": source})


@pytest.fixture
def alertmanager() -> Iterator[Callable[..., Alertmanager]]:
    """A factory of real Alertmanagers on free ports (`numcast.local.Alertmanager`), stopped after the test.

    Without the binary the test is skipped with the apt hint, except in CI (`CI` set), where that is a failure.
    """
    if alertmanager_binary() is None:
        missing(ALERTMANAGER_MISSING)
    started: list[Alertmanager] = []

    def start(config: str = QUIET_ALERTMANAGER, **options) -> Alertmanager:
        server = Alertmanager(config, **options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        if os.environ.get("NUMCAST_TEST_LOGS") and os.path.exists(server.log):
            print(f"--- alertmanager log ---\n{Path(server.log).read_text(errors='replace')}")
        server.stop()
