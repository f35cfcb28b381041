"""Pushed samples: how many per second one control-plane takes, and how soon a pushed value is visible.

Two parts, each against a Redis of its own on a free port (never one already running):

- throughput: sender processes POST batches of `--batch` samples to `/api/push` (or `/api/v2/write` with
  `--door influx`) of one control-plane, `--samples` in all, as fast as it answers; a worker subscribes (Redis
  only, no mirror). Figures: samples/s the API accepted, when the worker's sink had every one of them (0 lost),
  and the reference in the same run: a bare redis-py loop that XADDs and PUBLISHes the same envelopes (a
  pipeline of `--batch`, one PUBLISH per envelope to a channel nobody reads), and the ratio.
- framing: the same pushed envelopes published straight to the push channel, 500 to a message as the
  control-plane does, and one to a message (the reference): what the worker's ingest costs per envelope.
- visible: the same push (`push_to_gateway`, one gauge) `--rounds` times to numcast and to Debian's
  prometheus-pushgateway: the time until the value is seen by a Socket.IO client of a worker (numcast), on the
  Pushgateway's /metrics (polled every 5 ms), and in a Prometheus scraping it every `--scrape-interval`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import redis
from _common import Proc, Worker, bench_redis, cpu_seconds, new_queue, run, spawn

from numcast.local import free_port, stop, wait_http
from numcast.push import relay, stream

SERIES = 100  # distinct series the senders push: labels n=0..99


def body(door: str, batch: int, sender: int) -> tuple[str, bytes, dict]:
    """(path, body, headers) of one push of `batch` samples."""
    if door == "influx":
        lines = [f"bench,sender={sender},n={n % SERIES} value={n}.5" for n in range(batch)]
        return "/api/v2/write?precision=s", "\n".join(lines).encode(), {"Content-Type": "text/plain"}
    samples = [
        {"series": "bench_value", "labels": {"sender": str(sender), "n": str(n % SERIES)}, "value": n + 0.5}
        for n in range(batch)
    ]
    return "/api/push", json.dumps({"samples": samples}).encode(), {"Content-Type": "application/json"}


def sender(url: str, door: str, batch: int, pushes: int, index: int, results) -> None:
    """POST `pushes` batches on one keep-alive connection; a 503 or 429 waits as Retry-After asks (shortly)."""
    address = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    path, data, headers = body(door, batch, index)
    refused, done = 0, 0
    started = time.time()
    while done < pushes:
        conn.request("POST", path, data, headers)
        response = conn.getresponse()
        response.read()
        if response.status in (200, 204):
            done += 1
        elif response.status in (429, 503):
            refused += 1
            time.sleep(0.01)
        else:
            raise RuntimeError(f"push answered {response.status}")
    results.put({"started": started, "ended": time.time(), "samples": done * batch, "refused": refused})
    conn.close()


def bare_reference(url: str, lines: list[str], batch: int) -> float:
    """Envelopes per second a bare redis-py loop XADDs (MAXLEN ~) and PUBLISHes, in pipelines of `batch`."""
    conn = redis.Redis.from_url(url)
    started = time.perf_counter()
    for start in range(0, len(lines), batch):
        pipe = conn.pipeline(transaction=False)
        for line in lines[start : start + batch]:
            pipe.xadd("bare:log", {"envelope": line}, maxlen=100_000, approximate=True)
            pipe.publish("bare", line)
        pipe.execute()
    took = time.perf_counter() - started
    conn.delete("bare:log")
    conn.close()
    return len(lines) / took


def envelopes(count: int) -> list[str]:
    """Envelopes as the control-plane writes pushed samples."""
    ts = time.time()
    return [
        f'{{"seq":{n},"value":{n + 0.5!r},"ts":{ts!r},"source":"control-abc123.push","series":"bench_value",'
        f'"labels":{{"n":"{n % SERIES}","sender":"0"}}}}'
        for n in range(1, count + 1)
    ]


def worker_has(worker: Worker, count: int, timeout: float) -> float | None:
    """Seconds until the worker's sink holds `count` lines, or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if worker.metrics().get("numcast_sink_lines_total", 0) >= count:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def throughput(args) -> int:
    pushes = args.samples // args.batch // args.senders
    total = pushes * args.batch * args.senders
    # A sink large enough for the whole run: the bench counts the pushed samples in it.
    with bench_redis() as server, Worker(server.url, SINK_MAX_BYTES=str(1 << 30)) as worker:
        control = Proc(
            "control",
            {
                "REDIS_URL": server.url, "RATE_HZ": "1", "PUSH_RATE": "100000000", "PUSH_MAX_SAMPLES": str(args.batch),
                "PUSH_QUEUE": str(max(100_000, 4 * args.batch + stream.MAX_LINES)), "ASYNC_MODE": args.async_mode,
            },
            os.path.join(worker.dir, "control.log"),
        )  # fmt: skip
        control.start()
        try:
            bare = bare_reference(server.url, envelopes(min(total, 500_000)), stream.MAX_LINES)
            before = worker.metrics().get("numcast_sink_lines_total", 0)
            cpu = cpu_seconds(control.process.pid)
            results = new_queue()
            processes = [
                spawn(sender, control.url, args.door, args.batch, pushes, i, results) for i in range(args.senders)
            ]
            parts = [results.get(timeout=600) for _ in processes]
            for process in processes:
                process.join(10)
            started, ended = min(p["started"] for p in parts), max(p["ended"] for p in parts)
            api = total / (ended - started)
            control_cpu = cpu_seconds(control.process.pid) - cpu
            waited = worker_has(worker, before + total, timeout=120)
            metrics = worker.metrics()
            sink = metrics.get("numcast_sink_lines_total", 0) - before
            with open(worker.env["SINK_FILE"], "rb") as file:
                lost = total - sum(1 for line in file if b'"series":"bench' in line)
            if lost:
                print(f"the worker's log:\n{worker.log_tail(30)}", flush=True)
        finally:
            control.stop()
    gaps = metrics.get("numcast_gaps_total", 0)
    print(
        f"throughput ({args.door}, {args.senders} sender(s), batches of {args.batch}): {total:,} samples "
        f"accepted in {ended - started:.2f}s = {api:,.0f} samples/s through the API "
        f"(control-plane cpu {control_cpu:.2f}s, {total / max(control_cpu, 1e-9):,.0f} samples per cpu-s; "
        f"{sum(p['refused'] for p in parts)} pushes answered 429/503 and sent again)",
        flush=True,
    )
    held = "never" if waited is None else f"{waited:.2f}s after the last push was answered"
    print(
        f"worker: sink has {sink:,.0f} new lines, pushed samples missing from it: {lost}, gaps {gaps:.0f}; "
        f"it held them all {held}",
        flush=True,
    )
    print(
        f"reference: bare redis-py XADD+PUBLISH loop {bare:,.0f} envelopes/s; ratio numcast/bare {api / bare:.2f} "
        "(goal >= 0.5)",
        flush=True,
    )
    return 0 if lost == 0 else 1


def framing(args) -> int:
    """A worker's ingest of the same pushed envelopes, `stream.MAX_LINES` to a message against one a message."""
    count = args.samples // 2
    lines = envelopes(count)
    rates = {}
    for per in (stream.MAX_LINES, 1):
        messages = ["\n".join(lines[start : start + per]) for start in range(0, count, per)]
        with bench_redis() as server, Worker(server.url, SINK_MAX_BYTES=str(1 << 30)) as worker:
            conn = redis.Redis.from_url(server.url)
            cpu, started = cpu_seconds(worker.pid), time.time()
            step = max(1, 1000 // per)  # pipelines of about 1,000 envelopes either way
            for start in range(0, len(messages), step):
                pipe = conn.pipeline(transaction=False)
                for message in messages[start : start + step]:
                    pipe.publish("numbers:push", message)
                pipe.execute()
            waited = worker_has(worker, count, timeout=120)
            took, used = time.time() - started, cpu_seconds(worker.pid) - cpu
            gaps = worker.metrics().get("numcast_gaps_total", 0)
            conn.close()
        rates[per] = count / used
        print(
            f"framing: {per} envelope(s) a message: the worker held all {count:,} "
            f"{'never' if waited is None else f'after {took:.2f}s ({count / took:,.0f}/s)'}, cpu {used:.2f}s "
            f"= {count / used:,.0f} envelopes per cpu-s, gaps {gaps:.0f}",
            flush=True,
        )
    print(
        f"framing: per cpu-s, {stream.MAX_LINES} a message / one a message = {rates[stream.MAX_LINES] / rates[1]:.2f}"
    )
    return 0


class Watcher:
    """A Socket.IO client of a worker that notes when each value arrives."""

    def __init__(self, url: str) -> None:
        import socketio

        self.seen: dict[float, float] = {}
        self.client = socketio.Client(reconnection=False)
        self.client.on("numbers", self._numbers)
        self.client.connect(url, transports=["websocket"], wait_timeout=10)

    def _numbers(self, batch: list[dict]) -> None:
        now = time.time()
        for envelope in batch:
            if envelope.get("series") == "bench_visible":
                self.seen.setdefault(envelope["value"], now)


def pushgateway_binary() -> str | None:
    return shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")


def poll(check, timeout: float, interval: float = 0.005) -> float | None:
    """The Unix time at which `check()` was first true, polling every `interval`; None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        time.sleep(interval)
    return None


def stored_value(query: str) -> float | None:
    """The value Prometheus answers an instant query with, if any."""
    result = json.loads(text(query))["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def visible(args) -> int:
    from prometheus_client import CollectorRegistry, Gauge
    from prometheus_client.exposition import push_to_gateway

    binary, prometheus = pushgateway_binary(), shutil.which("prometheus")
    if not binary or not prometheus:
        print(
            "visible: needs prometheus-pushgateway and prometheus: apt-get install -y prometheus-pushgateway prometheus"
        )
        return 1
    folder = tempfile.mkdtemp(prefix="numcast-push-bench-")
    gateway_port, prometheus_port = free_port(), free_port()
    gateway = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{gateway_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    config = os.path.join(folder, "prometheus.yml")
    with open(config, "w") as file:
        file.write(
            f"global: {{scrape_interval: {args.scrape_interval}}}\n"
            f"scrape_configs: [{{job_name: pushgateway, honor_labels: true, "
            f"static_configs: [{{targets: ['127.0.0.1:{gateway_port}']}}]}}]\n"
        )
    prom = subprocess.Popen(
        [
            prometheus, f"--config.file={config}", f"--storage.tsdb.path={folder}/data",
            f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    gateway_url, prometheus_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{prometheus_port}"
    interval = relay.duration(args.scrape_interval)
    figures: dict[str, list[float]] = {"numcast, at a worker's Socket.IO client": [], "Pushgateway /metrics": []}
    figures[f"Prometheus (scraping the Pushgateway every {args.scrape_interval})"] = []
    try:
        wait_http(gateway_url + "/-/ready", 30, gateway)
        wait_http(prometheus_url + "/-/ready", 60, prom)
        with bench_redis() as server, Worker(server.url) as worker:
            control = Proc("control", {"REDIS_URL": server.url}, os.path.join(worker.dir, "control.log"))
            control.start()
            watcher = Watcher(worker.url)
            try:
                for n in range(1, args.rounds + 1):
                    # At a random moment of the scrape interval, or every push would come just after a scrape.
                    time.sleep(random.uniform(0, interval))
                    value = float(n) + 0.25
                    registry = CollectorRegistry()
                    Gauge("bench_visible", "A value per round", registry=registry).set(value)
                    to_numcast = time.time()
                    push_to_gateway(control.url, job="bench", registry=registry)
                    to_gateway = time.time()
                    push_to_gateway(gateway_url, job="bench", registry=registry)
                    line = f'bench_visible{{instance="",job="bench"}} {value}\n'
                    at_gateway = poll(lambda line=line: line in text(gateway_url + "/metrics"), timeout=10)
                    query = f"{prometheus_url}/api/v1/query?query=bench_visible"
                    stored = poll(lambda v=value, q=query: stored_value(q) == v, timeout=120, interval=0.05)
                    at_worker = poll(lambda v=value: v in watcher.seen, timeout=10) and watcher.seen[value]
                    if not (at_worker and at_gateway and stored):
                        raise RuntimeError(f"round {n}: the value was not seen everywhere")
                    took = (at_worker - to_numcast, at_gateway - to_gateway, stored - to_gateway)
                    for key, seconds in zip(figures, took, strict=True):
                        figures[key].append(seconds)
                    print(
                        f"round {n}: numcast {1000 * took[0]:.1f} ms, Pushgateway {1000 * took[1]:.1f} ms, "
                        f"Prometheus {took[2]:.2f} s",
                        flush=True,
                    )
            finally:
                watcher.client.disconnect()
                control.stop()
    finally:
        stop(prom)
        stop(gateway)
        shutil.rmtree(folder, ignore_errors=True)
    for what, values in figures.items():
        print(
            f"{what}: median {1000 * statistics.median(values):.1f} ms, max {1000 * max(values):.1f} ms "
            f"({len(values)} pushes)",
            flush=True,
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", choices=("throughput", "framing", "visible", "all"), default="all")
    parser.add_argument("--door", choices=("json", "influx"), default="json")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000, help="samples per push")
    parser.add_argument("--senders", type=int, default=2, help="sender processes")
    parser.add_argument(
        "--async-mode", choices=("eventlet", "threading"), default="eventlet", help="the control-plane's"
    )
    parser.add_argument("--rounds", type=int, default=5, help="pushes of the visible part")
    parser.add_argument("--scrape-interval", default="15s", help="Prometheus' scrape interval (visible part)")
    args = parser.parse_args()
    code = 0
    if args.part in ("throughput", "all"):
        code |= throughput(args)
    if args.part in ("framing", "all"):
        code |= framing(args)
    if args.part in ("visible", "all"):
        code |= visible(args)
    return code


if __name__ == "__main__":
    run(main)
