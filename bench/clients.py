"""Fan-out at scale: N raw WebSocket browsers on one worker, and as many on a bare asyncio anchor, at once.

Values are published at a given rate, each stamped with its publish time (`ts`). Both servers subscribe to the
same channel; the browsers, spread over several processes so the measuring side does not saturate, record
for every value the time from publish to arrival. Printed per server: latency p50/p95/p99/max, values lost,
CPU per delivered value and RSS (from /proc), and the time for all browsers to connect; then the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import sys
import time
from array import array

import anchor
from _common import (
    CHANNEL,
    Flood,
    Sampler,
    Worker,
    bench_redis,
    cpu_seconds,
    new_event,
    new_queue,
    pick,
    rss_mib,
    spawn,
)
from _websocket import Browser

CONCURRENT_CONNECTS = 50  # per process: a browser crowd reconnecting at once is spread by its own backoff
DRAIN_SECONDS = 2.0  # after the last publish, for what is still on its way


def browsers_process(targets: list[tuple[str, int, int]], deflate: bool, timeout: float, ready, stop, results):
    """Connect `count` browsers to each (name, port, count), report, record until `stop`, report again."""
    asyncio.run(_browsers(targets, deflate, timeout, ready, stop, results))


async def _browsers(targets, deflate, timeout, ready, stop, results) -> None:
    loop = asyncio.get_running_loop()
    latencies = {name: array("d") for name, _, _ in targets}
    browsers: dict[str, list[Browser]] = {name: [] for name, _, _ in targets}
    failed = dict.fromkeys(browsers, 0)
    errors: list[str] = []
    gate = asyncio.Semaphore(CONCURRENT_CONNECTS)

    async def open_one(name: str, port: int) -> None:
        async with gate:
            try:
                _, browser = await loop.create_connection(
                    lambda: Browser("127.0.0.1", port, deflate, latencies[name]), "127.0.0.1", port
                )
                await asyncio.wait_for(browser.connected, timeout)
                browsers[name].append(browser)
            except (TimeoutError, OSError, ConnectionError) as exc:
                failed[name] += 1
                if len(errors) < 3:
                    errors.append(f"{name}: {exc!r}")

    started = time.time()
    await asyncio.gather(*(open_one(name, port) for name, port, count in targets for _ in range(count)))
    ready.put({"started": started, "ended": time.time(), "failed": failed, "errors": errors})
    for values in latencies.values():
        del values[:]  # only what the flood brings
    while not stop.is_set():
        await asyncio.sleep(0.05)
    results.put(
        {
            name: {
                "latencies": latencies[name].tobytes(),
                "counts": [b.count for b in group],
                "duplicates": sum(b.duplicates for b in group),
                "disorder": sum(b.disorder for b in group),
                "closed": sum(b.closed for b in group),
                "frames": sum(b.frames_in for b in group),
            }
            for name, group in browsers.items()
        }
    )
    for group in browsers.values():
        for browser in group:
            browser.transport.close()


def share(total: int, parts: int, i: int) -> int:
    """Part `i` of `total` split as evenly as possible into `parts`."""
    return total // parts + (i < total % parts)


def percentile(ordered: array | list, p: float) -> float:
    """The p-th percentile of sorted values (nearest rank), 0 for none."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


class Side:
    """One server under test (the worker or the anchor): its process, and what its browsers saw."""

    def __init__(self, name: str, port: int, pid: int, clients: int) -> None:
        self.name, self.port, self.pid, self.clients = name, port, pid, clients
        self.latencies = array("d")
        self.counts: list[int] = []
        self.duplicates = self.disorder = self.closed = self.frames = self.failed = 0
        self.connect_started, self.connect_ended = float("inf"), 0.0
        self.cpu = self.rss_start = self.rss_peak = self.rss_end = 0.0

    def add(self, part: dict) -> None:
        """Merge one browser process's report."""
        self.latencies.frombytes(part["latencies"])
        self.counts += part["counts"]
        for key in ("duplicates", "disorder", "closed", "frames"):
            setattr(self, key, getattr(self, key) + part[key])

    def report(self, sent: int) -> dict:
        """The figures for this side."""
        ordered = sorted(self.latencies)
        delivered = sum(self.counts)
        return {
            "delivered": delivered,
            "lost": sent * len(self.counts) - delivered,
            "p50": percentile(ordered, 50) * 1000,
            "p95": percentile(ordered, 95) * 1000,
            "p99": percentile(ordered, 99) * 1000,
            "max": (ordered[-1] if ordered else 0.0) * 1000,
            "us_per_delivery": self.cpu / delivered * 1e6 if delivered else 0.0,
            "values_per_frame": delivered / self.frames if self.frames else 0.0,
        }


def run(args, server, worker: Worker) -> None:
    """Start the anchor and the browsers, publish, and print; everything started here is stopped here."""
    ready, stop, results = new_queue(), new_event(), new_queue()
    anchor_stop, anchor_ready = new_event(), new_queue()
    processes = []
    flood = None
    try:
        sides = [Side("worker", worker.port, worker.pid, args.clients)]
        if args.anchor_clients:
            processes.append(spawn(anchor.main, server.url, CHANNEL, anchor_ready, anchor_stop))
            info = anchor_ready.get(timeout=30)
            sides.append(Side("anchor", info["port"], info["pid"], args.anchor_clients))
        for i in range(args.procs):
            targets = [(s.name, s.port, share(s.clients, args.procs, i)) for s in sides]
            processes.append(spawn(browsers_process, targets, args.deflate, args.connect_timeout, ready, stop, results))
        for _ in range(args.procs):
            part = ready.get(timeout=args.connect_timeout * (1 + args.clients // 100) + 60)
            for side in sides:
                side.failed += part["failed"][side.name]
                side.connect_started = min(side.connect_started, part["started"])
                side.connect_ended = max(side.connect_ended, part["ended"])
            for error in part["errors"]:
                print(f"  connect error: {error}", flush=True)
        connected = pick(worker.metrics(), "numcast_connected_clients")
        time.sleep(1)  # start-up allocations settle before the baselines
        for side in sides:
            side.rss_start, side.cpu = rss_mib(side.pid), cpu_seconds(side.pid)
        with Sampler(lambda: [rss_mib(side.pid) for side in sides], 0.5) as rss:
            count = int(args.rate * args.seconds)
            flood = Flood(server.url, count, rate=args.rate, pipeline=max(1, int(args.rate / 100))).start()
            sent = flood.wait(timeout=args.seconds + 60)
            time.sleep(DRAIN_SECONDS)
            for side in sides:
                side.cpu = cpu_seconds(side.pid) - side.cpu
        metrics = worker.metrics()
        stop.set()
        for _ in range(args.procs):
            report = results.get(timeout=60)
            for side in sides:
                side.add(report[side.name])
        for i, side in enumerate(sides):
            samples = [sample[i] for sample in rss.samples]
            side.rss_end = rss_mib(side.pid)
            side.rss_peak = max([side.rss_start, side.rss_end, *samples])
        show(args, sides, sent, connected, metrics)
    finally:
        stop.set()
        anchor_stop.set()
        if flood is not None:
            flood.stop()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)


def show(args, sides: list[Side], sent: dict, connected: float, metrics: dict) -> None:
    """Print one line per side, then the worker's ratios to the anchor."""
    span = sent["ended"] - sent["started"]
    dropped = pick(metrics, 'numcast_dropped_total{path="browser"}')
    print(
        f"published {sent['sent']} values at {sent['sent'] / span:,.1f}/s; worker counted {connected:.0f} "
        f"browsers, dropped {dropped:.0f}, refused "
        f"{pick(metrics, 'numcast_browsers_refused_total'):.0f}",
        flush=True,
    )
    figures = {}
    for side in sides:
        r = figures[side.name] = side.report(sent["sent"])
        print(
            f"{side.name:>6}: {len(side.counts)}/{side.clients} browsers connected in "
            f"{side.connect_ended - side.connect_started:.2f}s ({side.failed} failed, {side.closed} closed since) | "
            f"latency ms p50 {r['p50']:.1f} p95 {r['p95']:.1f} p99 {r['p99']:.1f} max {r['max']:.1f} | "
            f"delivered {r['delivered']}, lost {r['lost']}, dup {side.duplicates}, out of order {side.disorder}, "
            f"{r['values_per_frame']:.1f} values/frame | CPU {side.cpu:.2f}s = {r['us_per_delivery']:.2f} µs/delivery, "
            f"{side.cpu / (span + DRAIN_SECONDS) * 100:.0f}% of a core | RSS MiB start {side.rss_start:.0f} "
            f"peak {side.rss_peak:.0f} end {side.rss_end:.0f}",
            flush=True,
        )
    if "anchor" in figures:
        w, a = figures["worker"], figures["anchor"]
        print(
            "worker/anchor: "
            + ", ".join(f"{k} {w[k] / a[k]:.2f}" for k in ("p50", "p99", "us_per_delivery") if a[k])
            + f" (anchor with {args.anchor_clients} browsers)",
            flush=True,
        )


def main() -> int:
    """Parse the options, start Redis and a worker, run once."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100, help="browsers on the worker")
    parser.add_argument(
        "--anchor-clients", type=int, default=None, help="browsers on the anchor (default: --clients; 0: no anchor)"
    )
    parser.add_argument("--rate", type=float, default=100, help="values published per second")
    parser.add_argument("--seconds", type=float, default=10, help="how long to publish")
    parser.add_argument("--procs", type=int, default=4, help="browser processes")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate, as browsers do")
    parser.add_argument("--connect-timeout", type=float, default=20, help="seconds for one browser to connect")
    parser.add_argument("--gevent", action="store_true", help="run the worker under gevent (bench/gevent_worker.py)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a worker setting, e.g. ASYNC_MODE=threading"
    )
    args = parser.parse_args()
    if args.anchor_clients is None:
        args.anchor_clients = args.clients
    env = dict(item.split("=", 1) for item in args.env)
    print(
        f"clients bench: {args.clients} browsers on the worker, {args.anchor_clients} on the anchor, in "
        f"{args.procs} processes; {args.rate:g} values/s for {args.seconds:g}s; "
        f"deflate {'on' if args.deflate else 'off'}; "
        f"worker env {env or 'defaults'}{' under gevent' if args.gevent else ''}",
        flush=True,
    )
    command = [sys.executable, os.path.join(os.path.dirname(__file__), "gevent_worker.py")] if args.gevent else None
    try:
        with bench_redis() as server, Worker(server.url, command=command, **env) as worker:
            run(args, server, worker)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, queue.Empty) as exc:
        print(f"clients bench failed: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
