"""Rules per label set: what the alerter pays for the push channel, and its memory under a flood of label sets.

Each part runs against a Redis of its own on a free port (never one already running), with a real `numcast
alerter` and, as the reference in the same run, a real `numcast worker`, both subscribed to the push channel.
Framed messages (500 envelopes each, as the control-plane publishes) go straight to `numbers:push`.

- cost: `--samples` pushed envelopes over `--label-sets` label sets, which a rule with a regex matcher
  watches (every value above its threshold on half of them). Figures: envelopes per CPU-second of the
  alerter and of the worker (which every deployment runs on the same stream), and the ratio.
- flood: `--flood` envelopes, each of a label set never seen before. The alerter's resident memory before and
  after, with a rule that keeps them (up to ALERT_MAX_LABEL_SETS, the rest refused) and, as the reference, a
  rule on another series (nothing kept): what the label sets cost, and that it stops at the bound.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
import urllib.request

import redis
from _common import Proc, Worker, bench_redis, cpu_seconds, rss_mib, run

from numcast.push import stream

_METRIC_RE = re.compile(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$")
COST_RULES = """\
rules:
  - alert: BenchHigh
    series: bench_value
    match: ["n=~[0-9]*[02468]", "sender!=nobody"]
    above: 50
    labels: {severity: warning}
    annotations: {summary: "{{ $labels.n }} at {{ $value }}"}
  - {alert: BenchGeneratorHigh, above: 95}
  - {alert: BenchSilent, silent_for: 1h}
"""
FLOOD_RULES = """\
rules:
  - alert: BenchFlood
    series: {series}
    above: 0
    max_label_sets: {limit}
"""


def metrics(url: str) -> dict[str, float]:
    """/metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(url + "/metrics", timeout=60) as response:
        text = response.read().decode()
    return {m.group(1): float(m.group(2)) for line in text.splitlines() if (m := _METRIC_RE.match(line))}


def messages(count: int, label_sets: int, series: str = "bench_value", first: int = 0) -> list[bytes]:
    """`count` pushed envelopes over `label_sets` label sets (0: each its own), 500 to a message."""
    ts = time.time()
    lines = [
        f'{{"seq":{n},"value":{(n * 37) % 100 + 0.5!r},"ts":{ts!r},"source":"control-abc123.push",'
        f'"series":"{series}","labels":{{"n":"{n % label_sets if label_sets else n}","sender":"0"}}}}'
        for n in range(first + 1, first + count + 1)
    ]
    return [m.encode() for m in stream.frame(lines)]


def publish(url: str, framed: list[bytes]) -> None:
    conn = redis.Redis.from_url(url)
    for start in range(0, len(framed), 2):  # about 1,000 envelopes a pipeline
        pipe = conn.pipeline(transaction=False)
        for message in framed[start : start + 2]:
            pipe.publish("numbers:push", message)
        pipe.execute()
    conn.close()


def received(url: str) -> float:
    """Envelopes the alerter took from Redis (its two channels)."""
    return metrics(url).get('numcast_received_total{path="redis"}', 0.0)


def wait_for(check, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def alerter(url: str, rules_text: str, folder: str, **env: str) -> Proc:
    path = os.path.join(folder, f"rules-{time.monotonic_ns()}.yaml")
    with open(path, "w") as file:
        file.write(rules_text)
    proc = Proc("alerter", {"REDIS_URL": url, "ALERT_RULES": path, **env}, os.path.join(folder, "alerter.log"))
    proc.start()
    wait_for(lambda: metrics(proc.admin_url).get("numcast_subscribed") == 1, 30)
    return proc


def cost(args, folder: str) -> int:
    framed = messages(args.samples, args.label_sets)
    with bench_redis() as server, Worker(server.url, SINK_MAX_BYTES=str(1 << 30)) as worker:
        proc = alerter(server.url, COST_RULES, folder)
        try:
            before = {"alerter": cpu_seconds(proc.process.pid), "worker": cpu_seconds(worker.pid)}
            started = time.monotonic()
            publish(server.url, framed)
            took = wait_for(lambda: received(proc.admin_url) >= args.samples, 300)
            held = wait_for(lambda: metrics(worker.admin_url).get("numcast_sink_lines_total", 0) >= args.samples, 300)
            used = {
                "alerter": cpu_seconds(proc.process.pid) - before["alerter"],
                "worker": cpu_seconds(worker.pid) - before["worker"],
            }
            found = metrics(proc.admin_url)
        finally:
            proc.stop()
    firing = found.get('numcast_alert_label_sets{state="firing"}', 0)
    print(
        f"cost: {args.samples:,} envelopes over {args.label_sets} label sets in {len(framed):,} messages; "
        f"the alerter took all {'never' if took is None else f'after {time.monotonic() - started:.2f}s'} "
        f"({firing:.0f} label sets firing), the worker held all {'never' if held is None else 'too'}",
        flush=True,
    )
    rates = {side: args.samples / seconds for side, seconds in used.items()}
    for side in ("alerter", "worker"):
        print(f"cost: {side}: cpu {used[side]:.2f}s = {rates[side]:,.0f} envelopes per cpu-s")
    print(f"cost: alerter / worker, per cpu-s = {rates['alerter'] / rates['worker']:.2f}")
    return 0


def flood(args, folder: str) -> int:
    figures = {}
    for name, series in (("reference (a rule on another series)", "bench_other"), ("kept", "bench_flood")):
        with bench_redis() as server:
            limit = args.limit
            proc = alerter(
                server.url, FLOOD_RULES.format(series=series, limit=limit), folder, ALERT_MAX_LABEL_SETS=str(limit)
            )
            try:
                rss = [rss_mib(proc.process.pid)]
                for part in range(args.rounds):
                    share = args.flood // args.rounds
                    publish(server.url, messages(share, 0, "bench_flood", first=part * share))
                    wait_for(lambda n=(part + 1) * share, url=proc.admin_url: received(url) >= n, 300)
                    rss.append(rss_mib(proc.process.pid))
                found = metrics(proc.admin_url)
            finally:
                proc.stop()
        kept = sum(v for k, v in found.items() if k.startswith("numcast_alert_label_sets{"))
        refused = found.get('numcast_alert_label_sets_refused_total{reason="total",rule="BenchFlood"}', 0) + found.get(
            'numcast_alert_label_sets_refused_total{reason="limit",rule="BenchFlood"}', 0
        )
        figures[name] = rss
        print(
            f"flood: {name}: rss MiB after each {args.flood // args.rounds:,} new label sets: "
            f"{' -> '.join(f'{r:.1f}' for r in rss)}; kept {kept:.0f}, refused {refused:,.0f}",
            flush=True,
        )
    (reference, kept) = figures.values()
    growth = (kept[-1] - kept[0]) - (reference[-1] - reference[0])
    each = growth * 1024 / args.limit
    print(f"flood: {args.limit:,} label sets kept cost {growth:.1f} MiB more than none ({each:.2f} KiB each)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", choices=("cost", "flood", "all"), default="all")
    parser.add_argument("--samples", type=int, default=200_000, help="cost: pushed envelopes")
    parser.add_argument("--label-sets", type=int, default=100, help="cost: distinct label sets")
    parser.add_argument("--flood", type=int, default=200_000, help="flood: envelopes, each of a new label set")
    parser.add_argument("--rounds", type=int, default=4, help="flood: memory is read after each part")
    parser.add_argument("--limit", type=int, default=10_000, help="flood: ALERT_MAX_LABEL_SETS and max_label_sets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="numcast-bench-rules-") as folder:
        code = 0
        if args.part in ("cost", "all"):
            code |= cost(args, folder)
        if args.part in ("flood", "all"):
            code |= flood(args, folder)
    return code


if __name__ == "__main__":
    run(main)
