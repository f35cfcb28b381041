"""What clients send to /socket.io/: every WebSocket frame and every Engine.IO and Socket.IO packet is checked.

A client that breaks one of the three protocols gets a WebSocket close frame saying why, its connection ends,
and the refusal is counted (`numcast_socketio_refused_total{layer}`) and logged; everyone else is served on.
The libraries do most of it, but not all: eventlet takes frames with RSV2 or RSV3 set, and answers invalid
UTF-8 with 1011 (a server error); under threading a message has no size limit and a refused frame leaves the
connection open; and a packet Engine.IO or Socket.IO cannot parse either escapes as an HTTP 500 (with a
traceback, from eventlet) onto the upgraded socket, or is logged as a traceback while the connection stays.

This reaches into the WebSocket objects of eventlet and simple-websocket and into engineio's driver table,
which the pinned versions have; tests/integration/test_wire_doors.py fails loudly if an upgrade moves them.
"""

from __future__ import annotations

import logging
import sys
import types

from socketio import packet as sio

from numcast.logs import Throttled

log = logging.getLogger(__name__)

LAYERS = ("transport", "websocket", "engineio", "socketio")  # transport: an HTTP request that is no WebSocket
SOCKET_IO_PATH = "/socket.io"
_NOT_WEBSOCKET = b'{"error": "Socket.IO here is WebSocket only (transport=websocket)", "status": 400}'
CLIENT_EIO_TYPES = "123456"  # close, ping (the upgrade's probe), pong, message, upgrade, noop: never open (0)
CLIENT_SIO_TYPES = (sio.CONNECT, sio.DISCONNECT, sio.EVENT, sio.ACK, sio.BINARY_EVENT, sio.BINARY_ACK)
PROTOCOL_ERROR, UNSUPPORTED, INVALID_DATA, TOO_LARGE = 1002, 1003, 1007, 1009  # WebSocket close codes
CLOSE_REASONS = {
    PROTOCOL_ERROR: "protocol_error",
    UNSUPPORTED: "unsupported",
    INVALID_DATA: "invalid_data",
    TOO_LARGE: "too_large",
}


class SocketInput:
    """Checks and counts what clients send over WebSockets to the app's Socket.IO server."""

    def __init__(self, metrics) -> None:
        self.refused = metrics.counter(
            "socketio_refused",
            "Connections to /socket.io/ closed for what the client sent, by the protocol it broke.",
            ("layer",),
        )
        for layer in LAYERS:
            self.refused.labels(layer)  # every series exists from the start, at 0
        self._warn = Throttled(log)

    def init_app(self, app) -> None:
        """Refuse, count and log every request to /socket.io/ that is no WebSocket upgrade, before Socket.IO.

        The page connects over WebSocket only, and engineio is told so: it answers long-polling 400 by itself, but
        silently. Refused here, a polling client is counted and logged like any other broken client, and never
        reaches what counts browsers (MAX_BROWSERS).
        """
        inner = app.wsgi_app

        def checked(environ, start_response):
            if environ.get("PATH_INFO", "").startswith(SOCKET_IO_PATH) and not _websocket(environ):
                self.refuse(environ, "transport", "not_websocket", f"{environ.get('REQUEST_METHOD')} {_query(environ)}")
                start_response("400 Bad Request", [("Content-Type", "application/json")])
                return [_NOT_WEBSOCKET]
            return inner(environ, start_response)

        app.wsgi_app = checked

    def install(self, eio_server) -> None:
        """Check every WebSocket `eio_server` opens from now on (install after anything else wrapping its driver)."""
        base, guard = eio_server._async["websocket"], self
        options = {"max_message_size": eio_server.max_http_buffer_size} if eio_server.async_mode == "threading" else {}

        class Checked(base):
            def __init__(self, handler, server) -> None:
                super().__init__(guard._checking(handler), server, **options)

        eio_server._async = {**eio_server._async, "websocket": Checked}

    def _checking(self, handler):
        """`handler` (engineio's, bound to its socket), seeing only what passes the checks; bound the same way."""
        eio_socket = handler.__self__

        def checked(eio_socket, ws):
            if hasattr(ws, "_recv_frame"):  # eventlet's RFC6455WebSocket
                _check_eventlet_frames(ws, self)
                wait = ws.wait
            else:  # engineio's wrapper of a simple-websocket Server, under threading
                wait = _threading_wait(ws.ws)
            ws.wait = _checked_wait(ws, wait, eio_socket, self)
            return handler(ws)

        return types.MethodType(checked, eio_socket)  # bound: the next wrapper finds the socket (numcast_worker.direct)

    def refuse(self, ws, layer: str, reason: str, detail: str) -> None:
        """Count and log one refusal (the connection is being closed); `ws` is a WebSocket or a WSGI environ."""
        self.refused.labels(layer).inc()
        if isinstance(ws, dict):
            environ = ws
        else:
            environ = getattr(ws, "environ", None) or getattr(getattr(ws, "ws", None), "environ", {})
        self._warn.warning(
            f"{layer}:{reason}",
            "socket.io input refused layer=%s reason=%s peer=%s:%s detail=%s",
            layer,
            reason,
            environ.get("REMOTE_ADDR", "?"),
            environ.get("REMOTE_PORT", "?"),
            detail[:200],
        )


class _Packets:
    """The Engine.IO and Socket.IO packets of one connection, one message at a time."""

    def __init__(self) -> None:
        self.attachments = 0  # binary messages the last BINARY_EVENT or BINARY_ACK announced and are still due

    def problem(self, data: str | bytes) -> tuple[str, str, str] | None:
        """(layer, reason, detail) if `data` breaks Engine.IO or Socket.IO here, else None."""
        if isinstance(data, bytes | bytearray):
            if not self.attachments:
                return "socketio", "attachments", "a binary message no packet announced"
            self.attachments -= 1
            return None
        if self.attachments:
            return "socketio", "attachments", f"a text message where {self.attachments} attachment(s) were due"
        if not data or data[0] not in CLIENT_EIO_TYPES:
            return "engineio", "packet_type", f"packet {data[:40]!r}"
        if data[0] != "4":
            return None
        try:
            packet = sio.Packet(encoded_packet=data[1:])
        except (ValueError, TypeError, RecursionError) as exc:
            return "socketio", "not_decodable", f"{type(exc).__name__}: {exc}"
        if packet.packet_type not in CLIENT_SIO_TYPES:
            return "socketio", "packet_type", f"packet {data[:40]!r}"
        if packet.packet_type in (sio.BINARY_EVENT, sio.BINARY_ACK):
            numbers = sorted(_placeholders(packet.data))
            if not packet.attachment_count or numbers != list(range(packet.attachment_count)):
                return "socketio", "attachments", f"{packet.attachment_count} announced, placeholders {numbers[:10]}"
            self.attachments = packet.attachment_count
        elif packet.packet_type == sio.EVENT and not (
            isinstance(packet.data, list) and packet.data and isinstance(packet.data[0], str)
        ):
            return "socketio", "event_name", "an EVENT without a name"
        return None


def _placeholders(data) -> list[int]:
    """The `num` of every binary placeholder in a decoded Socket.IO payload."""
    if isinstance(data, dict):
        if data.get("_placeholder") is True:
            return [data.get("num")]
        return [n for value in data.values() for n in _placeholders(value)]
    if isinstance(data, list):
        return [n for value in data for n in _placeholders(value)]
    return []


def _checked_wait(ws, wait, eio_socket, guard: SocketInput):
    """`ws.wait`, returning only messages that pass; a refusal closes the WebSocket and looks like the client left."""
    packets = _Packets()

    def checked_wait():
        try:
            data = wait()
        except UnicodeDecodeError:  # eventlet, invalid UTF-8: it has sent its close frame, counted by _close
            data = None
        gone = "6" if eio_socket.upgrading else None  # mid-upgrade engineio decodes what it gets: a NOOP fails it
        if data is None:
            _count_threading_refusal(ws, guard)
            return gone
        found = packets.problem(data)
        if found is None:
            return data
        layer, reason, detail = found
        guard.refuse(ws, layer, reason, f"{detail} sid={eio_socket.sid}")
        _fail(ws, f"{layer} {reason}")
        return gone

    return checked_wait


def _fail(ws, reason: str) -> None:
    """Send a close frame (protocol error) saying `reason`; engineio then ends the connection as if the client left."""
    if hasattr(ws, "_send_closing_frame"):  # eventlet
        ws._send_closing_frame(ignore_send_errors=True, close_data=(PROTOCOL_ERROR, reason))
    elif ws.ws.connected:  # simple-websocket, under threading
        ws.close = lambda: None  # engineio's writer would close again, which wsproto refuses with a traceback
        ws.ws.close(PROTOCOL_ERROR, reason)


def _threading_wait(server):
    """simple-websocket's receive, which can wake for a message over the size limit before it marks the connection
    closed, and then sleep for ever: look again every second."""
    from simple_websocket import ConnectionClosed

    def wait():
        while True:
            try:
                data = server.receive(timeout=1)
            except ConnectionClosed:
                return None
            if data is not None:
                return data

    return wait


def _count_threading_refusal(ws, guard: SocketInput) -> None:
    """Under threading, a frame wsproto refused (or a message over the size limit) ends `wait()` with None."""
    server = getattr(ws, "ws", None)
    if server is None or not hasattr(server, "close_reason"):
        return
    code = int(server.close_reason)
    if server.max_message_size and server.incoming_message_len > server.max_message_size:
        code, detail = TOO_LARGE, f"a message over {server.max_message_size} bytes"
    else:
        detail = str(server.close_message)
    if code in CLOSE_REASONS:
        guard.refuse(ws, "websocket", CLOSE_REASONS[code], detail)


def _check_eventlet_frames(ws, guard: SocketInput) -> None:
    """Refuse RSV2 and RSV3 (eventlet checks only RSV1), say 1007 for invalid UTF-8, and count every refused frame."""
    from eventlet.websocket import FailedConnectionError

    recv_frame, get_bytes, close = ws._recv_frame, ws._get_bytes, ws.close
    header_next = [False]

    def _recv_frame(message=None):
        header_next[0] = True  # its first read is the frame's two header bytes
        return recv_frame(message=message)

    def _get_bytes(count: int) -> bytes:
        data = get_bytes(count)
        if header_next[0]:
            header_next[0] = False
            if data[0] & 0x30:  # no extension of ours gives RSV2 or RSV3 a meaning
                raise FailedConnectionError(PROTOCOL_ERROR, "RSV2 and RSV3 must be 0")
        return data

    def _close(close_data=None):
        if close_data and close_data[0] == 1011 and isinstance(sys.exc_info()[1], UnicodeDecodeError):
            close_data = (INVALID_DATA, "text must be valid UTF-8")  # eventlet says 1011, a server error
        if close_data and close_data[0] in CLOSE_REASONS:
            guard.refuse(ws, "websocket", CLOSE_REASONS[close_data[0]], str(close_data[1]))
        return close(close_data=close_data)

    ws._recv_frame, ws._get_bytes, ws.close = _recv_frame, _get_bytes, _close


def _websocket(environ: dict) -> bool:
    """A WebSocket upgrade asking for the websocket transport, as the page's client sends it."""
    query = environ.get("QUERY_STRING", "")
    return environ.get("HTTP_UPGRADE", "").lower() == "websocket" and "transport=websocket" in query.split("&")


def _query(environ: dict) -> str:
    return environ.get("PATH_INFO", "") + "?" + environ.get("QUERY_STRING", "")[:120]
