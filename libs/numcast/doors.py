"""The HTTP server's connections: counted, capped, and closed when they hold a place without sending a request.

A connection is *waiting* from the moment it is accepted, and again after each response (keep-alive), until the
headers of its next request have arrived; it is then *busy* until that response is sent (a WebSocket or a
long-poll stays busy for as long as it lasts). Waiting connections cost the sender nothing, so they are the ones
given up: one that waits longer than the header timeout is closed, and when every place is taken a new
connection makes room by closing the one that has waited longest. Busy ones are never closed here; when all
places are busy, a new connection is refused with 503.

Closing is a `shutdown()` of the socket: the thread (or green thread) reading it sees the end of the stream and
ends the connection itself, so the server's own bookkeeping (eventlet's pool, werkzeug's threads) stays right.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict

from numcast.logs import Throttled

log = logging.getLogger(__name__)

# Places the worker keeps beyond its browsers (HTTP_MAX_CONNECTIONS >= MAX_BROWSERS + HEADROOM), so probes,
# /metrics, pages and the API are still answered when every browser slot is taken: browsers stay busy, and
# busy connections are never closed to make room.
HEADROOM = 64
REASONS = ("header_timeout", "evicted", "refused", "bad_request")
_BODY = b'{"error": "too many connections", "status": 503}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)


class Doors:
    """At most `limit` connections; one waiting for its headers longer than `header_timeout` seconds is closed."""

    def __init__(self, limit: int, header_timeout: float, metrics) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self._waiting: OrderedDict[socket.socket, float] = OrderedDict()  # oldest first
        self._busy: set[socket.socket] = set()
        self._lock = threading.Lock()  # green under eventlet, where the accept loop and the reaper both call in
        self._warn = Throttled(log)
        metrics.gauge("http_connections", "Open HTTP connections (waiting for a request, or busy).").set_function(
            lambda: len(self)
        )
        self.closed = metrics.counter(
            "http_closed", "HTTP connections closed or refused by the server, by reason.", ("reason",)
        )
        for reason in REASONS:
            self.closed.labels(reason)  # every series exists from the start, at 0

    def __len__(self) -> int:
        return len(self._waiting) + len(self._busy)

    def opened(self, sock: socket.socket) -> bool:
        """Count a new connection; at the limit, close the longest-waiting one, or refuse this one (False)."""
        evicted = None
        with self._lock:
            full = len(self) >= self.limit
            if full and self._waiting:
                evicted, _ = self._waiting.popitem(last=False)
            if not full or evicted is not None:
                self._waiting[sock] = time.monotonic()
        if full:
            self._count("refused" if evicted is None else "evicted")
        if evicted is not None:
            _shut(evicted)
        return not full or evicted is not None

    def refuse(self, sock: socket.socket) -> None:
        """Tell a refused connection why (best effort: it is new, its send buffer is empty), and end it."""
        try:
            sock.setblocking(False)
            sock.send(REFUSAL)
        except OSError:
            pass
        _shut(sock)  # the server closes it, as it does every connection

    def waiting(self, sock: socket.socket) -> None:
        """The connection waits for a request (again): its header timeout starts now."""
        with self._lock:
            if sock in self._busy:
                self._busy.discard(sock)
                self._waiting[sock] = time.monotonic()

    def busy(self, sock: socket.socket) -> bool:
        """A request's headers are in; False if the connection was closed meanwhile (do not serve it)."""
        with self._lock:
            if self._waiting.pop(sock, None) is None:
                return False
            self._busy.add(sock)
            return True

    def closing(self, sock: socket.socket) -> None:
        """The connection ends, whoever closed it."""
        with self._lock:
            self._waiting.pop(sock, None)
            self._busy.discard(sock)

    def malformed(self, sock: socket.socket) -> None:
        """The server answered what came instead of a request (400, 414) and closes: counted, unless this closed it
        (too slow, or evicted: counted then, and a cut request line is no proof of anything)."""
        with self._lock:
            waiting = sock in self._waiting
        if waiting:
            self._count("bad_request")

    def expire(self) -> int:
        """Close every connection that has waited longer than the header timeout; how many."""
        late = []
        with self._lock:
            deadline = time.monotonic() - self.header_timeout
            while self._waiting:
                sock, since = next(iter(self._waiting.items()))
                if since > deadline:
                    break
                del self._waiting[sock]
                late.append(sock)
        for sock in late:
            self._count("header_timeout")
            _shut(sock)
        return len(late)

    def close_waiting(self) -> int:
        """At shutdown: close every connection still waiting for its request's headers; how many.

        Eventlet's server, once it stops accepting, waits for every connection that has begun a request, and a
        request whose headers never end would hold the shutdown for a whole header timeout.
        """
        with self._lock:
            waiting = list(self._waiting)
            self._waiting.clear()
        for sock in waiting:
            _shut(sock)
        return len(waiting)

    def reap(self, sleep, stopping=lambda: False) -> None:
        """Loop: `expire()` a few times per header timeout, sleeping with `sleep` (green under eventlet)."""
        interval = min(1.0, self.header_timeout / 4)
        while not stopping():
            sleep(interval)
            try:
                self.expire()
            except Exception:  # never let a surprise end the loop that keeps the doors open
                log.exception("expiring HTTP connections failed")

    def _count(self, reason: str) -> None:
        self.closed.labels(reason).inc()
        self._warn.warning(
            reason,
            "http connection %s open=%d limit=%d header_timeout=%gs",
            reason,
            len(self),
            self.limit,
            self.header_timeout,
        )


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its peer or its thread


def eventlet_options(doors: Doors) -> dict:
    """`eventlet.wsgi.server` options that pass every connection through `doors`.

    Eventlet's accept loop blocks while its pool is full, so the place is made before the pool is asked: the
    pool's `spawn` counts the connection, closing the longest-waiting one if needed (its green thread then ends
    and frees its slot), and the protocol reports when headers are in and when the next request is awaited.
    """
    import eventlet
    import eventlet.wsgi

    class Protocol(eventlet.wsgi.HttpProtocol):
        def handle_one_request(self):
            doors.waiting(self.request)
            self.served = False
            super().handle_one_request()
            if self.close_connection and getattr(self, "raw_requestline", b"") and not self.served:
                doors.malformed(self.request)  # eventlet refused the request line or headers itself

        def handle_one_response(self):
            self.served = True
            if doors.busy(self.request):
                return super().handle_one_response()
            self.close_connection = 1  # closed while its headers came in: not served

    class Pool(eventlet.GreenPool):
        def spawn(self, function, conn):
            if not doors.opened(conn[1]):
                doors.refuse(conn[1])
                return _Ended()
            return super().spawn(_served, function, conn)

    def _served(function, conn):
        try:
            function(conn)
        finally:
            doors.closing(conn[1])

    return {"custom_pool": Pool(doors.limit), "protocol": Protocol}


def werkzeug_options(doors: Doors) -> dict:
    """Options for werkzeug's threaded server (ASYNC_MODE=threading): the same accounting, one thread each."""
    from werkzeug.serving import WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        def handle(self):
            if not doors.opened(self.connection):
                doors.refuse(self.connection)
                return
            try:
                super().handle()
            finally:
                doors.closing(self.connection)

        def handle_one_request(self):
            doors.waiting(self.connection)
            self.served = False
            super().handle_one_request()
            if self.close_connection and getattr(self, "raw_requestline", b"") and not self.served:
                doors.malformed(self.connection)  # http.server refused the request line or headers itself

        def run_wsgi(self):
            self.served = True
            if doors.busy(self.connection):
                super().run_wsgi()
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    self.close_connection = True  # the WebSocket is over; its bytes are no next request
                return
            self.close_connection = True  # closed while its headers came in: not served

    return {"request_handler": Handler}


class _Ended:
    """What eventlet's accept loop links its clean-up to, for a connection refused without a green thread."""

    def link(self, function, *args) -> None:
        function(self, *args)
