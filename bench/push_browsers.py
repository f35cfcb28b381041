"""Push to browser: series pushed through the control-plane's HTTP API, live in browsers that each watch a few.

`--series` series (one label set each) get `--rate` samples per second each, sent by `--pushers` processes as
JSON batches to `POST /api/push` (one request per pusher per tick, a sample of each of its series, stamped with
`ts` = the time the pusher built the request). `--browsers` raw WebSocket browsers (bench/_websocket.py, spread
over `--procs` processes) each `subscribe` to `--watch` series; `--distinct` sets of series are shared among them
(one each when it equals `--browsers`). For every value a browser records the time from `ts` to its arrival.

The reference, in the same run: a bare redis-py subscriber of the push channel, which records the same time for
every sample: what the HTTP push, the control-plane and Redis cost before any worker touches a sample.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import queue
import random
import sys
import tempfile
import time
from array import array

import redis
from _common import Proc, Worker, bench_redis, cpu_seconds, new_event, new_queue, pick, spawn
from _websocket import Browser, frame

DRAIN_SECONDS = 2.0
CONCURRENT_CONNECTS = 50


def series_name(n: int) -> str:
    return f"bench_series_{n:03d}"


def pusher(url: str, series: list[int], rate: float, seconds: float, phase: float, ready, start, results) -> None:
    """POST one batch per tick (a sample of each of `series`) for `seconds`, on a drift-free schedule that starts
    `phase` of a tick late: pods push on clocks of their own, not all at the same instant."""
    host, port = url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    ready.put(True)
    start.wait(60)
    time.sleep(phase / rate)
    sent, errors, n, began = dict.fromkeys(series, 0), 0, 0, time.time()
    while time.time() - began < seconds:
        ts = time.time()
        samples = [{"series": series_name(s), "labels": {"pod": f"p{s:03d}"}, "value": n, "ts": ts} for s in series]
        conn.request("POST", "/api/push", json.dumps({"samples": samples}), {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status == 200:
            for s in series:
                sent[s] += 1
        else:
            errors += 1
        n += 1
        ahead = began + n / rate - time.time()
        if ahead > 0:
            time.sleep(ahead)
    results.put({"sent": sent, "errors": errors})


class Watcher(Browser):
    """A raw browser that subscribes to its series once joined; counts values per series, and any out of order."""

    def __init__(self, host, port, latencies, series: list[str]) -> None:
        super().__init__(host, port, False, latencies)
        self.series = series
        self.per_series = dict.fromkeys(series, 0)
        self.last_seq: dict[str, int] = {}  # per source: seqs grow per source, not across sources
        self.foreign = 0  # values of a series it did not ask for, once its subscription was acknowledged
        self.subscribed = False  # before the acknowledgement it gets the generator's series, as any new browser

    def _message(self, payload: bytes, now: float) -> None:
        if payload.startswith(b'42["numbers",'):
            self.frames_in += 1
            for value in json.loads(payload[2:])[1]:
                if not self.subscribed:
                    continue
                self.latencies.append(now - value["ts"])
                name = value.get("series")
                if name in self.per_series:
                    self.per_series[name] += 1
                else:
                    self.foreign += 1
                if value["seq"] <= self.last_seq.get(value["source"], -1):
                    self.disorder += 1
                self.last_seq[value["source"]] = value["seq"]
                self.count += 1
        elif payload.startswith(b"40"):
            body = json.dumps({"series": self.series}).encode()
            self.transport.write(frame(b'421["subscribe",' + body + b"]", True))  # with an acknowledgement, id 1
        elif payload.startswith(b"431["):
            self.subscribed = b'"subscribed"' in payload
            if self.subscribed and not self.connected.done():
                self.connected.set_result(time.time())
            elif not self.connected.done():
                self._fail(f"subscribe refused: {payload[:120]!r}")
        else:
            super()._message(payload, now)


def browsers_process(port: int, sets: list[list[str]], ready, stop, results) -> None:
    asyncio.run(_browsers(port, sets, ready, stop, results))


async def _browsers(port, sets, ready, stop, results) -> None:
    loop = asyncio.get_running_loop()
    latencies = array("d")
    browsers: list[Watcher] = []
    gate = asyncio.Semaphore(CONCURRENT_CONNECTS)
    failed: list[str] = []

    async def open_one(series) -> None:
        async with gate:
            try:
                _, browser = await loop.create_connection(
                    lambda: Watcher("127.0.0.1", port, latencies, series), "127.0.0.1", port
                )
                await asyncio.wait_for(browser.connected, 20)
                browsers.append(browser)
            except (TimeoutError, OSError, ConnectionError) as exc:
                failed.append(repr(exc))

    await asyncio.gather(*(open_one(series) for series in sets))
    ready.put({"failed": failed[:3], "count": len(failed)})
    del latencies[:]
    while not stop.is_set():
        await asyncio.sleep(0.05)
    results.put(
        {
            "latencies": latencies.tobytes(),
            "browsers": [(b.per_series, b.count) for b in browsers],
            "disorder": sum(b.disorder for b in browsers),
            "foreign": sum(b.foreign for b in browsers),
            "closed": sum(b.closed for b in browsers),
            "frames": sum(b.frames_in for b in browsers),
        }
    )
    for browser in browsers:
        browser.transport.close()


def bare_subscriber(url: str, channel: str, ready, stop, results) -> None:
    """The reference: every sample of the push channel, with the time from its `ts` to here."""
    pubsub = redis.Redis.from_url(url).pubsub()
    pubsub.subscribe(channel)
    while (pubsub.get_message(timeout=5.0) or {}).get("type") != "subscribe":
        pass
    ready.put(True)
    latencies = array("d")
    while not stop.is_set():
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message":
            now = time.time()
            for line in message["data"].split(b"\n"):
                latencies.append(now - json.loads(line)["ts"])
    results.put(latencies.tobytes())


def percentiles(values: array) -> dict:
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] * 1000 if ordered else 0.0

    return {"n": len(ordered), "p50": at(50), "p99": at(99), "max": ordered[-1] * 1000 if ordered else 0.0}


def run(args, server, control: Proc, worker: Worker) -> None:
    rng = random.Random(18)
    names = [series_name(n) for n in range(args.series)]
    groups = [
        [names[(g * args.watch + k) % args.series] for k in range(args.watch)]
        if args.distinct * args.watch <= args.series
        else rng.sample(names, args.watch)
        for g in range(args.distinct)
    ]
    sets = [groups[i % args.distinct] for i in range(args.browsers)]
    ready, stop, results = new_queue(), new_event(), new_queue()
    processes = []
    try:
        processes.append(spawn(bare_subscriber, server.url, "numbers:push", ready, stop, results))
        ready.get(timeout=30)
        for i in range(args.procs):
            processes.append(spawn(browsers_process, worker.port, sets[i :: args.procs], ready, stop, results))
        failed = 0
        for _ in range(args.procs):
            part = ready.get(timeout=120)
            failed += part["count"]
            for error in part["failed"]:
                print(f"  connect error: {error}", flush=True)
        subscriptions = pick(worker.metrics(), "numcast_subscriptions")
        pushers, start = [], new_event()
        share = [list(range(args.series))[i :: args.pushers] for i in range(args.pushers)]
        for i, part in enumerate(share):
            phase = i / args.pushers if args.spread else 0.0
            pushers.append(spawn(pusher, control.url, part, args.rate, args.seconds, phase, ready, start, results))
        for _ in pushers:
            ready.get(timeout=30)
        time.sleep(1)
        cpu = {"worker": cpu_seconds(worker.pid), "control": cpu_seconds(control.process.pid)}
        start.set()
        sent: dict[int, int] = {}
        errors = 0
        for _ in pushers:
            part = results.get(timeout=args.seconds + 60)
            sent.update(part["sent"])
            errors += part["errors"]
        time.sleep(DRAIN_SECONDS)
        cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in
               (("worker", worker.pid), ("control", control.process.pid))}  # fmt: skip
        metrics = worker.metrics()
        stop.set()
        reports = [results.get(timeout=60) for _ in range(args.procs + 1)]
    finally:
        stop.set()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
    reference = array("d")
    reference.frombytes(next(r for r in reports if isinstance(r, bytes)))
    parts = [r for r in reports if isinstance(r, dict)]
    by_name = {series_name(s): n for s, n in sent.items()}
    latencies = array("d")
    lost = delivered = 0
    for part in parts:
        latencies.frombytes(part["latencies"])
        for per_series, count in part["browsers"]:
            expected = sum(by_name[name] for name in per_series)
            lost += expected - sum(per_series.values())
            delivered += count
    total = sum(sent.values())
    frames = sum(p["frames"] for p in parts)
    w, r = percentiles(latencies), percentiles(reference)
    dropped = pick(metrics, 'numcast_dropped_total{path="browser"}')
    print(
        f"pushed {total} samples ({total / args.seconds:,.0f}/s) in {args.seconds:g}s, {errors} requests refused; "
        f"{args.browsers - failed}/{args.browsers} browsers on {subscriptions:.0f} subscriptions (the default one "
        f"included); worker encoded {pick(metrics, 'numcast_frames_encoded_total'):.0f} frames, dropped "
        f"{dropped:.0f}",
        flush=True,
    )
    print(
        f"browsers: latency ms p50 {w['p50']:.1f} p99 {w['p99']:.1f} max {w['max']:.1f} | delivered {delivered}, "
        f"lost {lost}, out of order {sum(p['disorder'] for p in parts)}, not asked for "
        f"{sum(p['foreign'] for p in parts)}, closed {sum(p['closed'] for p in parts)}, "
        f"{delivered / frames if frames else 0:.1f} values/frame | worker CPU {cpu['worker']:.2f}s = "
        f"{cpu['worker'] / delivered * 1e6 if delivered else 0:.2f} µs/delivery; control-plane CPU "
        f"{cpu['control']:.2f}s",
        flush=True,
    )
    print(
        f"reference (bare subscriber of numbers:push): {r['n']} samples, latency ms p50 {r['p50']:.1f} "
        f"p99 {r['p99']:.1f} max {r['max']:.1f}",
        flush=True,
    )
    if r["p50"] and r["p99"]:
        print(
            f"browsers/reference: p50 {w['p50'] / r['p50']:.2f}, p99 {w['p99'] / r['p99']:.2f}; the worker adds "
            f"p50 {w['p50'] - r['p50']:.1f} ms, p99 {w['p99'] - r['p99']:.1f} ms",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=100, help="series pushed, one label set each")
    parser.add_argument("--rate", type=float, default=10, help="samples per second of each series")
    parser.add_argument("--pushers", type=int, default=10, help="processes pushing, each a share of the series")
    parser.add_argument("--browsers", type=int, default=200)
    parser.add_argument("--watch", type=int, default=5, help="series each browser watches")
    parser.add_argument("--distinct", type=int, default=20, help="distinct sets of series among the browsers")
    parser.add_argument("--procs", type=int, default=4, help="browser processes")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--together", dest="spread", action="store_false", help="all pushers at the same instant of each tick"
    )
    args = parser.parse_args()
    args.distinct = max(1, min(args.distinct, args.browsers))
    print(
        f"push to browser bench: {args.series} series x {args.rate:g} samples/s through POST /api/push from "
        f"{args.pushers} pushers{'' if args.spread else ' at the same instants'}, "
        f"{args.browsers} browsers each watching {args.watch} ({args.distinct} distinct "
        f"sets), {args.seconds:g}s",
        flush=True,
    )
    try:
        with bench_redis() as server:
            directory = tempfile.mkdtemp(prefix="numcast-bench-")
            control = Proc("control", {"REDIS_URL": server.url, "RATE_HZ": "1"}, os.path.join(directory, "control.log"))
            control.start()
            try:
                with Worker(server.url, MAX_SUBSCRIPTIONS=str(max(256, args.distinct))) as worker:
                    run(args, server, control, worker)
            finally:
                control.stop()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, queue.Empty) as exc:
        print(f"push bench failed: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
