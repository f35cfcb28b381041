"""The replay log's figures: what a worker recovers without the TCP mirror, and what the log costs to write.

Four parts, each against a Redis of its own on a free port (never one already running):

- kill: a control-plane at `--rate` values/s, a worker and a Socket.IO client; `CLIENT KILL TYPE pubsub`
  `--kills` times. Values lost and duplicated, on the socket and in the sink file.
- restart: the worker is SIGKILLed at a moment its file lacks values it had accepted, and started again
  `--down` seconds later. The downtime, what the file lacked, the history at ready, the sink file.
- redis: Redis killed and started again empty after `--down` seconds, with the control-plane's default queue
  and with a queue too small to hold the outage. Lost values, gaps, time to the first new value.
- flap: Redis killed and started again empty `--flaps` times, 0.3 s down, every 1.5 s, with the default queue:
  values acknowledged by a Redis that then died must not be lost.
- cost: the control-plane's Redis output (the real class, in this process) drains `--messages` envelopes
  as fast as Redis takes them: PUBLISH only (as before the log), and PUBLISH + XADD by one MULTI/EXEC per
  batch after a WATCHed read of the log's newest entry (what the control-plane does); for the choice, also the
  one Lua script per batch it used before (no role may script now: it could hang Redis) and MULTI/EXEC per
  envelope.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import tempfile
import threading
import time

import redis
import socketio
from _common import Proc, get, patch, run

from numcast import replay_log
from numcast.envelope import Envelope
from numcast.local import Redis, free_port
from numcast.metrics import Metrics
from numcast_control.outputs import BATCH, RedisOutput


class Pipeline:
    """Redis, one worker and a control-plane at `rate` values/s without the TCP mirror, in a temp dir."""

    def __init__(self, rate: float, control_env: dict | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="numcast-replay-bench-")
        self.redis = Redis().start()
        self.sink = os.path.join(self.dir, "numbers.jsonl")
        worker_env = {"REDIS_URL": self.redis.url, "TCP_PORT": str(free_port()), "WORKER_NAME": "bench"}
        self.worker = Proc("worker", {**worker_env, "SINK_FILE": self.sink}, os.path.join(self.dir, "worker.log"))
        control_env = {"REDIS_URL": self.redis.url, "RATE_HZ": str(rate), **(control_env or {})}
        self.control = Proc("control", control_env, os.path.join(self.dir, "control.log"))

    def __enter__(self) -> Pipeline:
        self.worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self.control.stop()
        self.worker.stop()
        self.redis.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def pause(self) -> int:
        """Stop generating; wait until the worker has the last value; return its seq."""
        patch(self.control.url + "/api/config", {"paused": True})
        time.sleep(0.2)
        last = get(self.control.admin_url + "/api/status")["seq"]
        deadline = time.monotonic() + 30
        while self.history()[-1:] != [last] and time.monotonic() < deadline:
            time.sleep(0.1)
        return last

    def history(self) -> list[int]:
        return [e["seq"] for e in get(self.worker.url + "/api/history")["envelopes"]]

    def counters(self) -> dict:
        return get(self.worker.admin_url + "/api/status")["counters"]

    def sink_seqs(self) -> list[int]:
        with open(self.sink, "rb") as sink:
            return [json.loads(line)["seq"] for line in sink]


def lost_and_twice(seqs: list[int], first: int, last: int) -> tuple[int, int]:
    """(seqs of first..last never seen, seqs seen more than once)."""
    return len(set(range(first, last + 1)) - set(seqs)), len(seqs) - len(set(seqs))


class Browser:
    """A Socket.IO client over a WebSocket, as the dashboard connects; keeps every seq pushed to it."""

    def __init__(self, url: str) -> None:
        self.seqs: list[int] = []
        self.client = socketio.Client(reconnection=False)
        self.client.on("numbers", lambda batch: self.seqs.extend(e["seq"] for e in batch))
        self.client.connect(url, transports=["websocket"], wait_timeout=10)


def kill_subscribers(args) -> None:
    with Pipeline(args.rate) as run:
        browser = Browser(run.worker.url)
        run.control.start()
        client = redis.Redis.from_url(run.redis.url)
        for _ in range(args.kills):
            time.sleep(0.5)
            client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        last = run.pause()
        time.sleep(0.5)
        counters = run.counters()
        browser.client.disconnect()
        run.worker.stop()
        socket_lost, socket_twice = lost_and_twice(browser.seqs, 1, last)
        sink_lost, sink_twice = lost_and_twice(run.sink_seqs(), 1, last)
        in_order = browser.seqs == sorted(browser.seqs) and run.sink_seqs() == sorted(run.sink_seqs())
        print(
            f"kill: {args.kills} x CLIENT KILL TYPE pubsub at {args.rate:g} values/s: {last} values published, "
            f"{counters['redis_reconnects']} resubscriptions, {counters['accepted']['replay']} read back from the log "
            f"| socket: lost {socket_lost}, twice {socket_twice} | sink: lost {sink_lost}, twice {sink_twice} "
            f"| in seq order: {in_order} | gaps {counters['gaps']}",
            flush=True,
        )


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def kill_with_lines_unwritten(run: Pipeline) -> tuple[int, int]:
    """SIGKILL the worker while its file lacks values it accepted; (last accepted, last in the file)."""
    process = run.worker.process
    while True:
        accepted = run.history()[-1]
        process.send_signal(signal.SIGSTOP)
        while state(process.pid) != "T":
            time.sleep(0.001)
        in_file = run.sink_seqs()[-1]
        if in_file < accepted:
            process.kill()
            process.wait()
            return accepted, in_file
        process.send_signal(signal.SIGCONT)
        time.sleep(0.05)


def restart_worker(args) -> None:
    with Pipeline(args.rate) as run:
        run.control.start()
        time.sleep(5)
        accepted, in_file = kill_with_lines_unwritten(run)
        time.sleep(args.down)
        at_restart = get(run.control.admin_url + "/api/status")["seq"]
        took = run.worker.start()
        history = run.history()
        complete = history == list(range(history[0], history[0] + len(history)))
        covers = history[0] <= in_file + 1 and history[-1] >= at_restart
        last = run.pause()
        run.worker.stop()
        sink_lost, sink_twice = lost_and_twice(run.sink_seqs(), 1, last)
        print(
            f"restart: worker SIGKILLed, started again {args.down:g}s later, at {args.rate:g} values/s: "
            f"{at_restart - accepted} values published while it was down, {accepted - in_file} accepted but not yet "
            f"in its file at the kill | ready {took:.2f}s after start, history {len(history)} values, contiguous "
            f"{complete}, holding the unwritten and the downtime {covers} | sink: {last} values expected, "
            f"lost {sink_lost}, twice {sink_twice}, in order {run.sink_seqs() == sorted(run.sink_seqs())}",
            flush=True,
        )


def restart_redis(args) -> None:
    for queue in ("10000", "100"):
        with Pipeline(args.rate, {"MIRROR_QUEUE": queue}) as run:
            run.control.start()
            time.sleep(3)
            run.redis.process.kill()
            run.redis.process.wait()
            time.sleep(args.down)
            run.redis.start()
            back = time.time()
            newest = run.history()[-1]
            while run.history()[-1] == newest and time.time() - back < 30:
                time.sleep(0.01)
            first_new = time.time() - back
            last = run.pause()
            time.sleep(2.5)  # past the grace period: what never came is a gap now
            counters = run.counters()
            dropped = get(run.control.admin_url + "/api/status")["outputs"][0]["dropped"]
            run.worker.stop()
            seqs = run.sink_seqs()
            sink_lost, sink_twice = lost_and_twice(seqs, 1, last)
            print(
                f"redis: killed, started again empty {args.down:g}s later, MIRROR_QUEUE={queue}: "
                f"control-plane dropped {dropped} | worker: lost {sink_lost}, counted as gaps {counters['gaps']}, "
                f"twice {sink_twice}, in order {seqs == sorted(seqs)} | first new value {first_new:.2f}s after Redis "
                f"was back",
                flush=True,
            )


def flap_redis(args) -> None:
    with Pipeline(args.rate) as run:
        run.control.start()
        for _ in range(args.flaps):
            time.sleep(1.5)
            run.redis.process.kill()
            run.redis.process.wait()
            time.sleep(0.3)
            run.redis.start()
        time.sleep(3)
        last = run.pause()
        time.sleep(2.5)  # past the grace period
        counters = run.counters()
        run.worker.stop()
        seqs = run.sink_seqs()
        lost, twice = lost_and_twice(seqs, 1, last)
        print(
            f"flap: Redis killed and started again empty {args.flaps} times at {args.rate:g} values/s: {last} values "
            f"| sink: lost {lost}, twice {twice}, in order {seqs == sorted(seqs)} | gaps {counters['gaps']}, "
            f"duplicates dropped {counters['duplicates']}",
            flush=True,
        )


# What the control-plane ran before scripting was taken from every Redis user (docs/security.md): the same
# guarantees (a seq the log holds is skipped) in one EVALSHA per batch. Kept here as the reference.
PUBLISH_SCRIPT = """
local log, channel, maxlen, source = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local run, last = tonumber(ARGV[4]), -1
local per_message, lines = tonumber(ARGV[5]), {}
local newest = redis.pcall('XREVRANGE', log, '+', '-', 'COUNT', 1)
local usable = not newest.err
if usable and newest[1] then
  local ms, seq = string.match(newest[1][1], '^(%d+)-(%d+)$')
  if string.match(newest[1][2][2] or '', '"source":%s*"([^"]*)"') == source then
    run, last = tonumber(ms), tonumber(seq)
  elseif tonumber(ms) >= run then
    run = tonumber(ms) + 1
  end
end
local function send(envelope)
  if per_message == 0 then
    redis.call('PUBLISH', channel, envelope)
    return
  end
  lines[#lines + 1] = envelope
  if #lines == per_message then
    redis.call('PUBLISH', channel, table.concat(lines, '\\n'))
    lines = {}
  end
end
local failed = 0
for i = 6, #ARGV do
  local envelope = ARGV[i]
  local seq = string.match(envelope, '"seq":%s*(%d+)')
  if not usable or not seq then
    send(envelope)
    failed = failed + 1
  elseif tonumber(seq) > last then
    send(envelope)
    local id = string.format('%d-%s', run, seq)
    local added = redis.pcall('XADD', log, 'MAXLEN', '~', maxlen, id, 'envelope', envelope)
    if added.err then failed = failed + 1 else last = tonumber(seq) end
  end
end
if #lines > 0 then redis.call('PUBLISH', channel, table.concat(lines, '\\n')) end
return failed
"""


class Bare:
    """The other ways to write the log, measured for the choice; the control-plane uses MULTI/EXEC per batch."""

    def __init__(self, conn: redis.Redis, how: str, maxlen: int, source: str, run: int) -> None:
        self.conn, self.how, self.maxlen, self.source, self.run = conn, how, maxlen, source, run
        self.key = replay_log.key("numbers")
        self.sha = conn.script_load(PUBLISH_SCRIPT)

    def publish(self, lines: list[str]) -> int:
        if self.how == "script per batch":
            return self.conn.evalsha(self.sha, 1, self.key, "numbers", self.maxlen, self.source, self.run, 0, *lines)
        pipe = self.conn.pipeline(transaction=True)  # MULTI/EXEC per envelope: the control-plane picks the ids
        for line in lines:
            seq = line[7 : line.index(",")]  # Envelope.to_json starts with {"seq":N,
            pipe.publish("numbers", line)
            pipe.xadd(self.key, {"envelope": line}, id=f"{self.run}-{seq}", maxlen=self.maxlen, approximate=True)
        pipe.execute()
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(server: Redis, how: str, lines: list[str]) -> tuple[float, float, float]:
    """Envelopes per second the control-plane's Redis output sends `how` it writes, and the CPU µs each costs the
    output's thread and Redis.

    The output sends a batch and waits for the reply, so the two take turns: with a core each, the rate is
    about 1 / (output's + Redis's CPU per envelope), and that sum moves far less with the load than the rate.
    """
    url = server.url
    metrics = Metrics()
    counters = {
        name: metrics.counter(name, name, ("path",)) for name in ("published", "errors", "dropped", "reconnects")
    }
    counters["log_errors"] = metrics.counter("log_errors", "log_errors")
    source, run = "control-bench0", int(time.time() * 1000)
    writer = {"maxlen": 100_000, "source": source, "run": run} if how != "publish only" else None
    output = RedisOutput(url, "numbers", len(lines) + 1, counters, writer)
    if how in ("script per batch", "MULTI/EXEC per envelope"):
        output.writer = Bare(redis.Redis.from_url(url), how, 100_000, source, run)
    conn = redis.Redis.from_url(url)
    conn.delete(replay_log.key("numbers"))
    output.send(lines[:BATCH])  # connected, and the script loaded: not part of the figure
    for line in lines[BATCH:]:
        output.put(line)
    own_cpu: list[float] = []

    def run() -> None:
        started = time.thread_time()
        output.run()
        own_cpu.append(time.thread_time() - started)

    thread = threading.Thread(target=run)
    started, cpu = time.perf_counter(), cpu_seconds(server.process.pid)
    thread.start()
    while output.sent < len(lines) - BATCH:
        time.sleep(0.001)
    took = time.perf_counter() - started
    redis_cpu = cpu_seconds(server.process.pid) - cpu
    output.stop()
    thread.join()
    if how != "publish only" and conn.xlen(replay_log.key("numbers")) < min(len(lines), 100_000):
        raise RuntimeError(f"{how}: the log misses entries")
    sent = len(lines) - BATCH
    return sent / took, own_cpu[0] / sent * 1e6, redis_cpu / sent * 1e6


def cost(args) -> None:
    server = Redis().start()
    try:
        source = "control-bench0"
        lines = [Envelope(n, round(n % 1000 / 7, 6), time.time(), source).to_json() for n in range(1, args.messages)]
        ways = ("publish only", "MULTI/EXEC per batch", "script per batch", "MULTI/EXEC per envelope")
        rates: dict[str, list[float]] = {how: [] for how in ways}
        own: dict[str, list[float]] = {how: [] for how in ways}
        server_cpu: dict[str, list[float]] = {how: [] for how in ways}
        for round_ in range(1, args.rounds + 1):
            for how in ways:  # alternating, so a busy moment of the machine hurts every way alike
                rate, output_us, redis_us = drain(server, how, lines)
                rates[how].append(rate)
                own[how].append(output_us)
                server_cpu[how].append(redis_us)
            print(
                f"cost round {round_}: "
                + ", ".join(
                    f"{how} {rates[how][-1]:,.0f}/s (CPU µs each: output {own[how][-1]:.1f}, Redis "
                    f"{server_cpu[how][-1]:.1f})"
                    for how in ways
                ),
                flush=True,
            )
        median = {how: statistics.median(rates[how]) for how in ways}
        cost = {how: statistics.median(own[how]) + statistics.median(server_cpu[how]) for how in ways}
        print(f"cost: medians of {args.rounds} rounds of {len(lines):,} envelopes in batches of {BATCH}:", flush=True)
        for how in ways:
            output_us, redis_us = statistics.median(own[how]), statistics.median(server_cpu[how])
            print(
                f"  {how:23} {median[how]:>9,.0f}/s (x{median[how] / median['publish only']:.2f}) | CPU per "
                f"envelope: output {output_us:.1f} µs + Redis {redis_us:.1f} µs = {cost[how]:.1f} µs, "
                f"a rate of {1e6 / cost[how]:,.0f}/s (x{cost['publish only'] / cost[how]:.2f})",
                flush=True,
            )
        now, before = "MULTI/EXEC per batch", "script per batch"
        print(
            f"  {now} / {before}: rate x{median[now] / median[before]:.2f}, CPU per envelope "
            f"x{cost[now] / cost[before]:.2f}",
            flush=True,
        )
    finally:
        server.stop()


PARTS = {"kill": kill_subscribers, "restart": restart_worker, "redis": restart_redis, "flap": flap_redis, "cost": cost}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--rate", type=float, default=200.0, help="values per second (default 200)")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--down", type=float, default=3.0, help="seconds a worker or Redis stays down (default 3)")
    parser.add_argument("--flaps", type=int, default=20, help="Redis kills in the flap part")
    parser.add_argument("--messages", type=int, default=100_000, help="envelopes per cost round")
    parser.add_argument("--rounds", type=int, default=3, help="cost rounds")
    args = parser.parse_args()
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    for part in args.parts or PARTS:
        PARTS[part](args)
    return 0


if __name__ == "__main__":
    run(main)
