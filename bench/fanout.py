"""Fan-out: a worker's memory during a flood with browsers attached, one of which has stopped reading."""

from __future__ import annotations

import argparse
import base64
import os
import queue
import socket
import struct
import sys
import time

import socketio
from _common import Flood, Sampler, Worker, bench_redis, cpu_seconds, new_event, new_queue, pick, rss_mib, spawn

DROPPED = ('numcast_dropped_total{path="browser"}', "numcast_browser_dropped_total", "numcast_browser_dropped")


class Reader:
    """A browser that reads everything: python-socketio's client over a WebSocket, counting envelopes."""

    def __init__(self, url: str) -> None:
        self.count, self.dropped, self.events = 0, 0, 0
        self.first = self.last = 0.0
        self.longest_gap = 0.0
        self.client = socketio.Client(reconnection=False)
        self.client.on("numbers", self._numbers)
        self.client.on("dropped", self._dropped)
        self.client.connect(url, transports=["websocket"], wait_timeout=10)

    def _numbers(self, batch) -> None:
        now = time.monotonic()
        if self.count:
            self.longest_gap = max(self.longest_gap, now - self.last)
        else:
            self.first = now
        self.count += len(batch)
        self.events += 1
        self.last = now

    def _dropped(self, data) -> None:
        self.dropped += data["count"]

    def rate(self) -> float:
        """Envelopes per second between the first batch and the last."""
        return self.count / (self.last - self.first) if self.last > self.first else 0.0

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()


def reader_process(url: str, ready, stop, results) -> None:
    """One reading browser in a process of its own, as a real one would be (no GIL shared with the others)."""
    reader = Reader(url)
    ready.put(True)
    stop.wait(300)
    results.put(
        {
            "count": reader.count, "events": reader.events, "rate": reader.rate(), "gap": reader.longest_gap,
            "dropped": reader.dropped, "connected": reader.client.connected, "cpu": time.process_time(),
        }
    )  # fmt: skip
    reader.close()


def _frame(payload: bytes) -> bytes:
    """One masked text frame, as a browser sends it."""
    mask = os.urandom(4)
    head = bytes([0x81])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _read_frame(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
    """One unmasked server frame's payload, and what was read past it."""

    def need(n: int) -> None:
        nonlocal buffer
        while len(buffer) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the worker closed the WebSocket during the handshake")
            buffer += chunk

    need(2)
    length, offset = buffer[1] & 0x7F, 2
    if length == 126:
        need(4)
        length, offset = struct.unpack("!H", buffer[2:4])[0], 4
    elif length == 127:
        need(10)
        length, offset = struct.unpack("!Q", buffer[2:10])[0], 10
    need(offset + length)
    return buffer[offset : offset + length], buffer[offset + length :]


def stalled_client(port: int, rcvbuf: int = 4096) -> socket.socket:
    """Connect to the `/` namespace over a raw WebSocket, then never read again (the caller keeps it open)."""
    sock = socket.socket()
    # Set before connect, so the advertised window stays small and the worker's send blocks sooner.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    host = f"127.0.0.1:{port}"
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the worker refused the WebSocket upgrade")
        buffer += chunk
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"no WebSocket upgrade: {head[:80]!r}")
    opened, buffer = _read_frame(sock, buffer)  # Engine.IO open: 0{"sid":...,"pingInterval":...}
    if not opened.startswith(b"0"):
        raise ConnectionError(f"no Engine.IO open packet: {opened[:80]!r}")
    sock.sendall(_frame(b"40"))  # Socket.IO CONNECT to the default namespace
    connected, buffer = _read_frame(sock, buffer)
    if not connected.startswith(b"40"):
        raise ConnectionError(f"no Socket.IO connect reply: {connected[:80]!r}")
    return sock


def wait_clients(worker: Worker, expected: int, timeout: float = 10.0) -> None:
    """Wait until the worker counts `expected` connected browsers."""
    deadline = time.monotonic() + timeout
    while pick(worker.metrics(), "numcast_connected_clients") != expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker does not count {expected} browsers")
        time.sleep(0.1)


def run(server, worker: Worker, args) -> None:
    """Attach the browsers, flood, and print; everything this starts is stopped before it returns."""
    readers, stalled, flood = [], [], None
    try:
        ready, stop, results = new_queue(), new_event(), new_queue()
        readers = [spawn(reader_process, worker.url, ready, stop, results) for _ in range(args.clients)]
        for _ in readers:
            ready.get(timeout=30)
        stalled = [stalled_client(worker.port) for _ in range(args.stalled)]
        wait_clients(worker, args.clients + args.stalled)
        time.sleep(1)  # let start-up allocations settle before the baseline
        start_rss, start_cpu = rss_mib(worker.pid), cpu_seconds(worker.pid)
        with Sampler(lambda: (time.monotonic(), rss_mib(worker.pid)), 0.5) as rss:
            count = int(args.rate * args.seconds)
            flood = Flood(server.url, count, rate=args.rate, pipeline=max(1, int(args.rate / 100))).start()
            sent = flood.wait(timeout=args.seconds + 30)
            time.sleep(3)  # what is still queued drains, or does not
        metrics = worker.metrics()
        stop.set()
        reports = [results.get(timeout=30) for _ in readers]
        end_rss, cpu = rss_mib(worker.pid), cpu_seconds(worker.pid) - start_cpu
        peak_rss = max([start_rss, end_rss, *(mib for _, mib in rss.samples)])
        accepted = pick(metrics, 'numcast_accepted_total{path="redis"}')
        print(
            f"published {sent['sent']} at {sent['sent'] / (sent['ended'] - sent['started']):,.0f} msg/s; "
            f"worker accepted {accepted:.0f}, used {cpu:.1f}s of CPU",
            flush=True,
        )
        print(
            f"worker RSS: start {start_rss:.1f} MiB, peak {peak_rss:.1f} MiB, end {end_rss:.1f} MiB "
            f"(growth {end_rss - start_rss:+.1f} MiB)",
            flush=True,
        )
        t0 = rss.samples[0][0] if rss.samples else 0.0
        print("RSS over time (s: MiB): " + ", ".join(f"{t - t0:.0f}: {m:.0f}" for t, m in rss.samples[::4]))
        print(
            f"browser dropped (metric): {pick(metrics, *DROPPED):.0f}; connected clients "
            f"{pick(metrics, 'numcast_connected_clients'):.0f}",
            flush=True,
        )
        for i, r in enumerate(reports):
            print(
                f"reader {i + 1}: {r['count']} values in {r['events']} batches at {r['rate']:,.0f}/s, "
                f"longest gap {r['gap']:.2f}s, told dropped {r['dropped']}, connected {r['connected']}, "
                f"its cpu {r['cpu']:.1f}s",
                flush=True,
            )
    finally:
        if flood is not None:
            flood.stop()
        for sock in stalled:
            sock.close()
        for process in readers:
            if process.is_alive():
                process.terminate()
            process.join(5)


def main() -> int:
    """Attach the browsers, flood, sample the worker's memory, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4, help="browsers that read everything")
    parser.add_argument("--stalled", type=int, default=1, help="browsers that stop reading after connecting")
    parser.add_argument("--rate", type=float, default=10_000, help="values published per second")
    parser.add_argument("--seconds", type=float, default=20, help="length of the flood")
    parser.add_argument("--client-queue", type=int, default=2000, help="the worker's CLIENT_QUEUE")
    args = parser.parse_args()
    print(
        f"fan-out bench: {args.clients} reading + {args.stalled} stalled browser(s), {args.rate:,.0f} values/s "
        f"for {args.seconds:g}s, CLIENT_QUEUE={args.client_queue}; the bench Redis has pubsub limit 0 0 0",
        flush=True,
    )
    try:
        with bench_redis() as server, Worker(server.url, CLIENT_QUEUE=str(args.client_queue)) as worker:
            run(server, worker, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, queue.Empty) as exc:
        print(f"fan-out bench failed: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
