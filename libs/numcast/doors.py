"""The HTTP server's connections: counted, capped, and closed when they hold a place without sending a request.

A connection is *waiting* from the moment it is accepted, and again after each response (keep-alive), until the
headers of its next request have arrived; it is then *busy* until that response is sent (a WebSocket or a
long-poll stays busy for as long as it lasts). Waiting connections cost the sender nothing, so they are the ones
given up: one that waits longer than the header timeout is closed, and when every place is taken a new
connection makes room by closing the one that has waited longest. Busy ones are never closed here; when all
places are busy, a new connection is refused with 503.

A request that announces a body (`Content-Length`, or chunked) is *reading* as well from its headers until its
answer is done: one that takes longer than the body timeout is closed, whether the body trickles in or never comes.
A body the app did not read is never drained after the answer (eventlet would read it all, with no timeout, to
keep the connection alive): the connection is closed instead.

A keep-alive connection that has been answered and sends nothing more is *idle*: closed after the header timeout
like any other, but counted under its own reason and logged below WARNING, since every client that keeps its
connections (Prometheus scraping every 15 s) does it.

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
REASONS = ("header_timeout", "idle", "body_timeout", "unread_body", "evicted", "refused", "bad_request")
# Reasons that are what any client does, not what an operator must look at: logged at DEBUG, not WARNING.
QUIET = ("idle", "unread_body")
_BODY = b'{"error": "too many connections", "status": 503}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)


class Doors:
    """At most `limit` connections; one waiting for its headers longer than `header_timeout` seconds is closed."""

    def __init__(
        self, limit: int, header_timeout: float, metrics, body_timeout: float = 10.0, name: str = "http"
    ) -> None:
        """`name` prefixes the metrics: `http` for the public port, `admin_http` for the admin port."""
        self.limit = limit
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self._waiting: OrderedDict[socket.socket, float] = OrderedDict()  # oldest first
        self._busy: set[socket.socket] = set()
        self._idle: set[socket.socket] = set()  # waiting after an answer, and not a byte of the next request yet
        self._reading: OrderedDict[socket.socket, float] = OrderedDict()  # busy with a body: since when, oldest first
        self._lock = threading.Lock()  # green under eventlet, where the accept loop and the reaper both call in
        self._warn = Throttled(log)
        metrics.gauge(f"{name}_connections", "Open HTTP connections (waiting for a request, or busy).").set_function(
            lambda: len(self)
        )
        self.closed = metrics.counter(
            f"{name}_closed", "HTTP connections closed or refused by the server, by reason.", ("reason",)
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
            self._reading.pop(sock, None)
            if sock in self._busy:
                self._busy.discard(sock)
                self._waiting[sock] = time.monotonic()
                self._idle.add(sock)  # answered, kept alive: idle until the next request's first byte

    def arriving(self, sock: socket.socket) -> None:
        """The first bytes of the next request are in: no longer idle (its header timeout runs on)."""
        with self._lock:
            self._idle.discard(sock)

    def busy(self, sock: socket.socket, body: bool = False) -> bool:
        """A request's headers are in; False if the connection was closed meanwhile (do not serve it).

        With `body`, the request must be read and answered within the body timeout.
        """
        with self._lock:
            if self._waiting.pop(sock, None) is None:
                return False
            self._idle.discard(sock)
            self._busy.add(sock)
            if body:
                self._reading[sock] = time.monotonic()
            return True

    def answered(self, sock: socket.socket) -> None:
        """The answer to a request with a body is done: its body timeout stops."""
        with self._lock:
            self._reading.pop(sock, None)

    def unread(self, sock: socket.socket) -> None:
        """The app left a body unread: the connection is closed after the answer rather than drained."""
        self._count("unread_body")

    def closing(self, sock: socket.socket) -> None:
        """The connection ends, whoever closed it."""
        with self._lock:
            self._waiting.pop(sock, None)
            self._busy.discard(sock)
            self._idle.discard(sock)
            self._reading.pop(sock, None)

    def malformed(self, sock: socket.socket) -> None:
        """The server answered what came instead of a request (400, 414) and closes: counted, unless this closed it
        (too slow, or evicted: counted then, and a cut request line is no proof of anything)."""
        with self._lock:
            waiting = sock in self._waiting
        if waiting:
            self._count("bad_request")

    def expire(self) -> int:
        """Close every connection that has waited longer than the header timeout, or read a body longer than the
        body timeout; how many."""
        late = []
        with self._lock:
            now = time.monotonic()
            deadline = now - self.header_timeout
            while self._waiting:
                sock, since = next(iter(self._waiting.items()))
                if since > deadline:
                    break
                del self._waiting[sock]
                late.append((sock, "idle" if sock in self._idle else "header_timeout"))
                self._idle.discard(sock)
            deadline = now - self.body_timeout
            while self._reading:
                sock, since = next(iter(self._reading.items()))
                if since > deadline:
                    break
                del self._reading[sock]  # still busy: the app's read ends, then the connection
                late.append((sock, "body_timeout"))
        for sock, reason in late:
            self._count(reason)
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
        """Loop: `expire()` a few times per header (and body) timeout, sleeping with `sleep` (green under eventlet)."""
        interval = min(1.0, self.header_timeout / 4, self.body_timeout / 4)
        while not stopping():
            sleep(interval)
            try:
                self.expire()
            except Exception:  # never let a surprise end the loop that keeps the doors open
                log.exception("expiring HTTP connections failed")

    def _count(self, reason: str) -> None:
        self.closed.labels(reason).inc()
        if reason in QUIET:
            log.debug("http connection %s open=%d", reason, len(self))
            return
        self._warn.warning(
            reason,
            "http connection %s open=%d limit=%d header_timeout=%gs body_timeout=%gs",
            reason,
            len(self),
            self.limit,
            self.header_timeout,
            self.body_timeout,
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
            if getattr(self, "answered", False):
                _next_request(self.rfile, self.request, doors)
            self.served = False
            super().handle_one_request()
            if self.close_connection and getattr(self, "raw_requestline", b"") and not self.served:
                doors.malformed(self.request)  # eventlet refused the request line or headers itself

        def handle_one_response(self):
            self.served = self.answered = True
            body = has_body(self.headers)
            if not doors.busy(self.request, body):
                self.close_connection = 1  # closed while its headers came in: not served
                return None
            if not body:
                return super().handle_one_response()
            # Eventlet reads a body the app left unread to the end, with no timeout, before the next request:
            # a client that announces a gigabyte and sends nothing would hold the place for good. Close instead.
            self.environ["eventlet.input"].discard = self._unread
            try:
                return super().handle_one_response()
            finally:
                doors.answered(self.request)

        def _unread(self, buffer_size=None):
            self.close_connection = 1
            doors.unread(self.request)

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
            if getattr(self, "answered", False):
                _next_request(self.rfile, self.connection, doors)
            self.served = False
            super().handle_one_request()
            if self.close_connection and getattr(self, "raw_requestline", b"") and not self.served:
                doors.malformed(self.connection)  # http.server refused the request line or headers itself

        def run_wsgi(self):
            self.served = self.answered = True
            # werkzeug reads what is left of a body after the answer, 10 MB at a time, with no timeout: the body
            # deadline covers that too (the reaper ends the read).
            body = has_body(self.headers)
            if not doors.busy(self.connection, body):
                self.close_connection = True  # closed while its headers came in: not served
                return
            try:
                super().run_wsgi()
            finally:
                if body:
                    doors.answered(self.connection)
            if self.headers.get("Upgrade", "").lower() == "websocket":
                self.close_connection = True  # the WebSocket is over; its bytes are no next request

    return {"request_handler": Handler}


def has_body(headers) -> bool:
    """True if a request's headers announce a body: chunked, or a `Content-Length` above 0."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return True
    length = headers.get("Content-Length", "").strip()
    return bool(length) and length.strip("0") != ""  # the server has already refused one that is no number


def _next_request(rfile, sock: socket.socket, doors: Doors) -> None:
    """Wait for the first byte of a kept-alive connection's next request (kept in `rfile`'s buffer): from then
    on, it is no longer idle. The end of the stream returns too, and the server sees it next."""
    try:
        rfile.peek(1)
    except (OSError, ValueError):
        pass  # reset, or closed: the server's own read finds out
    doors.arriving(sock)


class _Ended:
    """What eventlet's accept loop links its clean-up to, for a connection refused without a green thread."""

    def link(self, function, *args) -> None:
        function(self, *args)
