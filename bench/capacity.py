"""What one Redis primary carries: envelopes/s published with 1, 4 and 16 subscribers, with and without the log.

The publisher is the control-plane's own Redis output (the real class, in this process), draining `--messages`
envelopes as fast as Redis takes them: PUBLISH only, PUBLISH + XADD to the replay log (the one MULTI/EXEC per
batch the control-plane runs), the same with the AOF on (appendfsync everysec) as each node of the HA variant keeps it
(infra/k8s-ha), and that with the variant's two replicas attached (they get every PUBLISH and XADD too).

The subscribers are bare ones, each a process of its own reading the channel with hiredis and counting, not
numcast workers: the figure is Redis's, and a worker's Python (its sink, its browsers) would take the machine's
two cores long before Redis's one. What Redis spends per subscriber is the same whoever reads: it copies each
message into every subscriber's output buffer and writes it to its socket.

Two figures per configuration, medians of `--rounds` rounds (configurations alternate, so a busy moment of the
machine hurts each alike):
- the rate: envelopes/s from the first published to the last received by every subscriber;
- Redis's CPU per envelope (from /proc), and the ceiling it implies: 1 / that, the envelopes/s one core of Redis
  carries when nothing else competes for it. On this shared two-core machine the rate moves with the load, the CPU
  per envelope far less; docs/operations.md ("One primary's ceiling") reads the ceiling from it.

The reference is 1 subscriber, PUBLISH only; every other line gives its ratio to it. A Redis of its own on a free
port, never one already running: Debian's Redis 7 (the cluster's line) where installed, else the PyPI server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import threading
import time

import hiredis
import redis
from _common import UNLIMITED_PUBSUB, cpu_seconds, run

from numcast import replay_log
from numcast.envelope import Envelope
from numcast.local import Redis, redis_binary
from numcast.metrics import Metrics
from numcast_control.outputs import BATCH, RedisOutput

CHANNEL = "numbers"
SYSTEM_REDIS = "/usr/bin/redis-server"
MODES = ("publish", "publish + log", "publish + log + AOF", "HA: + 2 replicas")
REFERENCE = (1, "publish")
_SPAWN = multiprocessing.get_context("spawn")  # subscribers share nothing with this process


def subscriber(port: int, ready, count, stop) -> None:
    """A bare subscriber: SUBSCRIBE, then count the messages until told to stop."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$" + str(len(CHANNEL)).encode() + b"\r\n" + CHANNEL.encode() + b"\r\n")
    reader = hiredis.Reader()
    sock.settimeout(0.2)
    received = 0
    subscribed = False
    while not stop.is_set():
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not data:
            break
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if reply[0] == b"message":
                received += 1
            elif reply[0] == b"subscribe" and not subscribed:
                subscribed = True
                ready.release()
        count.value = received
    sock.close()


def replicate(server: Redis, replicas: list[Redis]) -> None:
    """Attach `replicas` to `server` and wait until each is in sync."""
    for replica in replicas:
        redis.Redis.from_url(replica.url).replicaof("127.0.0.1", server.port)
    conn, deadline = redis.Redis.from_url(server.url), time.monotonic() + 60
    while True:
        info = conn.info("replication")
        online = [info.get(f"slave{n}", {}).get("state") == "online" for n in range(len(replicas))]
        if info["connected_slaves"] == len(replicas) and all(online):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replicas did not sync: {info}")
        time.sleep(0.02)


def measure(server: Redis, replicas: list[Redis], subscribers: int, mode: str, lines: list[str]) -> tuple[float, float]:
    """(envelopes/s until every subscriber had them all, Redis's CPU µs per envelope)."""
    conn = redis.Redis.from_url(server.url)
    for replica in replicas:
        redis.Redis.from_url(replica.url).replicaof("NO", "ONE")
    conn.delete(replay_log.key(CHANNEL))
    if mode.startswith("HA"):
        replicate(server, replicas)
    conn.config_set("appendonly", "yes" if "AOF" in mode or mode.startswith("HA") else "no")
    conn.config_set("appendfsync", "everysec")
    while conn.info("persistence").get("aof_rewrite_in_progress"):  # turning the AOF on writes it first
        time.sleep(0.01)
    ready, stop = _SPAWN.Semaphore(0), _SPAWN.Event()
    counts = [_SPAWN.Value("q", 0, lock=False) for _ in range(subscribers)]
    processes = [_SPAWN.Process(target=subscriber, args=(server.port, ready, c, stop)) for c in counts]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            if not ready.acquire(timeout=30):
                raise RuntimeError("a subscriber did not subscribe")
        metrics = Metrics()
        counters = {n: metrics.counter(n, n, ("path",)) for n in ("published", "errors", "dropped", "reconnects")}
        counters["log_errors"] = metrics.counter("log_errors", "log_errors")
        logged = mode != "publish"
        writer = {"maxlen": 100_000, "source": "capacity0", "run": int(time.time() * 1000)} if logged else None
        output = RedisOutput(server.url, CHANNEL, len(lines) + 1, counters, writer)
        output.send(lines[:BATCH])  # connected: not part of the figure
        while any(c.value < BATCH for c in counts):
            time.sleep(0.001)
        for line in lines[BATCH:]:
            output.put(line)
        thread = threading.Thread(target=output.run)
        started, cpu = time.perf_counter(), cpu_seconds(server.process.pid)
        thread.start()
        deadline = time.monotonic() + 300
        while any(c.value < len(lines) for c in counts):
            if time.monotonic() > deadline:
                raise RuntimeError(f"subscribers stuck at {[c.value for c in counts]} of {len(lines)}")
            time.sleep(0.001)
        took = time.perf_counter() - started
        redis_cpu = cpu_seconds(server.process.pid) - cpu
        output.stop()
        thread.join()
        if writer and conn.xlen(replay_log.key(CHANNEL)) < min(len(lines), 100_000):
            raise RuntimeError(f"{mode}: the log misses entries")
        sent = len(lines) - BATCH
        if redis_cpu <= 0:
            raise RuntimeError("Redis's CPU did not move a clock tick: give it more --messages")
        return sent / took, redis_cpu / sent * 1e6
    finally:
        stop.set()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000, help="envelopes per configuration and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (the medians are printed)")
    parser.add_argument("--subscribers", default="1,4,16", help="comma-separated subscriber counts")
    args = parser.parse_args()
    counts = [int(n) for n in args.subscribers.split(",")]
    configurations = [(n, mode) for n in counts for mode in MODES]
    if REFERENCE not in configurations:
        configurations.insert(0, REFERENCE)
    binary = SYSTEM_REDIS if os.access(SYSTEM_REDIS, os.X_OK) else redis_binary()
    server = Redis(binary=binary).start()
    replicas = [Redis(binary=binary).start() for _ in range(2)]
    try:
        conn = redis.Redis.from_url(server.url)
        # Unbounded for the bench: a subscriber that falls behind while 16 share two cores catches up, rather
        # than being disconnected by the default limit (32 MB), which would end the round, not measure it.
        conn.config_set("client-output-buffer-limit", UNLIMITED_PUBSUB)
        version = conn.info("server")["redis_version"]
        print(f"Redis {version}, {os.cpu_count()} cores; {args.messages:,} envelopes per round, batches of {BATCH}")
        lines = [
            Envelope(n, round(n % 1000 / 7, 6), time.time(), "capacity0").to_json() for n in range(1, args.messages + 1)
        ]
        rates: dict[tuple, list[float]] = {c: [] for c in configurations}
        cpu: dict[tuple, list[float]] = {c: [] for c in configurations}
        for round_ in range(1, args.rounds + 1):
            for configuration in configurations:
                rate, us = measure(server, replicas, *configuration, lines)
                rates[configuration].append(rate)
                cpu[configuration].append(us)
                n, mode = configuration
                print(
                    f"round {round_}: {n:>2} subscribers, {mode:19} {rate:>9,.0f}/s, Redis {us:.2f} µs each", flush=True
                )
        rate_ref = statistics.median(rates[REFERENCE])
        cpu_ref = statistics.median(cpu[REFERENCE])
        print(f"medians of {args.rounds} rounds; reference: {REFERENCE[0]} subscriber, {REFERENCE[1]}")
        header = f"{'subscribers':>11}  {'mode':19} {'envelopes/s':>12} {'ratio':>6}  {'Redis µs/env':>12}"
        print(f"{header}  {'ceiling/s':>10}")
        for configuration in configurations:
            n, mode = configuration
            rate, us = statistics.median(rates[configuration]), statistics.median(cpu[configuration])
            print(
                f"{n:>11}  {mode:19} {rate:>12,.0f} {rate / rate_ref:>5.2f}x  {us:>12.2f}  {1e6 / us:>10,.0f}"
                f"  (CPU x{us / cpu_ref:.2f})"
            )
    finally:
        for one in (server, *replicas):
            one.stop()
    return 0


if __name__ == "__main__":
    run(main)
