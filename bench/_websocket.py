"""Just enough WebSocket (RFC 6455) and Engine.IO v4 for the bench: frames, a handshake, raw asyncio browsers.

A python-socketio client costs a thread or two and a JSON decode per event; hundreds of them would measure
the client, not the server. These browsers speak the same bytes as a real one
(`/socket.io/?EIO=4&transport=websocket`, masked frames, pongs, permessage-deflate if asked) with a regex
where a browser would parse JSON.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import time
import zlib
from array import array

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PATH = "/socket.io/?EIO=4&transport=websocket"
NUMBERS = b'42["numbers",'
_SEQ = re.compile(rb'"seq":(\d+)')
_TS = re.compile(rb'"ts":([0-9.eE+-]+)')


def accept_key(key: bytes) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def frame(payload: bytes, mask: bool, opcode: int = 1) -> bytes:
    """One final frame; a client masks (RFC 6455 5.3), a server does not."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + unmask(payload, key)


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key (masking and unmasking are the same operation)."""
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


class Frames:
    """Splits a byte stream into (first byte, payload) frames; the first byte holds FIN, RSV1 and the opcode."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add `data`; return the frames now complete."""
        buf = self.buffer
        buf += data
        out, pos, end = [], 0, len(buf)
        while end - pos >= 2:
            length, head = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            masked = buf[pos + 1] & 0x80
            start = pos + head + (4 if masked else 0)
            if end < start + length:
                break
            payload = bytes(buf[start : start + length])
            if masked:
                payload = unmask(payload, bytes(buf[start - 4 : start]))
            out.append((buf[pos], payload))
            pos = start + length
        del buf[:pos]
        return out


def upgrade_request(host: str, port: int, deflate: bool) -> tuple[bytes, bytes]:
    """The GET a browser sends to open the Socket.IO WebSocket, and the key it must see accepted."""
    key = base64.b64encode(os.urandom(16))
    extension = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nOrigin: http://{host}:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extension}\r\n"
    )
    return request.encode(), key


class Browser(asyncio.Protocol):
    """One raw browser: upgrades, joins the `/` namespace, answers pings, and records every `numbers` value.

    For each value it keeps the latency (arrival minus the envelope's `ts`); per connection it counts values,
    duplicates and values out of order, by `seq`.
    """

    def __init__(self, host: str, port: int, deflate: bool, latencies: array) -> None:
        self.host, self.port, self.deflate, self.latencies = host, port, deflate, latencies
        self.connected = asyncio.get_running_loop().create_future()
        self.closed = False
        self.head = b""
        self.frames: Frames | None = None
        self.inflate = None
        self.count = self.duplicates = self.disorder = self.frames_in = 0
        self.next_seq = -1
        self.key = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        request, self.key = upgrade_request(self.host, self.port, self.deflate)
        transport.write(request)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed during the handshake: {exc}"))

    def data_received(self, data: bytes) -> None:
        if self.frames is None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, data = self.head.split(b"\r\n\r\n", 1)
            if b" 101 " not in head.split(b"\r\n", 1)[0] or accept_key(self.key).encode() not in head:
                self._fail(f"no WebSocket upgrade: {head[:60]!r}")
                return
            if b"permessage-deflate" in head.lower():
                self.inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            self.frames = Frames()
        now = time.time()
        for first, payload in self.frames.feed(data):
            if first & 0x40 and self.inflate is not None:  # RSV1: compressed (RFC 7692)
                payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
            opcode = first & 0x0F
            if opcode == 8:
                self.transport.close()
                return
            if opcode == 9:
                self.transport.write(frame(payload, True, 0xA))
            elif opcode == 1:
                self._message(payload, now)

    def _message(self, payload: bytes, now: float) -> None:
        if payload.startswith(NUMBERS):
            self.frames_in += 1
            append = self.latencies.append
            for ts in _TS.findall(payload):
                append(now - float(ts))
            for raw in _SEQ.findall(payload):
                seq = int(raw)
                if seq < self.next_seq:
                    self.duplicates += 1
                    continue
                if self.next_seq >= 0 and seq != self.next_seq:
                    self.disorder += 1
                self.count += 1
                self.next_seq = seq + 1
        elif payload == b"2":  # Engine.IO ping: a browser that does not answer is closed
            self.transport.write(frame(b"3", True))
        elif payload.startswith(b"0{"):  # Engine.IO open: join the default namespace
            self.transport.write(frame(b"40", True))
        elif payload.startswith(b"40"):
            if not self.connected.done():
                self.connected.set_result(time.time())
        elif payload.startswith(b"44") and not self.connected.done():
            self._fail(f"namespace refused: {payload[:60]!r}")

    def _fail(self, reason: str) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(reason))
        self.transport.close()
