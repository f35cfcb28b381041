"""`numcast up`: the whole pipeline on one machine: Redis, the control-plane, the workers and the alerter."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
from pathlib import Path

from numcast import mirror_key, monitoring, replay_log
from numcast.local import Redis, free_port, redis_binary, service, stop, wait_http, write_private
from numcast.push import stream
from numcast.redis_conn import Endpoint, reachable, redact
from numcast.replicated import SentinelGroup


class Stack:
    """Redis (a given one, or an embedded one), `workers` workers, the control-plane mirroring to them, the alerter."""

    def __init__(
        self,
        workers: int = 2,
        *,
        redis_url: str = "",
        control_port: int = 0,
        worker_port: int = 0,
        tcp_port: int = 0,
        data_dir: str = "",
        env: dict[str, str] | None = None,
        control_env: dict[str, str] | None = None,
        mirror: bool = True,
        alerter: bool = True,
        alerter_port: int = 0,
        alerter_env: dict[str, str] | None = None,
        tokens: bool = False,
        acl: bool = False,
        ha: bool = False,
    ) -> None:
        """Ports of 0 are picked free; worker i gets `worker_port + i` and `tcp_port + i` otherwise.

        `tokens`: the control-plane and the alerter each require a token of their own, new at each start
        (`control_token`, `alerter_token`); without, they take changes from loopback clients only.
        `acl`: an embedded Redis has a user per role (numcast.redis_acl), new passwords at each start, and
        each process connects as its own.
        `ha`: instead, three Redis nodes and three Sentinels (numcast.replicated), two control-planes sharing the
        generator lease and two alerters; every process finds the primary through the Sentinels.
        """
        self.acl, self.ha = acl, ha
        self.group = None  # the Sentinel group, with `ha`
        self.mirror = mirror  # False: values reach the workers through Redis only
        self.redis_url, self.embedded = redis_url, None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="numcast-data-")
        self._own_dir = not data_dir  # a temp dir of its own is removed at stop; one it was given is kept
        self.env, self.control_env = env or {}, control_env or {}
        self.control_port = control_port or free_port()
        self.workers = [
            (
                f"machine-{i + 1}",
                worker_port + i if worker_port else free_port(),
                tcp_port + i if tcp_port else free_port(),
            )
            for i in range(workers)
        ]
        self.alerter = alerter  # False: no alerter (its default rules would alert on a quiet stream)
        self.alerter_port = alerter_port or free_port()
        self.alerter_env = alerter_env or {}
        self.control_token = secrets.token_urlsafe(24) if tokens else ""
        self.alerter_token = secrets.token_urlsafe(24) if tokens else ""
        self.push_token = secrets.token_urlsafe(24) if tokens else ""  # the publishers' (docs/push.md)
        self.processes: list[tuple[str, subprocess.Popen, int]] = []  # control-plane first
        self.control_ports = [self.control_port] + ([free_port()] if ha else [])
        self.alerter_ports = [self.alerter_port] + ([free_port()] if ha else [])
        # Each process's admin port (ADMIN_PORT: /metrics and the full /api/status), by name.
        names = [_nth("control-plane", n) for n in range(len(self.control_ports))]
        names += [name for name, _, _ in self.workers] + [_nth("alerter", n) for n in range(len(self.alerter_ports))]
        self.admin_ports = {name: free_port() for name in names}

    @property
    def control_url(self) -> str:
        """The control page."""
        return f"http://127.0.0.1:{self.control_port}"

    @property
    def alerter_url(self) -> str:
        """The alerter's API."""
        return f"http://127.0.0.1:{self.alerter_port}"

    def admin_url(self, name: str) -> str:
        """The admin port of process `name` (control-plane, machine-1, …, alerter)."""
        return f"http://127.0.0.1:{self.admin_ports[name]}"

    @property
    def worker_urls(self) -> list[str]:
        """The workers' dashboards, in order."""
        return [f"http://127.0.0.1:{port}" for _, port, _ in self.workers]

    def start(self, timeout: float = 30.0) -> Stack:
        """Start everything and wait until each process answers /healthz; on failure stop what started."""
        try:
            channels = {**os.environ, **self.env}
            channel, alerts_channel = channels.get("CHANNEL") or "numbers", channels.get("ALERTS_CHANNEL") or "alerts"
            if self.ha:
                self.group = SentinelGroup(channel=channel, alerts_channel=alerts_channel).start()
                self.redis_url = self.group.env("probe")["REDIS_URL"]
            elif not self.redis_url:
                self.embedded = Redis(acl=self.acl, channel=channel, alerts_channel=alerts_channel).start()
                self.redis_url = self.embedded.url
            common = {"REDIS_URL": self.redis_url, "HOST": "127.0.0.1", **self.env}
            mirror = {"MIRROR_KEY_FILE": self._mirror_key()}  # the control-plane's and the workers', not the alerter's
            for name, port, tcp_port in self.workers:
                sink = os.path.join(self.data_dir, f"{name}.jsonl")
                env = {**common, **mirror, "WORKER_NAME": name, "PORT": str(port), "TCP_PORT": str(tcp_port)}
                env["SINK_FILE"] = sink
                env["ADMIN_PORT"] = str(self.admin_ports[name])
                self.processes.append((name, service("worker", env | self._user("worker")), port))
            if self.alerter:
                for n, port in enumerate(self.alerter_ports):
                    env = {**common, "PORT": str(port), **_token(self.alerter_token), **self.alerter_env}
                    name = _nth("alerter", n)
                    env["ADMIN_PORT"] = str(self.admin_ports[name])
                    self.processes.append((name, service("alerter", env | self._user("alerter")), port))
            targets = ",".join(f"127.0.0.1:{tcp_port}" for _, _, tcp_port in self.workers) if self.mirror else ""
            for n, port in reversed(list(enumerate(self.control_ports))):
                env = {**common, **mirror, "PORT": str(port), "TCP_MIRROR_TARGETS": targets}
                env |= {**self._user("control"), **_token(self.control_token), **self.control_env}
                if self.ha:
                    env["LEASE_SECONDS"] = env.get("LEASE_SECONDS") or "5"
                if self.push_token:
                    env |= {"PUSH_TOKEN": self.push_token, "PUSH_TOKEN_FILE": ""}
                name = _nth("control-plane", n)
                env["ADMIN_PORT"] = str(self.admin_ports[name])
                self.processes.insert(0, (name, service("control", env), port))
            for _, process, port in self.processes:
                wait_http(f"http://127.0.0.1:{port}/healthz", timeout, process)
        except BaseException:
            self.stop()
            raise
        return self

    def _mirror_key(self) -> str:
        """A new key for the TCP mirror, in a file of the data directory only its owner reads; its path."""
        os.makedirs(self.data_dir, exist_ok=True)
        path = os.path.join(self.data_dir, "mirror.key")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            os.fchmod(fd, 0o600)  # also when the file was there before, with other rights
            file.write(mirror_key.new_key() + "\n")
        return path

    def _user(self, role: str) -> dict[str, str]:
        """The env that makes a process connect as `role` to an embedded Redis with users; else nothing."""
        if self.group is not None:
            return {**self.group.env(role), "REDIS_PASSWORD": ""}
        if self.embedded is None or not self.embedded.passwords:
            return {}
        return {"REDIS_USERNAME": role, "REDIS_PASSWORD_FILE": self.embedded.password_file(role), "REDIS_PASSWORD": ""}

    def exited(self) -> tuple[str, int] | None:
        """(name, exit code) of a process that has ended, if any."""
        for name, process, _ in self.processes:
            if process.poll() is not None:
                return name, process.returncode
        return None

    def stop(self, report=lambda line: None) -> None:
        """Stop the control-plane first, so the workers get all it sent; then the workers, the alerter, Redis."""
        for name, process, _ in self.processes:
            report(f"stopped {name} (exit code {stop(process)})")
        self.processes = []
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None
            report("stopped the embedded Redis")
        if self.group is not None:
            self.group.stop()
            self.group = None
            report("stopped the Redis nodes and their Sentinels")
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


CREDENTIALS_FILE = "credentials.env"  # in the data dir, while `numcast up` runs


def credentials(stack: Stack) -> dict[str, str]:
    """This run's tokens, and where Redis is with each role's password (an embedded Redis with users only)."""
    address = urllib.parse.urlsplit(stack.redis_url)
    values = {
        "CONTROL_TOKEN": stack.control_token,
        "PUSH_TOKEN": stack.push_token,
        "ALERTER_TOKEN": stack.alerter_token,
    }
    if stack.group is not None:  # --ha: the primary moves, a Sentinel says where it is
        _, port = stack.group.addresses[0]
        values |= {"SENTINEL_PORT": str(port), "SENTINEL_PASSWORD": stack.group.sentinel_password}  # to ask them
        passwords = stack.group.passwords
    else:
        values |= {"REDIS_HOST": address.hostname or "127.0.0.1", "REDIS_PORT": str(address.port or 6379)}
        passwords = stack.embedded.passwords if stack.embedded is not None else {}
    values |= {f"REDIS_{role.upper()}_PASSWORD": password for role, password in passwords.items()}
    # Where each process's /metrics and full /api/status are (its admin port): ADMIN_MACHINE_1=http://127.0.0.1:…
    values |= {f"ADMIN_{name.upper().replace('-', '_')}": stack.admin_url(name) for name in stack.admin_ports}
    return {name: value for name, value in values.items() if value}


def write_credentials(stack: Stack) -> str:
    """Write `credentials()` as shell variables in the data dir, readable by this user only; its path."""
    path = os.path.join(os.path.abspath(stack.data_dir), CREDENTIALS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = [
        "# numcast up: this run's tokens and Redis passwords, new at each run; removed when the run stops.",
        f"# Load them into your shell: . {_shown(path)}",
        *(f"{name}={shlex.quote(value)}" for name, value in credentials(stack).items()),
    ]
    write_private(path, "\n".join(lines) + "\n")
    return path


def _token(token: str) -> dict[str, str]:
    """The env of a service that requires `token` (an inherited CONTROL_TOKEN_FILE would clash with it)."""
    return {"CONTROL_TOKEN": token, "CONTROL_TOKEN_FILE": ""} if token else {}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """Run the pipeline until Ctrl-C or SIGTERM, then stop every process it started."""
    parser = argparse.ArgumentParser(prog="numcast up", description=__doc__)
    parser.add_argument("--control-port", type=int, default=8000)
    parser.add_argument("--worker-port", type=int, default=8081, help="first worker's HTTP port; the next get +1")
    parser.add_argument("--tcp-port", type=int, default=9001, help="first worker's TCP mirror port; the next get +1")
    parser.add_argument("--alerter-port", type=int, default=8090, help="the alerter's HTTP port")
    parser.add_argument("--workers", type=int, default=2, choices=range(1, 10), metavar="N")
    parser.add_argument("--data-dir", default="numcast-data", help="where the workers' sink files go")
    parser.add_argument(
        "--monitoring", action="store_true", help=f"also run Prometheus and Alertmanager ({monitoring.INSTALL_HINT})"
    )
    parser.add_argument(
        "--monitoring-config", type=Path, default=monitoring.CONFIG_DIR, metavar="DIR", help="their shipped files"
    )
    parser.add_argument(
        "--ha",
        action="store_true",
        help="three Redis nodes and three Sentinels, two control-planes and two alerters, to watch a failover",
    )
    args = parser.parse_args(argv)
    if args.monitoring and (problem := monitoring.missing(args.monitoring_config)):
        print(f"numcast up: --monitoring: {problem}", file=sys.stderr, flush=True)
        return 2
    if taken := taken_ports(args):
        print(f"numcast up: {taken}", file=sys.stderr, flush=True)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)

    redis_url = "" if args.ha else os.environ.get("REDIS_URL", "")
    given = Endpoint.parse(
        redis_url,
        os.environ.get("REDIS_USERNAME", ""),
        os.environ.get("REDIS_PASSWORD", ""),
        os.environ.get("REDIS_PASSWORD_FILE", ""),
    )
    if redis_url and reachable(given, timeout=2):
        print(f"numcast up: using Redis at {redact(redis_url)}", flush=True)
    else:
        if redis_url:
            print(f"numcast up: {redact(redis_url)} is unreachable; starting an embedded Redis", flush=True)
        redis_url = ""
    stack = Stack(
        args.workers,
        redis_url=redis_url,
        control_port=args.control_port,
        worker_port=args.worker_port,
        tcp_port=args.tcp_port,
        data_dir=args.data_dir,
        alerter_port=args.alerter_port,
        tokens=True,
        acl=True,
        ha=args.ha,
    )
    code, watch, secrets_file = 0, None, ""
    if args.monitoring:
        watch = monitoring.for_stack(stack, args.monitoring_config)
        stack.alerter_env["ALERTMANAGER_URLS"] = watch.alertmanager_url  # stream alerts go to it too
    try:
        stack.start()
        if watch:
            watch.start()
        secrets_file = write_credentials(stack)
        print(banner(stack, watch.banner_lines() if watch else [], secrets_file), flush=True)
        while not (ended := stack.exited() or (watch and watch.exited())):
            time.sleep(0.5)
        print(f"numcast up: {ended[0]} exited with code {ended[1]}; stopping", flush=True)
        code = 1
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"numcast up: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if watch:
            watch.stop(lambda line: print(f"numcast up: {line}", flush=True))
        stack.stop(lambda line: print(f"numcast up: {line}", flush=True))
        if secrets_file and os.path.exists(secrets_file):
            os.remove(secrets_file)  # its tokens and passwords died with the run
    return code


def taken_ports(args: argparse.Namespace) -> str:
    """What to do about the first port of `args` that something already listens on; "" when all are free.

    Checked before anything starts: a service that cannot bind stops, but until it has, whatever holds the port
    answers its /healthz in its place.
    """
    wanted = [("--control-port", args.control_port), ("--alerter-port", args.alerter_port)]
    wanted += [("--worker-port", args.worker_port + n) for n in range(args.workers)]
    wanted += [("--tcp-port", args.tcp_port + n) for n in range(args.workers)]
    for flag, port in wanted:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the services bind
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                return (
                    f"port {port} ({flag}) is taken ({exc.strerror}): stop what listens there (another numcast up?), "
                    "or move the whole stack, e.g. --control-port 18000 --worker-port 18081 --tcp-port 19001 "
                    "--alerter-port 18090"
                )
    return ""


def _here(command: str) -> str:
    """`command` as installed beside this Python (a tox env's bin folder is not on the user's PATH)."""
    return _shown(os.path.join(os.path.dirname(sys.executable), command))


def _shown(path: str) -> str:
    """`path` relative to here when it is below, else absolute: as short as a user can type it from here."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


def _nth(name: str, n: int) -> str:
    """The name of the n-th (from 0) process of a kind: `alerter`, then `alerter-2`."""
    return name if n == 0 else f"{name}-{n + 1}"


def banner(stack: Stack, extra: list[tuple[str, str]] = (), secrets_file: str = "") -> str:
    """What `numcast up` prints once everything answers; `extra` adds (what, where) lines, such as monitoring's;
    `secrets_file` is where the run's credentials are (`write_credentials`)."""
    address = urllib.parse.urlsplit(stack.redis_url)
    cli = "redis-cli" if shutil.which("redis-cli") else redis_binary("redis-cli")
    lines = ["", "numcast is up:"]
    for name, _, http_port in stack.processes:
        kind = f"{name} dashboard"
        if name.startswith("control-plane"):
            kind = "control page" + name.removeprefix("control-plane")
        elif name.startswith("alerter"):
            kind = "alerter" + name.removeprefix("alerter") + " (built-in rules)"
        path = "api/alerts" if name.startswith("alerter") else ""
        if name.startswith("control-plane") and stack.control_token:
            path = f"#token={stack.control_token}"  # the page keeps it for the tab; a fragment never leaves it
        lines.append(f"  {kind:<26} http://127.0.0.1:{http_port}/{path}")
    # /metrics and the full /api/status are on each process's admin port (ADMIN_PORT), not on the pages' port.
    for name, _, _ in stack.processes:
        lines.append(f"  {'metrics of ' + name:<26} {stack.admin_url(name)}/metrics")
    lines += [f"  {what:<26} {where}" for what, where in extra]
    host = f"-h {address.hostname} -p {address.port or 6379}"
    channels = f"{os.environ.get('CHANNEL') or 'numbers'} {os.environ.get('ALERTS_CHANNEL') or 'alerts'}"
    secrets = []
    if secrets_file:
        secrets = [
            f"  {'credentials':<26} {secrets_file}",
            "",
            *textwrap.wrap(
                f"This run's tokens and Redis passwords (new at each run): `. {_shown(secrets_file)}` sets "
                f"{', '.join(credentials(stack))} for the commands of the docs "
                "(docs/development.md#examples-that-run).",
                width=110,
                break_on_hyphens=False,
                break_long_words=False,
            ),
        ]
    if stack.group is not None:
        failover = _failover_lines(stack, cli)
        return "\n".join(lines + failover[:3] + secrets + failover[3:])
    if stack.embedded is not None and stack.embedded.passwords:
        viewer = shlex.quote(stack.embedded.passwords["viewer"])
        title = "Watch the channel, as the Redis user `viewer` (it may only subscribe; new password each run):"
        watch = [
            f"  REDISCLI_AUTH={viewer} {cli} --user viewer {host} subscribe {channels}",
            f"  REDIS_USERNAME=viewer REDIS_PASSWORD={viewer} REDIS_URL={stack.redis_url} {_here('numcast')} tail",
        ]
    else:
        title = "Watch the channel:"
        watch = [
            f"  {cli} {host}{' -a PASSWORD' if address.password else ''} subscribe {channels}",
            f"  REDIS_URL={redact(stack.redis_url)} {_here('numcast')} tail",
        ]
    lines += [
        f"  {'redis' + (' (embedded)' if stack.embedded else ''):<26} {redact(stack.redis_url)}",
        f"  {'sink files':<26} {os.path.abspath(stack.data_dir)} (kept after a stop: the next run resumes)",
    ]
    lines += secrets
    lines += [
        "",
        title,
        *watch,
        "",
    ]
    lines += _push_lines(stack, cli, host)
    if stack.control_token:
        lines += [
            "Change the stream (the control-plane's token is new at each run):",
            f"  curl -X PATCH {stack.control_url}/api/config -H 'Authorization: Bearer {stack.control_token}'"
            """ -H 'Content-Type: application/json' -d '{"rate_hz": 5}'""",
            "",
        ]
    if stack.embedded is not None and stack.embedded.passwords:
        worker = shlex.quote(stack.embedded.passwords["worker"])
        log = replay_log.key(os.environ.get("CHANNEL") or "numbers")
        lines += [
            "Read the replay log, as the Redis user `worker` (docs/contract.md#the-replay-log):",
            f"  REDISCLI_AUTH={worker} {cli} --user worker {host} XRANGE {log} - + COUNT 2",
            "",
        ]
    if stack.alerter and stack.alerter_token:
        lines += [
            "Call the alerter's webhook as Alertmanager does (the alerter's token is new at each run, and its own):",
            f"  curl -X POST {stack.alerter_url}/api/alertmanager -H 'Authorization: Bearer {stack.alerter_token}'"
            """ -H 'Content-Type: application/json' -d '{"version": "4", "alerts": []}'""",
            "",
        ]
    lines += [
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def _failover_lines(stack: Stack, cli: str) -> list[str]:
    """With --ha: where the nodes and Sentinels are, how to kill the primary or a replica, and what to watch."""
    group = stack.group
    primary = group.primary()
    sentinel = group.sentinels[0]
    ask = f"REDISCLI_AUTH={shlex.quote(group.sentinel_password)} {cli} -p {sentinel.port}"
    nodes = ", ".join(f":{node.port} (pid {node.process.pid})" for node in group.nodes)
    sentinels = ", ".join(f":{port}" for _, port in group.addresses)
    controls = " ".join(f"http://127.0.0.1:{port}/api/status" for port in stack.control_ports)
    return [
        f"  {'redis nodes':<26} {nodes}; the primary now: :{primary.port}",
        f"  {'sentinels':<26} {sentinels}, watching `{group.master}` (down after {group.down_after_ms} ms)",
        f"  {'sink files':<26} {os.path.abspath(stack.data_dir)}",
        "",
        "Watch the channel through the Sentinels, as the Redis user `viewer` (it follows a failover too):",
        "  "
        + " ".join(f"{k}={shlex.quote(v)}" for k, v in group.env("viewer").items() if k != "REDIS_MASTER_NAME")
        + f" {_here('numcast')} tail",
        "",
        "Watch a failover (docs/operations.md, Redis with Sentinel):",
        f"  kill -9 {primary.process.pid}    # the primary, now; then ask a Sentinel for the new one (a few seconds):",
        f"  {ask} sentinel get-master-addr-by-name {group.master}",
        "  The dashboards stall for a few seconds, then go on with nothing missing and nothing twice; the",
        "  control-planes' and workers' logs say `lost`, then `connected` / `subscribed` again.",
        "Kill the control-plane that generates (`generating: true`), and the other takes over within LEASE_SECONDS:",
        f"  curl -s {controls}",
        "",
        "Ctrl-C stops everything.",
        "",
    ]


def _push_lines(stack: Stack, cli: str, host: str) -> list[str]:
    """A ready `curl` line per push door with the push token, and how to watch the push channel (docs/push.md)."""
    url, token = stack.control_url, stack.push_token
    channel = stream.channel(os.environ.get("CHANNEL") or "numbers")
    sample = {"samples": [{"series": "queue_depth", "labels": {"queue": "billing"}, "value": 42}]}
    if token:
        title = "Push your metrics (docs/push.md; the push token is new at each run, and not the control token):"
        bearer, influx, basic = (
            f"-H 'Authorization: Bearer {token}' ",
            f"-H 'Authorization: Token {token}' ",
            (f"-u 'pusher:{token}' "),
        )
    else:
        title, bearer, influx, basic = "Push your metrics (docs/push.md; from this machine):", "", "", ""
    lines = [
        title,
        f"  curl -X POST {url}/api/push {bearer}-H 'Content-Type: application/json' -d '{json.dumps(sample)}'",
        f"  curl -X POST '{url}/api/v2/write?precision=s' {influx}"
        "--data-binary 'room_temperature,room=lab celsius=21.5'",
        f"  printf 'jobs_done_total{{queue=\"billing\"}} 17\\n' | curl -X PUT --data-binary @- {basic}"
        f"{url}/metrics/job/nightly",
        f"Watch the pushed samples on {channel}:",
    ]
    if stack.embedded is not None and stack.embedded.passwords:
        viewer = shlex.quote(stack.embedded.passwords["viewer"])
        lines += [
            f"  REDISCLI_AUTH={viewer} {cli} --user viewer {host} subscribe {channel}",
            f"  REDIS_USERNAME=viewer REDIS_PASSWORD={viewer} REDIS_URL={stack.redis_url} {_here('numcast')} tail "
            f"--channel {channel}",
        ]
    else:
        lines += [
            f"  {cli} {host} subscribe {channel}",
            f"  REDIS_URL={redact(stack.redis_url)} numcast tail --channel {channel}",
        ]
    return [*lines, ""]
