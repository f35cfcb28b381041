"""Bad input at the HTTP port itself, over raw sockets: malformed WebSocket frames after a real upgrade, malformed
Engine.IO and Socket.IO packets, and bytes that are no HTTP at all, against the control-plane, the worker and the
alerter (eventlet) and the worker under threading. Each gets an error or a close of that connection only, is
counted and logged, and a browser connected before keeps being served, as /healthz is."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import ssl
import struct
import time
from collections.abc import Iterator

import pytest
from conftest import Browser, RedisServer, Service, envelope, eventually, http, publish
from raw_browsers import split_frames, upgrade_request

from numcast.local import free_port

LIMIT = 1_000_000  # python-engineio's max_http_buffer_size: the largest message a client may send
SERVICES = {
    "control": ("control", {}),
    "worker": ("worker", {}),
    "worker-threading": ("worker", {"ASYNC_MODE": "threading"}),
    "alerter": ("alerter", {}),
}


class Stack:
    """One running service, its Redis, and a browser that joined before any bad input."""

    def __init__(self, service: Service, redis_server: RedisServer, browser: Browser) -> None:
        self.service, self.redis, self.browser = service, redis_server, browser
        self.seq = 0

    def still_serves(self) -> None:
        """/healthz answers, the browser is still connected, and on a worker a new value reaches it."""
        assert self.service.get("/healthz")[0] == 200
        assert self.browser.client.connected
        if self.service.command == "worker":
            self.seq += 1
            publish(self.redis, envelope(self.seq, source="wire-1"))
            eventually(lambda: self.seq in self.browser.seqs(), message=f"the browser gets seq {self.seq}")


@pytest.fixture(scope="module", params=SERVICES)
def stack(request, tmp_path_factory) -> Iterator[Stack]:
    """A service started once for every case of the module (each case checks counter differences)."""
    command, extra = SERVICES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    redis_server = RedisServer().start()
    env = {
        "REDIS_URL": redis_server.url, "HOST": "127.0.0.1", "PORT": str(free_port()), "TCP_PORT": str(free_port()),
        "ADMIN_PORT": str(free_port()),
        "WORKER_NAME": "machine-1", "SINK_FILE": str(folder / "sink.jsonl"), "HTTP_HEADER_TIMEOUT": "1", **extra,
    }  # fmt: skip
    service = Service(command, env, folder / f"{command}.log")
    request.node.numcast_services = [service]
    try:
        service.start("/readyz" if command == "worker" else "/healthz")
        browser = Browser(service.url)
        yield Stack(service, redis_server, browser)
        browser.close()
    finally:
        code = service.stop()
        redis_server.stop()
    assert code == 0, f"{command} exited with {code}"


@pytest.fixture(autouse=True)
def _logs_on_failure(request, stack) -> None:
    request.node.numcast_services = [stack.service]  # conftest's report shows its log when a case fails


# --- WebSocket and Engine.IO/Socket.IO at the byte level ------------------------------------------------------


def frame(payload: bytes, opcode: int = 1, fin: bool = True, rsv: int = 0, masked: bool = True, length: int = -1):
    """One client frame; `length` lies about the payload's length when given."""
    length = len(payload) if length < 0 else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def joined(port: int) -> tuple[socket.socket, bytearray]:
    """A raw WebSocket to /socket.io/ that has joined the `/` namespace, and what it received past that."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    request, accept = upgrade_request(port)
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    head, rest = head.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101") and accept.encode() in head, head
    pending = bytearray(rest)
    while True:
        for _, payload in split_frames(pending):
            if payload.startswith(b"0"):  # Engine.IO open: join the namespace, as a browser does
                sock.sendall(frame(b"40"))
            elif payload.startswith(b"40"):
                return sock, pending
        pending += sock.recv(4096)


def streamed(sock: socket.socket, head: bytes, total: int) -> None:
    """Send a frame header, then masked payload up to `total` bytes, for as long as the server takes it."""
    mask = head[-4:]
    chunk = mask * 16384  # zeros, masked: valid UTF-8 once the server unmasks them
    sock.settimeout(5)
    with contextlib.suppress(OSError):  # closed by the server part-way: what this is about
        sock.sendall(head)
        for _ in range(0, total, len(chunk)):
            sock.sendall(chunk)


def closed(sock: socket.socket, pending: bytearray, timeout: float = 5.0) -> tuple[int | None, bool]:
    """The code of the close frame the server sent (None if none came), and whether it closed the connection."""
    code, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return code, True
        if not data:
            return code, True
        pending += data
        for opcode, payload in split_frames(pending):
            if opcode == 8 and code is None:
                code = int.from_bytes(payload[:2], "big")
    return code, False


def header_timeouts(service: Service) -> float:
    """Connections the service closed for waiting too long for a request (HTTP_HEADER_TIMEOUT is 1 s here)."""
    return service.metric("numcast_http_closed_total", 'reason="header_timeout"')


PROTOCOL_ERROR, INVALID_DATA, TOO_LARGE = 1002, 1007, 1009
# (bytes sent after joining, the close code, the layer counted, the reason logged)
FRAMES = {
    "opcode 3 (reserved)": (frame(b"x", opcode=3), PROTOCOL_ERROR, "websocket", "protocol_error"),
    "opcode 0xB (reserved control)": (frame(b"x", opcode=0xB), PROTOCOL_ERROR, "websocket", "protocol_error"),
    "RSV1": (frame(b'42["x"]', rsv=4), PROTOCOL_ERROR, "websocket", "protocol_error"),
    "RSV2": (frame(b'42["x"]', rsv=2), PROTOCOL_ERROR, "websocket", "protocol_error"),
    "RSV3": (frame(b'42["x"]', rsv=1), PROTOCOL_ERROR, "websocket", "protocol_error"),
    "unmasked": (frame(b"3", masked=False), PROTOCOL_ERROR, "websocket", "protocol_error"),
    "invalid UTF-8": (frame(b'42["\xff\xfe"]'), INVALID_DATA, "websocket", "invalid_data"),
    "fragmented ping": (frame(b"x", opcode=9, fin=False), PROTOCOL_ERROR, "websocket", "protocol_error"),
    "unknown Engine.IO type": (frame(b"9"), PROTOCOL_ERROR, "engineio", "packet_type"),
    "Engine.IO type not a digit": (frame(b"x"), PROTOCOL_ERROR, "engineio", "packet_type"),
    "empty Engine.IO packet": (frame(b""), PROTOCOL_ERROR, "engineio", "packet_type"),
    "bad JSON in an EVENT": (frame(b'42["x",{bad'), PROTOCOL_ERROR, "socketio", "not_decodable"),
    "nested 10,000 deep": (frame(b"42" + b"[" * 10_000), PROTOCOL_ERROR, "socketio", "not_decodable"),
    "unknown Socket.IO type": (frame(b"49"), PROTOCOL_ERROR, "socketio", "packet_type"),
    "an EVENT without a name": (frame(b"42[7]"), PROTOCOL_ERROR, "socketio", "event_name"),
    "two attachments announced, one placeholder": (
        frame(b'452-["x",{"_placeholder":true,"num":0}]'),
        PROTOCOL_ERROR,
        "socketio",
        "attachments",
    ),
    "one attachment announced, text instead": (
        frame(b'451-["x",{"_placeholder":true,"num":0}]') + frame(b'42["y"]'),
        PROTOCOL_ERROR,
        "socketio",
        "attachments",
    ),
    "a binary message nobody announced": (frame(b"\x00\x01", opcode=2), PROTOCOL_ERROR, "socketio", "attachments"),
}


@pytest.mark.parametrize("case", FRAMES)
def test_a_bad_frame_or_packet_closes_that_websocket_only(stack, case):
    sent, code, layer, reason = FRAMES[case]
    service = stack.service
    before, timeouts = service.metric("numcast_socketio_refused_total", f'layer="{layer}"'), header_timeouts(service)
    sock, pending = joined(service.port)
    sock.sendall(sent)
    assert closed(sock, pending) == (code, True), "a close frame saying why, and the end of the connection"
    sock.close()
    assert header_timeouts(service) == timeouts, "closed as the WebSocket ended, not left waiting for a request"
    eventually(
        lambda: service.metric("numcast_socketio_refused_total", f'layer="{layer}"') == before + 1, message="counted"
    )
    eventually(lambda: f"socket.io input refused layer={layer} reason={reason} " in service.logs(), message="logged")
    assert "Traceback" not in service.logs()
    stack.still_serves()


# A frame that says it holds 1 TB, and a message just over the limit: the server stops reading within the limit.
TOO_MUCH = {"a length field of 1 TB": 2**40, "a message over the limit": LIMIT + 100_000}


@pytest.mark.parametrize("case", TOO_MUCH)
def test_a_frame_over_the_size_limit_closes_that_websocket_only(stack, case):
    service = stack.service
    before, timeouts = service.metric("numcast_socketio_refused_total", 'layer="websocket"'), header_timeouts(service)
    sock, pending = joined(service.port)
    streamed(sock, frame(b"", length=TOO_MUCH[case]), 2 * LIMIT)
    code, ended = closed(sock, pending)
    assert ended and code in (TOO_LARGE, None), code  # the close frame may be lost to the reset of unread bytes
    sock.close()
    assert header_timeouts(service) == timeouts, "closed as the WebSocket ended, not left waiting for a request"
    eventually(
        lambda: service.metric("numcast_socketio_refused_total", 'layer="websocket"') == before + 1, message="counted"
    )
    eventually(lambda: "socket.io input refused layer=websocket reason=too_large " in service.logs(), message="logged")
    stack.still_serves()


def test_long_polling_is_refused(stack):
    """WebSocket only, as the dashboard connects: a polling session's packets would be a way around the checks."""
    status, body = stack.service.get("/socket.io/?EIO=4&transport=polling")
    assert status == 400, (status, body)
    stack.still_serves()


# --- Bytes that are no HTTP -----------------------------------------------------------------------------------


def client_hello() -> bytes:
    """The first bytes of a TLS handshake, as any HTTPS client sends them."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="numcast.invalid")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


NOT_HTTP = {
    "a TLS ClientHello": client_hello(),
    "random bytes": random.Random(15).randbytes(4096),
    "a Redis command": b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
    "10 KB of path": b"GET /" + b"a" * 10240 + b" HTTP/1.1\r\nHost: numcast\r\n\r\n",
}


def answer(sock: socket.socket) -> tuple[bytes, bool]:
    """What the server sent back, and whether it closed the connection (within 5 s)."""
    got, deadline = b"", time.monotonic() + 5
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return got, False
        except ConnectionResetError:
            return got, True
        if not data:
            return got, True
        got += data
    return got, False


def status(response: bytes) -> int | None:
    """The status of an HTTP response; an error page without a status line (HTTP/0.9 style) is read for its code."""
    if response.startswith(b"HTTP/1."):
        return int(response.split(b" ", 2)[1])
    if b"Error code: " in response:
        return int(response.split(b"Error code: ", 1)[1][:3])
    return None


@pytest.mark.parametrize("case", NOT_HTTP)
def test_bytes_that_are_no_http_get_an_error_and_a_close(stack, case):
    service = stack.service
    reasons = ("bad_request", "header_timeout")
    before = {r: service.metric("numcast_http_closed_total", f'reason="{r}"') for r in reasons}
    with socket.create_connection(("127.0.0.1", service.port), timeout=5) as sock:
        sock.sendall(NOT_HTTP[case])
        response, ended = answer(sock)
    code = status(response)
    if code == 404:  # werkzeug takes 10 KB of path as a request (eventlet's limit is 8 KB): Flask's JSON 404
        assert case == "10 KB of path" and json.loads(response.split(b"\r\n\r\n", 1)[1])["status"] == 404
        return stack.still_serves()
    assert ended, "the connection is closed"
    # The error, unless the bytes held no line end: then the header timeout closes it with nothing to say.
    assert code in (400, 414) or (code is None and response == b""), response[:300]
    counted = "bad_request" if code else "header_timeout"
    eventually(
        lambda: service.metric("numcast_http_closed_total", f'reason="{counted}"') == before[counted] + 1,
        message=f"counted as {counted}",
    )
    assert all(
        service.metric("numcast_http_closed_total", f'reason="{r}"') == before[r] for r in reasons if r != counted
    )
    eventually(lambda: f"http connection {counted} " in service.logs(), message="logged")
    stack.still_serves()


# --- The admin port -----------------------------------------------------------------------------------------


def test_metrics_and_the_full_status_are_on_the_admin_port_only(stack):
    """What the NodePort served to anyone (metrics, the sink's path, the Redis user of a refusal, replay errors)
    is on ADMIN_PORT, which only Prometheus reaches in a cluster; the public port keeps the pages' view."""
    service = stack.service
    assert http("GET", service.url + "/metrics")[0] == 404
    status, text = http("GET", service.admin_url + "/metrics")
    assert status == 200 and "numcast_admin_http_connections " in text
    for path in ("/", "/socket.io/?EIO=4&transport=websocket", "/api/alerts"):
        assert http("GET", service.admin_url + path)[0] == 404, f"{path}: the admin port serves its routes only"
    assert http("GET", service.admin_url + "/healthz")[0] == 200
    if service.command == "worker":
        public, full = http("GET", service.url + "/api/status")[1], http("GET", service.admin_url + "/api/status")[1]
        assert full["sink"]["path"] == service.env["SINK_FILE"] and "last_error" in full["replay"]
        assert public["sink"] == {"ok": full["sink"]["ok"]} and "last_error" not in public["replay"]
    stack.still_serves()
