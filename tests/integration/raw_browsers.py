"""Browsers spoken at the byte level: the WebSocket upgrade a browser sends to `/socket.io/`, its frames, and
Engine.IO v4 / Socket.IO v5 on top. Hundreds fit in one asyncio loop, and one can stop reading for real."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket

PATH = "/socket.io/?EIO=4&transport=websocket"


def upgrade_request(port: int, deflate: bool = False) -> tuple[bytes, str]:
    """The GET a browser sends, and the Sec-WebSocket-Accept it expects back."""
    key = base64.b64encode(os.urandom(16)).decode()
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    extension = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extension}\r\n"
    )
    return request.encode(), accept.decode()


def frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked frame, as a browser sends it (payloads here are short)."""
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def split_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take the complete server frames (unmasked) off the front of `buffer`: (opcode, payload)."""
    frames = []
    while len(buffer) >= 2:
        length, head = buffer[1] & 0x7F, 2
        if length == 126:
            length, head = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < head + length:
            break
        frames.append((buffer[0] & 0x0F, bytes(buffer[head : head + length])))
        del buffer[: head + length]
    return frames


class Browser(asyncio.Protocol):
    """Joins the `/` namespace, answers pings, and keeps every event it gets: `numbers` flattened into `values`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connected = asyncio.get_running_loop().create_future()
        self.head = b""
        self.buffer: bytearray | None = None
        self.values: list[dict] = []
        self.events: list[tuple[str, object]] = []
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        request, self.accept = upgrade_request(self.port)
        transport.write(request)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed before joining: {self.head[:80]!r}"))

    def data_received(self, data: bytes) -> None:
        if self.buffer is None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, rest = self.head.split(b"\r\n\r\n", 1)
            if b" 101 " not in head.split(b"\r\n", 1)[0] or self.accept.encode() not in head:
                self.transport.close()
                return
            self.buffer = bytearray(rest)
        else:
            self.buffer += data
        for opcode, payload in split_frames(self.buffer):
            if opcode == 1:
                self._packet(payload.decode())

    def _packet(self, text: str) -> None:
        if text.startswith("0"):  # Engine.IO open
            self.transport.write(frame(b"40"))
        elif text == "2":  # Engine.IO ping
            self.transport.write(frame(b"3"))
        elif text.startswith("40") and not self.connected.done():
            self.connected.set_result(True)
        elif text.startswith("42"):
            event, data = json.loads(text[2:])
            self.events.append((event, data))
            if event == "numbers":
                self.values.extend(data)

    def seqs(self) -> list[int]:
        """The seq of every value received, in arrival order."""
        return [value["seq"] for value in self.values]


async def open_browsers(port: int, count: int, timeout: float = 30.0, rcvbuf: int = 0) -> list[Browser]:
    """Connect `count` browsers at once and wait until each has joined the namespace.

    With `rcvbuf`, each socket advertises that small a receive window: a browser that pauses reading
    (`transport.pause_reading()`) soon leaves the worker's writes to it half done.
    """
    loop = asyncio.get_running_loop()

    async def one() -> Browser:
        sock = socket.socket()
        sock.setblocking(False)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect, as in stalled_browser
        await loop.sock_connect(sock, ("127.0.0.1", port))
        _, browser = await loop.create_connection(lambda: Browser(port), sock=sock)
        await asyncio.wait_for(browser.connected, timeout)
        return browser

    return list(await asyncio.gather(*(one() for _ in range(count))))


def stalled_browser(port: int, rcvbuf: int = 4096) -> socket.socket:
    """Join like a browser over a raw socket with a small receive buffer, then never read again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: a small advertised window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    request, _ = upgrade_request(port)
    sock.sendall(request)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(4096)
    head, rest = buffer.split(b"\r\n\r\n", 1)
    assert b" 101 " in head.split(b"\r\n", 1)[0], head
    pending, joined = bytearray(rest), False
    while not joined:
        frames = split_frames(pending)
        if not frames:
            pending += sock.recv(4096)
        for _, payload in frames:
            if payload.startswith(b"0"):  # Engine.IO open: join the namespace
                sock.sendall(frame(b"40"))
            joined = joined or payload.startswith(b"40")
    return sock
