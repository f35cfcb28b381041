"""Sink: what fdatasync at each flush costs the worker's file sink, against the same sink that never syncs."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from numcast.envelope import Envelope
from numcast_worker.sink import FileSink

NEVER = 1e9  # sync_seconds that never comes within a run: the reference, written but never synced


def run(folder: str, sync_seconds: float, lines: int, per_flush: int) -> dict:
    """Write `lines` canonical envelopes, flushing every `per_flush`, as the worker does; time each flush."""
    path = os.path.join(folder, f"bench-{sync_seconds:g}.jsonl")
    sink = FileSink(path, max_bytes=10 * 1024 * 1024, backups=3, sync_seconds=sync_seconds)
    payloads = [Envelope(n, n * 0.5, 1.8e9 + n / 1000, "control-b3nch0").to_json() for n in range(per_flush)]
    flushes = []
    started = time.perf_counter()
    for _ in range(lines // per_flush):
        for line in payloads:
            sink.write(line)
        before = time.perf_counter()
        sink.flush()
        flushes.append(time.perf_counter() - before)
    took = time.perf_counter() - started
    sink.close()
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    flushes.sort()
    return {
        "rate": lines / took,
        "median_ms": statistics.median(flushes) * 1000,
        "p99_ms": flushes[int(len(flushes) * 0.99)] * 1000,
        "max_ms": flushes[-1] * 1000,
        "syncs": sink.syncs,
    }


def show(label: str, r: dict) -> None:
    print(
        f"{label:<28} {r['rate']:>12,.0f} lines/s | flush median {r['median_ms']:6.2f} ms, p99 {r['p99_ms']:6.2f} ms, "
        f"max {r['max_ms']:6.2f} ms | fdatasync calls {r['syncs']}",
        flush=True,
    )


def main() -> int:
    """Run each mode `--rounds` times, interleaved, and print the medians and the ratios to the reference."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=100_000, help="lines per round")
    parser.add_argument(
        "--per-flush", type=int, default=500, help="lines per flush (the worker flushes every 0.5 s or 64 KiB)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--relaxed", type=float, default=1.0, help="SINK_SYNC_SECONDS of the relaxed mode")
    parser.add_argument("--dir", default=".", help="where the files go: the disk the sink would be on (not a tmpfs)")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="numcast-sink-bench-", dir=args.dir)
    modes = {"never synced (reference)": NEVER, "SINK_SYNC_SECONDS=0 (default)": 0.0}
    modes[f"SINK_SYNC_SECONDS={args.relaxed:g}"] = args.relaxed
    print(
        f"sink bench: {args.rounds} x {args.lines:,} lines, {args.per_flush} per flush, in {os.path.abspath(folder)}",
        flush=True,
    )
    results: dict[str, list[dict]] = {label: [] for label in modes}
    try:
        for n in range(args.rounds):
            for label, seconds in modes.items():
                results[label].append(run(folder, seconds, args.lines, args.per_flush))
                show(f"round {n + 1} {label}", results[label][-1])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    reference = statistics.median(r["rate"] for r in results["never synced (reference)"])
    print("median:", flush=True)
    for label, rounds in results.items():
        rate = statistics.median(r["rate"] for r in rounds)
        flush_ms = statistics.median(r["median_ms"] for r in rounds)
        print(f"  {label:<30} {rate:>12,.0f} lines/s, flush {flush_ms:6.2f} ms, ratio {rate / reference:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
