"""What the bench scripts share: a throwaway Redis, a real worker, publisher processes, /proc and /metrics."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid

import hiredis

from numcast.local import Redis, free_port, stop, wait_http
from numcast.redis_conn import client

CHANNEL = "numbers"
# Redis's own default, restored for the phase that shows what a burst does to a slow subscriber.
DEFAULT_PUBSUB_LIMIT = "pubsub 33554432 8388608 60"
UNLIMITED_PUBSUB = "pubsub 0 0 0"
_SPAWN = multiprocessing.get_context("spawn")  # no fork of a process that may run client threads
HTTP_TIMEOUT = 60  # a worker busy with a flood may answer late; how late is itself a figure
_METRIC_RE = re.compile(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$")


def get(url: str):
    """The JSON a service answers at `url`."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def patch(url: str, body: dict) -> None:
    """PATCH `body` as JSON to `url` (the control-plane's /api/config)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="PATCH", headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=30).close()


def numcast_command() -> str:
    """The `numcast` console script of the environment running this script."""
    path = os.path.join(os.path.dirname(sys.executable), "numcast")
    if not os.access(path, os.X_OK):
        raise SystemExit(f"no numcast next to {sys.executable}: install the project in this environment")
    return path


def run(main) -> None:
    """Exit with what `main()` returns; Ctrl-C exits 130 with a word instead of a traceback."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


class Proc:
    """A numcast service (`command`: control, worker, alerter) on a free port, restartable with the same settings."""

    def __init__(self, command: str, env: dict[str, str], log: str) -> None:
        self.command, self.log = command, log
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"  # /metrics and the full /api/status (ADMIN_PORT)
        self.env = {
            "HOST": "127.0.0.1", "PORT": str(self.port), "ADMIN_PORT": str(self.admin_port), "LOG_LEVEL": "WARNING",
            **env,
        }  # fmt: skip
        self.process: subprocess.Popen | None = None

    def start(self, wait: str = "/readyz") -> float:
        """Start; return the seconds until `wait` answered 200."""
        started = time.monotonic()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [numcast_command(), self.command], env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT
            )
        wait_http(self.url + wait, 60, self.process)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop(self.process)


class Worker:
    """`numcast worker`, started the way a user starts it, in a temp dir, on free ports, on 127.0.0.1."""

    def __init__(self, redis_url: str, name: str = "bench-1", command: list[str] | None = None, **env: str) -> None:
        self.command = command or [numcast_command(), "worker"]
        self.dir = tempfile.mkdtemp(prefix="numcast-bench-")
        self.port, self.tcp_port, self.admin_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"  # /metrics and the full /api/status (ADMIN_PORT)
        self.env = {
            "REDIS_URL": redis_url, "PORT": str(self.port), "TCP_PORT": str(self.tcp_port), "WORKER_NAME": name,
            "ADMIN_PORT": str(self.admin_port),
            "SINK_FILE": os.path.join(self.dir, "numbers.jsonl"), "HOST": "127.0.0.1", **env,
        }  # fmt: skip
        self.log_path = os.path.join(self.dir, "worker.log")
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Worker:
        """Start the process and wait until it is subscribed; stop it if it does not get there."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the bench, which then stops the worker itself
            )
        try:
            wait_http(self.url + "/readyz", 30, self.process)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, kind, exc, tb) -> None:
        """Stop the worker (SIGTERM, then SIGKILL), showing its last lines if the bench failed."""
        if self.process is not None:
            stop(self.process)
        if kind is not None and not issubclass(kind, KeyboardInterrupt):
            print(f"last lines of the worker's log:\n{self.log_tail()}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.process.pid

    def metrics(self) -> dict[str, float]:
        """/metrics as {'name{labels}': value}."""
        with urllib.request.urlopen(self.admin_url + "/metrics", timeout=HTTP_TIMEOUT) as response:
            text = response.read().decode()
        found = {}
        for line in text.splitlines():
            match = _METRIC_RE.match(line)
            if match:
                found[match.group(1)] = float(match.group(2))
        return found

    def status(self) -> dict:
        """/api/status."""
        with urllib.request.urlopen(self.admin_url + "/api/status", timeout=HTTP_TIMEOUT) as response:
            return json.load(response)

    def healthz_seconds(self) -> float:
        """How long GET /healthz takes now."""
        started = time.monotonic()
        with urllib.request.urlopen(self.url + "/healthz", timeout=HTTP_TIMEOUT) as response:
            response.read()
        return time.monotonic() - started

    def wait_subscribed(self, timeout: float = 15.0) -> None:
        """Wait until the worker is subscribed again (/readyz stays 200 without Redis: it reports, not gates)."""
        deadline = time.monotonic() + timeout
        while not self.status()["redis"]["subscribed"]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not subscribe again")
            time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the worker's log."""
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""


class Sampler:
    """Calls `read()` every `interval` seconds in a thread, keeping the results, until stopped."""

    def __init__(self, read, interval: float) -> None:
        self.read, self.interval = read, interval
        self.samples: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(HTTP_TIMEOUT)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append(self.read())
            except OSError:
                pass  # the process went away; the caller sees it elsewhere
            if self._stop.wait(self.interval):
                return


def pick(metrics: dict[str, float], *names: str) -> float:
    """The first of `names` that /metrics has (names have changed as the metrics settled), else 0."""
    return next((metrics[name] for name in names if name in metrics), 0.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are the 14th and 15th fields; after the ')' they are the 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` in MiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def set_pubsub_limit(url: str, limit: str) -> None:
    """Set the pubsub client-output-buffer-limit of the bench's own Redis."""
    conn = client(url)
    try:
        conn.config_set("client-output-buffer-limit", limit)
    finally:
        conn.close()


def envelope(seq: int, ts: float, source: str) -> bytes:
    """A valid envelope, built by hand so the publisher spends its time publishing."""
    return b'{"seq":%d,"value":%d.5,"ts":%.6f,"source":"%s"}' % (seq, seq % 100, ts, source.encode())


def _publish(url: str, count: int, pipeline: int, rate: float, source: str, results) -> None:
    """Publish `count` envelopes in pipelines of `pipeline`; `rate` > 0 paces them (messages per second)."""
    # RESP written by hand and replies parsed by hiredis: redis-py's pipeline costs more per PUBLISH than
    # a subscriber spends per message, and the publisher must not be what limits the flood.
    address = urllib.parse.urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=30)
    reader = hiredis.Reader()
    head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(CHANNEL), CHANNEL.encode())
    started = time.time()
    sent = 0
    while sent < count:
        n = min(pipeline, count - sent)
        ts = time.time()
        commands = []
        for seq in range(sent, sent + n):
            body = envelope(seq, ts, source)
            commands.append(b"%s$%d\r\n%s\r\n" % (head, len(body), body))
        sock.sendall(b"".join(commands))
        replies = 0
        while replies < n:
            reader.feed(sock.recv(65536))
            while (reply := reader.gets()) is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise RuntimeError(f"PUBLISH failed: {reply}")
                replies += 1
        sent += n
        if rate > 0:
            ahead = started + sent / rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
    results.put({"source": source, "sent": sent, "started": started, "ended": time.time()})
    sock.close()


class Flood:
    """Publishers in processes of their own, so the bench's own loop is not the bottleneck."""

    def __init__(self, url: str, count: int, publishers: int = 1, pipeline: int = 1000, rate: float = 0.0) -> None:
        self.results = _SPAWN.Queue()
        run = uuid.uuid4().hex[:8]  # a new source per flood, or the worker would drop a second flood as replays
        share, rest = divmod(count, publishers)
        self.processes = [
            _SPAWN.Process(
                target=_publish,
                args=(url, share + (i < rest), pipeline, rate / publishers, f"bench-{run}-{i}", self.results),
                daemon=True,
            )
            for i in range(publishers)
        ]

    def start(self) -> Flood:
        """Start publishing."""
        for process in self.processes:
            process.start()
        return self

    def wait(self, timeout: float) -> dict:
        """Wait for every publisher; return messages sent and the flood's start and end (Unix seconds)."""
        parts = [self.results.get(timeout=timeout) for _ in self.processes]
        for process in self.processes:
            process.join(timeout)
        return {
            "sent": sum(p["sent"] for p in parts),
            "started": min(p["started"] for p in parts),
            "ended": max(p["ended"] for p in parts),
        }

    def stop(self) -> None:
        """Terminate any publisher still running."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join(5)


def spawn(target, *args) -> multiprocessing.Process:
    """Run `target(*args)` in a fresh interpreter (spawn: safe while threads run here)."""
    process = _SPAWN.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def new_queue():
    """A queue the spawned processes can share."""
    return _SPAWN.Queue()


def new_event():
    """An event the spawned processes can share."""
    return _SPAWN.Event()


def numsub(url: str) -> int:
    """Subscribers of the channel now."""
    conn = client(url)
    try:
        return dict(conn.pubsub_numsub(CHANNEL)).get(CHANNEL.encode(), 0)
    finally:
        conn.close()


def median(values: list[float]) -> float:
    """The median, or 0 for no values."""
    return statistics.median(values) if values else 0.0


@contextlib.contextmanager
def bench_redis(limit: str = UNLIMITED_PUBSUB):
    """A throwaway Redis (never the machine's own) with the given pubsub output-buffer limit."""
    server = Redis().start()
    try:
        set_pubsub_limit(server.url, limit)
        yield server
    finally:
        server.stop()
