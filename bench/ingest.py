"""Ingest: a real `numcast worker` against a bare redis-py subscriber, on the same flood of PUBLISHes."""

from __future__ import annotations

import argparse
import queue
import sys
import time

import redis
from _common import (
    CHANNEL,
    DEFAULT_PUBSUB_LIMIT,
    Flood,
    Sampler,
    Worker,
    bench_redis,
    cpu_seconds,
    median,
    new_queue,
    numsub,
    pick,
    set_pubsub_limit,
    spawn,
)

IDLE_SECONDS = 2.0  # nothing new for this long after the flood ended means a side is done


def bare_subscriber(url: str, expected: int, ready, results) -> None:
    """Count messages in a tight get_message loop (hiredis parses); report count, first and last arrival."""
    pubsub = redis.Redis.from_url(url).pubsub()
    pubsub.subscribe(CHANNEL)
    while (pubsub.get_message(timeout=5.0) or {}).get("type") != "subscribe":
        pass
    ready.put(True)
    count, first, last, error = 0, 0.0, 0.0, ""
    cpu = time.process_time()
    deadline = time.time() + 60  # for the first message
    try:
        while count < expected:
            message = pubsub.get_message(timeout=IDLE_SECONDS)
            if message is None:
                if count or time.time() > deadline:
                    break
                continue
            if message["type"] == "message":
                count += 1
                last = time.time()
                if count == 1:
                    first = last
    except (redis.ConnectionError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"  # the bare side does not reconnect: it reports
    results.put({"count": count, "first": first, "last": last, "error": error, "cpu": time.process_time() - cpu})


def worker_counts(worker: Worker) -> dict:
    """The worker's redis-path counters and CPU time now."""
    m = worker.metrics()
    return {
        "received": m.get('numcast_received_total{path="redis"}', 0.0),
        "accepted": m.get('numcast_accepted_total{path="redis"}', 0.0),
        "rejected": sum(v for k, v in m.items() if k.startswith("numcast_rejected_total")),
        "reconnects": pick(m, 'numcast_reconnects_total{path="redis"}', "numcast_redis_reconnects_total"),
        "cpu": cpu_seconds(worker.pid),
    }


def wait_worker(worker: Worker, before: dict, sent: int, timeout: float) -> dict:
    """Poll the worker until it has received everything sent, or stopped moving; return its counters."""
    deadline = time.monotonic() + timeout
    last, still_since = worker_counts(worker), time.monotonic()
    while time.monotonic() < deadline:
        if last["received"] - before["received"] >= sent:
            break
        time.sleep(0.25)
        now = worker_counts(worker)
        if now["received"] != last["received"]:
            still_since = time.monotonic()
        elif time.monotonic() - still_since > IDLE_SECONDS:
            break
        last = now
    return last


def round_once(server_url: str, worker: Worker, args, count: int) -> dict:
    """One flood of `count` messages, watched by the worker and a fresh bare subscriber at once."""
    ready, results = new_queue(), new_queue()
    bare = spawn(bare_subscriber, server_url, count, ready, results)
    flood = None
    try:
        ready.get(timeout=30)
        worker.wait_subscribed()
        if numsub(server_url) != 2:
            raise RuntimeError(f"expected 2 subscribers, found {numsub(server_url)}")
        before = worker_counts(worker)
        # /healthz stands for everything else the process serves (probes, /metrics, browsers) during the flood.
        with Sampler(worker.healthz_seconds, 0.1) as healthz:
            flood = Flood(server_url, count, args.publishers, args.pipeline).start()
            sent = flood.wait(timeout=60)
            after = wait_worker(worker, before, sent["sent"], timeout=60)
        last_value_at = worker.status()["last_value_at"] or sent["started"]
        bare_result = results.get(timeout=60)
    finally:
        if flood is not None:
            flood.stop()
        if bare.is_alive():
            bare.terminate()
        bare.join(5)
    worker_accepted = after["accepted"] - before["accepted"]
    bare_span = max(bare_result["last"] - sent["started"], 1e-9)
    worker_span = max(last_value_at - sent["started"], 1e-9)
    return {
        "sent": sent["sent"],
        "publish_rate": sent["sent"] / max(sent["ended"] - sent["started"], 1e-9),
        "bare": bare_result["count"],
        "bare_rate": bare_result["count"] / bare_span,
        "bare_error": bare_result["error"],
        "bare_cpu": bare_result["cpu"],
        "worker_received": after["received"] - before["received"],
        "worker_accepted": worker_accepted,
        "worker_rejected": after["rejected"] - before["rejected"],
        "worker_rate": worker_accepted / worker_span,
        "worker_cpu": after["cpu"] - before["cpu"],
        "reconnects": after["reconnects"] - before["reconnects"],
        "healthz_max": max(healthz.samples, default=0.0),
    }


def show(label: str, r: dict) -> None:
    """Print one round."""
    ratio = r["worker_rate"] / r["bare_rate"] if r["bare_rate"] else 0.0
    per_cpu = r["worker_accepted"] / max(r["worker_cpu"], 1e-9)
    bare_per_cpu = r["bare"] / max(r["bare_cpu"], 1e-9)
    print(
        f"{label}: published {r['sent']} at {r['publish_rate']:,.0f} msg/s | "
        f"bare {r['bare']} at {r['bare_rate']:,.0f} msg/s, cpu {r['bare_cpu']:.2f}s"
        f"{' (' + r['bare_error'] + ')' if r['bare_error'] else ''} | "
        f"worker received {r['worker_received']:.0f}, accepted {r['worker_accepted']:.0f} "
        f"at {r['worker_rate']:,.0f} msg/s, cpu {r['worker_cpu']:.2f}s "
        f"({per_cpu:,.0f} msg per cpu-s), "
        f"rejected {r['worker_rejected']:.0f}, reconnects {r['reconnects']:.0f}, "
        f"slowest /healthz {r['healthz_max']:.2f}s | ratio worker/bare {ratio:.2f}, "
        f"per cpu-s {per_cpu / bare_per_cpu:.2f}",
        flush=True,
    )


def main() -> int:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000, help="messages per flood")
    parser.add_argument("--pipeline", type=int, default=1000, help="PUBLISHes per pipeline")
    parser.add_argument("--publishers", type=int, default=1, help="publisher processes")
    parser.add_argument("--rounds", type=int, default=3, help="floods with the limit raised")
    parser.add_argument(
        "--default-limit-messages",
        type=int,
        default=600_000,
        help="size of one more flood at Redis's default pubsub output-buffer limit (0: skip it)",
    )
    args = parser.parse_args()
    print(
        f"ingest bench: {args.rounds} x {args.messages} messages, pipelines of {args.pipeline}, "
        f"{args.publishers} publisher process(es); the bench Redis has client-output-buffer-limit pubsub 0 0 0",
        flush=True,
    )
    try:
        with bench_redis() as server, Worker(server.url) as worker:
            rounds = []
            for n in range(args.rounds):
                rounds.append(round_once(server.url, worker, args, args.messages))
                show(f"round {n + 1}", rounds[-1])
            bare = median([r["bare_rate"] for r in rounds])
            work = median([r["worker_rate"] for r in rounds])
            best = max(r["worker_rate"] / r["bare_rate"] for r in rounds if r["bare_rate"])
            # Per CPU second is what contention on a shared machine disturbs least.
            per_cpu = median([r["worker_accepted"] / r["worker_cpu"] / (r["bare"] / r["bare_cpu"]) for r in rounds])
            print(
                f"median: bare {bare:,.0f} msg/s, worker {work:,.0f} msg/s, ratio {work / bare:.2f} "
                f"(best round {best:.2f}; target >= 0.5); per cpu-s worker/bare {per_cpu:.2f}",
                flush=True,
            )
            if args.default_limit_messages:
                set_pubsub_limit(server.url, DEFAULT_PUBSUB_LIMIT)
                print(f"default limit ({DEFAULT_PUBSUB_LIMIT}), one flood:", flush=True)
                show("default limit", round_once(server.url, worker, args, args.default_limit_messages))
                time.sleep(IDLE_SECONDS)
                print(f"worker subscribed again afterwards: {worker.status()['redis']['subscribed']}", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, queue.Empty) as exc:
        print(f"ingest bench failed: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
