"""Under eventlet, the fan-out writes WebSocket frames straight to each browser's socket.

python-engineio gives every browser a queue and a writer green thread: each packet costs a queue hand-off, a
timer, two greenlet switches and a send. A server's frames are unmasked, so a round frames each message once
and writes the same bytes to every browser, from the fan-out's own green thread and without blocking. What the
kernel does not take waits in that browser's `pending` and goes before anything else on its socket: engineio's
own packets (pings, close) are sent under the same lock, after `pending`, so no frame is ever cut in two.
"""

from __future__ import annotations

import struct


class WebSockets:
    """The eventlet WebSocket of each browser, by Engine.IO sid, recorded as python-engineio creates it."""

    def __init__(self) -> None:
        self._by_sid: dict[str, object] = {}
        self._green_socket = None  # eventlet's GreenSocket class, imported by install: only under eventlet

    def install(self, eio_server) -> None:
        """Record every WebSocket `eio_server` opens from now on (in a copy of its driver table: no other server's)."""
        from eventlet.greenio import GreenSocket

        self._green_socket = GreenSocket
        base, by_sid = eio_server._async["websocket"], self._by_sid

        class Recorded(base):
            def __init__(self, handler, server) -> None:
                eio_socket = getattr(handler, "__self__", None)  # engineio passes its socket's bound handler
                if eio_socket is not None:
                    handler = _recording(handler, eio_socket, by_sid)
                super().__init__(handler, server)

        eio_server._async = {**eio_server._async, "websocket": Recorded}

    def attach(self, browser) -> bool:
        """Give `browser` its WebSocket once engineio's upgrade is done; False until then, and for good if none fits."""
        socket = browser.socket
        ws = self._by_sid.get(socket.sid)
        if ws is None or not socket.upgraded or socket.upgrading:
            return False  # long-polling, or between the probe and the upgrade: engineio's queue carries it
        if type(ws.socket) is not self._green_socket or ws.extensions or ws.version != 13:
            browser.ws = False  # TLS or compression: bytes differ per browser, engineio's writer keeps it
            return False
        lock, sendall = ws._sendlock, ws.socket.sendall

        def send(frame: bytes) -> None:  # replaces ws._send: what engineio's writer sends goes after `pending`
            with lock:
                if browser.pending:
                    frame, browser.pending = browser.pending + frame, b""
                sendall(frame)

        ws._send = send
        browser.ws = ws
        return True


def _recording(handler, eio_socket, by_sid: dict):
    def recorded(ws):
        by_sid[eio_socket.sid] = ws
        try:
            return handler(ws)
        finally:
            by_sid.pop(eio_socket.sid, None)

    return recorded


def write(browser, data: bytes) -> None:
    """Send `pending` then `data` without blocking: what the kernel does not take becomes `pending`.

    Call it holding the browser's WebSocket send lock. Raises OSError when the connection is gone.
    """
    if browser.pending:
        data = browser.pending + data
    try:
        sent = browser.ws.socket.fd.send(data)  # the plain socket under eventlet's GreenSocket: non-blocking
    except BlockingIOError:
        sent = 0
    browser.pending = data[sent:]


def frame(text: str) -> bytes:
    """One unmasked, final WebSocket text frame: the bytes every browser gets for this message."""
    data = text.encode()
    length = len(data)
    if length < 126:
        return bytes((0x81, length)) + data
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + data
    return struct.pack("!BBQ", 0x81, 127, length) + data
