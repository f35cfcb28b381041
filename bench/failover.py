"""Failover: the Redis primary SIGKILLed mid-stream, again and again, with Sentinel promoting a replica each time.

Three Redis nodes and three Sentinels on loopback (numcast.replicated, with Sentinel's timeouts as
docs/operations.md sets them: down after 5 s), one worker and one control-plane at `--rate` values/s, both
finding the primary through the Sentinels, without the TCP mirror, and a Socket.IO client on the worker. Each of
`--kills` rounds: values flow for `--between` seconds, the primary is SIGKILLed, and once values flow again the
dead node is started again (empty) as a replica. Then the control-plane pauses and the figures are taken:

- lost and twice, and seq order, in the sink file and on the socket;
- failover time per kill: from the kill to the first value generated after it that reached the socket, and the
  part of it Sentinel took (from the kill to the Sentinels naming the new primary);
- the worst delay a value saw: its arrival on the socket minus its `ts`.
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

import socketio
from _common import Proc, get, patch, run

from numcast.local import free_port
from numcast.replicated import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SentinelGroup


class Browser:
    """A Socket.IO client that keeps each value's seq, ts and arrival time."""

    def __init__(self, url: str) -> None:
        self.source = ""  # the control-plane's, once known: values of earlier runs in the log are left out
        self.seen: list[tuple[int, float, float]] = []  # (seq, ts, arrived)
        self.batches: list[list[int]] = []
        self.lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        self.client.on("numbers", self._numbers)
        self.client.connect(url, transports=["websocket"], wait_timeout=10)

    def _numbers(self, batch: list[dict]) -> None:
        now = time.time()
        with self.lock:
            mine = [(e["seq"], e["ts"], now) for e in batch if e["source"] == self.source or not self.source]
            self.seen.extend(mine)
            if mine:
                self.batches.append([seq for seq, _, _ in mine])

    def in_order(self) -> bool:
        """Each batch in seq order, and the batches one after the other without overlap.

        python-socketio's client runs each message's handler in a thread of its own, so two batches that arrive
        close together may be recorded in either order: the batches are compared by their first seq.
        """
        ordered = [seq for batch in sorted(self.batches, key=lambda b: b[0]) for seq in batch]
        return ordered == sorted(ordered) and all(batch == sorted(batch) for batch in self.batches)

    def first_after(self, moment: float) -> float | None:
        """Arrival of the first value generated after `moment`."""
        with self.lock:
            return next((arrived for _, ts, arrived in self.seen if ts > moment), None)


def lost_and_twice(seqs: list[int], last: int) -> tuple[int, int]:
    return len(set(range(1, last + 1)) - set(seqs)), len(seqs) - len(set(seqs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--between", type=float, default=3.0, help="seconds of flow before each kill")
    parser.add_argument("--down-after-ms", type=int, default=DOWN_AFTER_MS)
    parser.add_argument("--failover-timeout-ms", type=int, default=FAILOVER_TIMEOUT_MS)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="numcast-failover-bench-")
    group = SentinelGroup(down_after_ms=args.down_after_ms, failover_timeout_ms=args.failover_timeout_ms).start()
    sink = os.path.join(workdir, "numbers.jsonl")
    worker = Proc(
        "worker",
        {**group.env("worker"), "TCP_PORT": str(free_port()), "WORKER_NAME": "bench", "SINK_FILE": sink},
        os.path.join(workdir, "worker.log"),
    )
    control = Proc("control", {**group.env("control"), "RATE_HZ": str(args.rate)}, os.path.join(workdir, "control.log"))
    try:
        worker.start()
        browser = Browser(worker.url)  # before the first value, which it must get too
        control.start()
        source = browser.source = get(control.url + "/api/status")["source"]
        rounds = []
        for kill in range(1, args.kills + 1):
            time.sleep(args.between)
            node = group.primary()
            if group.role(node) != "master":
                print(f"kill {kill}: the Sentinels name :{node.port}, which is no primary", flush=True)
                return 1
            killed_at = time.time()
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()
            promoted = flowing = None
            while flowing is None and time.time() - killed_at < 60:
                if promoted is None:
                    try:
                        promoted = time.time() if group.primary() is not node else None
                    except RuntimeError:
                        pass
                flowing = browser.first_after(killed_at)
                time.sleep(0.02)
            if flowing is None:
                print(f"kill {kill}: no value flowed within 60 s", flush=True)
                return 1
            rounds.append((flowing - killed_at, (promoted or flowing) - killed_at))
            print(f"kill {kill}: flowing again {rounds[-1][0]:.2f}s after the kill (Sentinel: {rounds[-1][1]:.2f}s)")
            group.bring_back(node)
            deadline = time.monotonic() + 30
            while not group.agreed():
                if time.monotonic() > deadline:
                    print(f"kill {kill}: the Sentinels did not settle within 30 s", flush=True)
                    return 1
                time.sleep(0.1)
        patch(control.url + "/api/config", {"paused": True})
        time.sleep(0.5)
        last = get(control.url + "/api/status")["seq"]
        deadline = time.monotonic() + 30
        while [s for s, _, _ in browser.seen][-1:] != [last] and time.monotonic() < deadline:
            time.sleep(0.1)
        counters = get(worker.url + "/api/status")["counters"]
        browser.client.disconnect()
        worker.stop()
        with open(sink, "rb") as file:
            in_file = [json.loads(line)["seq"] for line in file if json.loads(line)["source"] == source]
        socket_seqs = [s for s, _, _ in browser.seen]
        delays = [arrived - ts for _, ts, arrived in browser.seen]
        missing = sorted(set(range(1, last + 1)) - set(socket_seqs))
        if missing:
            print(f"missing on the socket: {missing[:20]}")
        times = [flowing for flowing, _ in rounds]
        promoted = [sentinel for _, sentinel in rounds]
        print(
            f"failover: {args.kills} x primary SIGKILLed at {args.rate:g} values/s, mirror off, down-after "
            f"{args.down_after_ms} ms: {last} values | sink: lost {lost_and_twice(in_file, last)[0]}, twice "
            f"{lost_and_twice(in_file, last)[1]}, in order {in_file == sorted(in_file)} | socket: lost "
            f"{lost_and_twice(socket_seqs, last)[0]}, twice {lost_and_twice(socket_seqs, last)[1]}, in order "
            f"{browser.in_order()} | gaps {counters['gaps']}\n"
            f"flowing again after the kill: min {min(times):.2f} s, median {statistics.median(times):.2f} s, max "
            f"{max(times):.2f} s (Sentinel named the new primary after: median {statistics.median(promoted):.2f} s, "
            f"max {max(promoted):.2f} s) | worst delay of a value {max(delays):.2f} s, median "
            f"{statistics.median(delays) * 1000:.1f} ms",
            flush=True,
        )
        return 0
    finally:
        control.stop()
        worker.stop()
        group.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    run(main)
