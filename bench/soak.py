"""Soak: the pipeline without the TCP mirror for `--minutes` (30 by default) at `--rate` values/s with
`--clients` Socket.IO clients, under three faults: CLIENT KILL TYPE pubsub every minute, Redis killed and
started again empty every 5 minutes, the worker SIGKILLed and started again 3 s later every 10 minutes.

It prints the RSS and open file descriptors of the control-plane and of each run of the worker (start, peak,
end: they must stay flat), and the values lost and duplicated in the sink file and on the sockets (they must
be 0). The clients behave like the dashboard: WebSocket only, and a backfill from /api/history at every
(re)connect, so a value they got once live and once from the backfill is no duplicate.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request

import redis
from _common import Proc, run

from numcast.local import Redis, free_port

SAMPLE_SECONDS = 5.0
_SPAWN = multiprocessing.get_context("spawn")


def get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


class Seen:
    """Which seqs came, live or not, as bitmaps: 50 clients x 360,000 values stay small."""

    def __init__(self) -> None:
        self.any, self.live = bytearray(), bytearray()
        self.first, self.twice = 0, 0

    def add(self, seq: int, live: bool) -> None:
        if seq >= len(self.any):
            grow = seq + 1 - len(self.any) + 65536
            self.any.extend(bytes(grow))
            self.live.extend(bytes(grow))
        if live:
            self.twice += self.live[seq]
            self.live[seq] = 1
        self.any[seq] = 1
        self.first = min(self.first, seq) if self.first else seq

    def lost(self, last: int) -> int:
        """Seqs from the first one seen up to `last` never seen."""
        return sum(1 for seq in range(self.first, last + 1) if seq >= len(self.any) or not self.any[seq])


class Client:
    """A Socket.IO client as the dashboard is: WebSocket only, backfilling from /api/history at each connect."""

    def __init__(self, url: str) -> None:
        import socketio

        self.url, self.seen, self.lock = url, Seen(), threading.Lock()
        self.sio = socketio.Client(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=2)
        self.sio.on("numbers", self._numbers)
        self.sio.on("connect", lambda: self.sio.start_background_task(self._backfill))
        self.sio.connect(url, transports=["websocket"], wait_timeout=10)

    def _numbers(self, batch: list[dict]) -> None:
        with self.lock:
            for envelope in batch:
                self.seen.add(envelope["seq"], live=True)

    def _backfill(self) -> None:
        try:
            envelopes = get(self.url + "/api/history")["envelopes"]
        except OSError:
            return  # the worker went away again; the next connect backfills
        with self.lock:
            for envelope in envelopes:
                self.seen.add(envelope["seq"], live=False)


def run_clients(url: str, count: int, commands, results) -> None:
    """In a process of its own: `count` clients until told the last seq; then report each one's losses."""
    clients = [Client(url) for _ in range(count)]
    results.put("connected")
    last = commands.get()
    time.sleep(1.0)  # the last batches on their way
    results.put([(client.seen.lost(last), client.seen.twice) for client in clients])
    for client in clients:
        client.sio.disconnect()


def proc_figures(pid: int) -> tuple[float, int]:
    """(RSS in MiB, open file descriptors) of `pid`."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Sampled(Proc):
    """A numcast service that can be killed and started again, its RSS and fds sampled in each run."""

    def __init__(self, command: str, env: dict[str, str], directory: str) -> None:
        super().__init__(command, env, os.path.join(directory, f"{command}.log"))
        self.runs: list[list[tuple[float, int]]] = []  # per start: (RSS, fds) samples

    def start(self) -> None:
        super().start()
        self.runs.append([])
        self.sample()

    def sample(self) -> None:
        try:
            self.runs[-1].append(proc_figures(self.process.pid))
        except (OSError, StopIteration):
            pass  # between a kill and the next start

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def report(self) -> list[str]:
        lines = []
        for n, samples in enumerate(self.runs, 1):
            if samples:
                rss, fds = [s[0] for s in samples], [s[1] for s in samples]
                lines.append(
                    f"  {self.command} run {n}: RSS {rss[0]:.1f} / {max(rss):.1f} / {rss[-1]:.1f} MiB, "
                    f"fds {fds[0]} / {max(fds)} / {fds[-1]} (start / peak / end, {len(samples)} samples)"
                )
        return lines


def sink_figures(path: str, backups: int, last: int) -> tuple[int, int, bool]:
    """(seqs 1..last missing from the sink files, lines seen twice, in order) over the file and its backups."""
    seen, twice, previous, in_order = Seen(), 0, 0, True
    for name in [f"{path}.{n}" for n in range(backups, 0, -1)] + [path]:
        if os.path.exists(name):
            with open(name, "rb") as sink:
                for line in sink:
                    seq = json.loads(line)["seq"]
                    twice += seq < len(seen.any) and seen.any[seq]
                    seen.add(seq, live=False)
                    in_order = in_order and seq > previous
                    previous = seq
    seen.first = 1
    return seen.lost(last), twice, in_order


class Soak:
    """Redis, a worker, a control-plane and a process of clients; the faults on schedule; the figures at the end."""

    def __init__(self, args) -> None:
        self.args = args
        self.directory = tempfile.mkdtemp(prefix="numcast-soak-")
        self.server = Redis().start()
        self.sink, self.backups = os.path.join(self.directory, "numbers.jsonl"), 20
        worker_env = {"REDIS_URL": self.server.url, "TCP_PORT": str(free_port()), "WORKER_NAME": "soak"}
        worker_env |= {"SINK_FILE": self.sink, "SINK_BACKUPS": str(self.backups)}
        worker_env["HISTORY_SIZE"] = "2000"  # 10 s at 200/s: a client's backfill covers the worker's restart
        self.worker = Sampled("worker", worker_env, self.directory)
        self.control = Sampled("control", {"REDIS_URL": self.server.url, "RATE_HZ": str(args.rate)}, self.directory)
        self.commands, self.results = _SPAWN.Queue(), _SPAWN.Queue()
        self.clients: multiprocessing.Process | None = None
        self.faults = {"client kill": 0, "redis restart": 0, "worker restart": 0}

    def start(self) -> None:
        self.worker.start()
        self.clients = _SPAWN.Process(
            target=run_clients, args=(self.worker.url, self.args.clients, self.commands, self.results), daemon=True
        )
        self.clients.start()
        self.results.get(timeout=120)
        self.control.start()

    def run(self) -> None:
        """Inject the faults on schedule until the time is up, sampling the processes every few seconds."""
        args, started = self.args, time.monotonic()
        # Offsets keep the faults apart: kills at 60 s, 120 s...; Redis at 320 s...; the worker at 640 s...
        due = {"client kill": args.kill_every, "redis restart": args.redis_every + 20}
        due["worker restart"] = args.worker_every + 40
        every = {"client kill": args.kill_every, "redis restart": args.redis_every}
        every["worker restart"] = args.worker_every
        inject = {"client kill": self.kill_subscribers, "redis restart": self.restart_redis}
        inject["worker restart"] = self.restart_worker
        next_sample, next_report = started, started + 60
        while time.monotonic() < started + args.minutes * 60:
            elapsed = time.monotonic() - started
            for fault, at in due.items():
                if elapsed >= at:
                    inject[fault]()
                    due[fault] += every[fault]
                    self.faults[fault] += 1
            if time.monotonic() >= next_sample:
                self.worker.sample()
                self.control.sample()
                next_sample += SAMPLE_SECONDS
            if time.monotonic() >= next_report:
                counters = get(self.worker.admin_url + "/api/status")["counters"]
                print(
                    f"  {elapsed / 60:5.1f} min: accepted {sum(counters['accepted'].values())}, from the log "
                    f"{counters['accepted']['replay']}, gaps {counters['gaps']}, faults {self.faults}",
                    flush=True,
                )
                next_report += 60
            time.sleep(0.2)

    def kill_subscribers(self) -> None:
        redis.Redis.from_url(self.server.url).execute_command("CLIENT", "KILL", "TYPE", "pubsub")

    def restart_redis(self) -> None:
        self.server.process.kill()
        self.server.process.wait()
        time.sleep(1.0)
        self.server.start()

    def restart_worker(self) -> None:
        self.worker.kill()
        time.sleep(3.0)
        self.worker.start()

    def finish(self) -> None:
        """Stop generating, let everything arrive, then count and print."""
        request = urllib.request.Request(
            self.control.url + "/api/config",
            data=b'{"paused": true}',
            method="PATCH",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=30).close()
        time.sleep(0.5)
        last = get(self.control.admin_url + "/api/status")["seq"]
        deadline = time.monotonic() + 30
        while get(self.worker.url + "/api/history?limit=1")["envelopes"][-1]["seq"] != last:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(2.5)  # past the grace period
        self.worker.sample()
        self.control.sample()
        counters = get(self.worker.admin_url + "/api/status")["counters"]
        self.commands.put(last)
        per_client = self.results.get(timeout=300)
        self.worker.stop()
        sink_lost, sink_twice, in_order = sink_figures(self.sink, self.backups, last)
        print(f"soak: {last} values published; faults {self.faults}")
        print("\n".join(self.control.report() + self.worker.report()))
        print(
            f"  sink file: lost {sink_lost}, twice {sink_twice}, in seq order {in_order}; worker: gaps "
            f"{counters['gaps']}, read back from the log {counters['accepted']['replay']}, resubscriptions "
            f"{counters['redis_reconnects']}"
        )
        print(
            f"  sockets ({len(per_client)} clients): lost {sum(lost for lost, _ in per_client)} "
            f"(worst client {max(lost for lost, _ in per_client)}), twice {sum(twice for _, twice in per_client)}",
            flush=True,
        )

    def close(self) -> None:
        self.control.stop()
        self.worker.stop()
        if self.clients is not None and self.clients.is_alive():
            self.clients.terminate()
        self.server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0, help="values per second (default 200)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between CLIENT KILLs")
    parser.add_argument("--redis-every", type=float, default=300.0, help="seconds between Redis restarts")
    parser.add_argument("--worker-every", type=float, default=600.0, help="seconds between worker restarts")
    args = parser.parse_args()
    soak = Soak(args)
    try:
        soak.start()
        print(
            f"soak: {args.minutes:g} min at {args.rate:g} values/s, {args.clients} clients, no TCP mirror; "
            f"CLIENT KILL every {args.kill_every:g}s, Redis restart every {args.redis_every:g}s, "
            f"worker restart every {args.worker_every:g}s",
            flush=True,
        )
        soak.run()
        soak.finish()
    finally:
        soak.close()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run(main)
