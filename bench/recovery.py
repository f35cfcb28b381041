"""How long from a Redis restart to the first new value in a browser, with no TCP mirror to hide the outage.

A control-plane publishes at `--rate` values per second, a worker subscribes, and a Socket.IO client (the
dashboard's own transport: a WebSocket to the worker) records when each value arrives. Each round kills
Redis, waits `--down` seconds, starts it again on the same port, and measures from the moment Redis answers
PING to the arrival of the first value published after that moment.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import socketio
from _common import run

from numcast.local import wait_http
from numcast.stack import Stack


class Browser:
    """Keeps the arrival time of every value a worker pushes."""

    def __init__(self, url: str) -> None:
        self.arrivals: list[tuple[float, float]] = []  # (envelope ts, arrival time)
        self.lock = threading.Lock()
        self.client = socketio.Client(reconnection=True)
        self.client.on("numbers", self._numbers)
        self.client.connect(url, transports=["websocket"], wait_timeout=10)

    def _numbers(self, batch: list[dict]) -> None:
        now = time.time()
        with self.lock:
            self.arrivals.extend((envelope["ts"], now) for envelope in batch)

    def first_after(self, moment: float, timeout: float) -> float | None:
        """Arrival time of the first value published after `moment`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [arrived for ts, arrived in self.arrivals if ts > moment]
            if found:
                return min(found)
            time.sleep(0.01)
        return None


def main() -> int:
    """Run the rounds and print each one and the median."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20.0, help="values per second (default 20)")
    parser.add_argument("--down", type=float, default=3.0, help="seconds Redis stays down (default 3)")
    args = parser.parse_args()
    print(f"recovery bench: {args.rounds} rounds, {args.rate:g} values/s, Redis down {args.down:g}s", flush=True)
    took: list[float] = []
    env = {"LOG_LEVEL": "WARNING"}
    with Stack(1, mirror=False, env=env, control_env={"RATE_HZ": str(args.rate)}) as stack:
        redis = stack.embedded
        wait_http(stack.worker_urls[0] + "/readyz", 30)
        wait_http(stack.control_url + "/readyz", 30)
        browser = Browser(stack.worker_urls[0])
        for round_ in range(1, args.rounds + 1):
            redis.process.kill()
            redis.process.wait()
            time.sleep(args.down)
            redis.start()
            back = time.time()
            arrived = browser.first_after(back, timeout=30)
            if arrived is None:
                print(f"round {round_}: no value within 30 s of the restart", flush=True)
                continue
            took.append(arrived - back)
            print(
                f"round {round_}: first new value in the browser {arrived - back:.2f}s after Redis answered", flush=True
            )
            time.sleep(1.0)
        browser.client.disconnect()
    if took:
        print(f"median {statistics.median(took):.2f}s, worst {max(took):.2f}s over {len(took)} rounds")
    return 0 if took else 1


if __name__ == "__main__":
    run(main)
