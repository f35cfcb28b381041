"""The anchor: a bare asyncio WebSocket server with only enough Engine.IO to connect, fed by the same channel.

It is what fan-out costs with nothing else in the way, measured on the same machine at the same moment as
the worker. It subscribes to the channel, and sends every value as its own `numbers` frame while at most
COALESCE_ABOVE browsers are connected; above that it gathers values for COALESCE_SECONDS and sends them as
one frame. Each frame is built once and written to every browser whose send buffer is not full. It never
pings and keeps no history: it is a yardstick, not a product, and it lives in bench/ only.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import redis.asyncio
from _websocket import Frames, accept_key, frame

COALESCE_ABOVE = 100
COALESCE_SECONDS = 0.020
WRITE_LIMIT = 1 << 20  # a browser with this much unsent is skipped, and the values counted as dropped


class Anchor:
    """The server's state: connected browsers and values waiting to be sent."""

    def __init__(self) -> None:
        self.browsers: set[asyncio.Transport] = set()
        self.pending: list[bytes] = []
        self.dropped = 0
        self.flushing = False

    def send(self, values: list[bytes]) -> None:
        """One frame with `values`, to every browser."""
        data = frame(b'42["numbers",[' + b",".join(values) + b"]]", mask=False)
        for transport in self.browsers:
            if transport.get_write_buffer_size() > WRITE_LIMIT:
                self.dropped += len(values)
            else:
                transport.write(data)

    def value(self, raw: bytes) -> None:
        """A value from the channel: sent at once, or gathered while many browsers are connected."""
        if len(self.browsers) <= COALESCE_ABOVE:
            self.send([raw])
            return
        self.pending.append(raw)
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().call_later(COALESCE_SECONDS, self._flush)

    def _flush(self) -> None:
        self.flushing = False
        values, self.pending = self.pending, []
        if values:
            self.send(values)


class Connection(asyncio.Protocol):
    """One browser: the upgrade, the Engine.IO open packet, the namespace reply; then it only receives."""

    def __init__(self, anchor: Anchor) -> None:
        self.anchor = anchor
        self.head = b""
        self.frames: Frames | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.anchor.browsers.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.frames is None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, data = self.head.split(b"\r\n\r\n", 1)
            key = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                        if line.lower().startswith(b"sec-websocket-key:")), b"")  # fmt: skip
            if not head.startswith(b"GET /socket.io/") or not key:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()
                return
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
            )
            sid = uuid.uuid4().hex.encode()
            opened = b'0{"sid":"' + sid + b'","upgrades":[],"pingInterval":25000,"pingTimeout":20000}'
            self.transport.write(frame(opened, mask=False))
            self.frames = Frames()
        for first, payload in self.frames.feed(data):
            if first & 0x0F == 8:
                self.transport.close()
            elif payload.startswith(b"40"):
                self.transport.write(frame(b'40{"sid":"' + uuid.uuid4().hex.encode() + b'"}', mask=False))
                self.anchor.browsers.add(self.transport)


async def serve(redis_url: str, channel: str, ready, stop) -> None:
    """Listen on a free port, subscribe, say so through `ready`, and serve until `stop` is set."""
    anchor = Anchor()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(anchor), "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    pubsub = redis.asyncio.Redis.from_url(redis_url).pubsub()
    await pubsub.subscribe(channel)
    ready.put({"port": port, "pid": os.getpid()})
    try:
        while not stop.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None and message["type"] == "message":
                anchor.value(message["data"])
    finally:
        server.close()
        await pubsub.aclose()


def main(redis_url: str, channel: str, ready, stop) -> None:
    """Process entry point (spawned by bench/clients.py)."""
    asyncio.run(serve(redis_url, channel, ready, stop))
