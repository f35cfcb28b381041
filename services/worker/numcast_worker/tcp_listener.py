"""The worker's end of the TCP mirror: newline-delimited envelopes, each line handled like a Redis message.

The door is kept from being held shut: a connection that sends no complete line (an envelope, or the empty
line the control-plane sends as a heartbeat when it has nothing to send) for `idle` seconds is closed, and
when all `max_clients` slots are taken a new connection takes the slot of the oldest one that has not yet
delivered a valid envelope. Only when every slot holds a connection that has is the new one refused.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from numcast.envelope import MAX_BYTES

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


class _Connection:
    __slots__ = ("closed_by", "name", "opened", "proven")

    def __init__(self, name: str) -> None:
        self.name = name
        self.opened = time.monotonic()
        self.proven = False  # has delivered a valid envelope
        self.closed_by = ""  # set when the listener evicts it: the reason its handler reports


class TcpListener:
    """Accepts up to `max_clients` connections; one that sends junk, or nothing for `idle` seconds, is closed."""

    def __init__(
        self,
        host: str,
        port: int,
        max_clients: int,
        accept_batch: Callable[[list, str], int],
        stats,
        idle: float = 5.0,
    ):
        self.host, self.port, self.max_clients, self.idle = host, port, max_clients, idle
        self.accept_batch, self.stats = accept_batch, stats
        self.connections: dict[socket.socket, _Connection] = {}
        self.stopping = threading.Event()
        self._server: socket.socket | None = None
        self._lock = threading.Lock()  # the accept loop and every handler change `connections`

    def bind(self) -> None:
        """Open the listening socket (before serving, so a taken port fails at start-up)."""
        self._server = socket.create_server((self.host, self.port), backlog=self.max_clients)

    def run(self, spawn: Callable) -> None:
        """Accept connections until stopped, handling each with `spawn(handler, conn, state)`."""
        log.info("tcp mirror listening host=%s port=%d", self.host, self.port)
        try:
            while not self.stopping.is_set():
                try:
                    conn, peer = self._server.accept()  # stop() wakes it: a shut-down listening socket raises
                except OSError:
                    if self.stopping.is_set():
                        return
                    raise
                self._admit(conn, peer, spawn)
        finally:
            if self.stopping.is_set():
                self._server.close()

    def _admit(self, conn: socket.socket, peer, spawn: Callable) -> None:
        state = _Connection(_name(peer))
        if not self._make_room(state):
            conn.close()
            return
        # Keepalive: a control-plane that vanished without a FIN must not hold one of the slots for ever.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        with self._lock:
            self.connections[conn] = state
        spawn(self._serve, conn, state)

    def _make_room(self, state: _Connection) -> bool:
        """True if there is a slot for a new connection, evicting the oldest unproven one if need be."""
        with self._lock:
            if len(self.connections) < self.max_clients:
                return True
            unproven = [(s.opened, id(c), c) for c, s in self.connections.items() if not s.proven]
            if not unproven:
                self.stats.tcp_closed["refused"] += 1
                log.warning("tcp connection refused peer=%s open=%d limit", state.name, len(self.connections))
                return False
            victim = min(unproven)[2]
            self.connections.pop(victim).closed_by = "evicted"
            self.stats.tcp_closed["evicted"] += 1
        try:
            victim.shutdown(socket.SHUT_RDWR)  # its handler wakes up, closes it, logs the reason and returns
        except OSError:
            pass  # already gone
        return True

    def stop(self) -> None:
        """Stop accepting and close every connection."""
        self.stopping.set()
        if self._server is not None:
            # Shut down, not closed: under eventlet, closing a socket a green thread waits on never wakes it.
            # accept() raises at once, and run() closes the socket on its way out.
            try:
                self._server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # never listened, or already shut
        with self._lock:
            connections = list(self.connections)
        for conn in connections:
            _shutdown(conn)

    def _serve(self, conn: socket.socket, state: _Connection) -> None:
        log.info("tcp connection opened peer=%s", state.name)
        reason = ""
        buffer = b""
        deadline = time.monotonic() + self.idle
        try:
            while not self.stopping.is_set():
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                try:
                    data = conn.recv(READ_SIZE)
                except TimeoutError:
                    reason = "idle"
                    return
                if not data:
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                if lines:  # a complete line, even an empty heartbeat: the connection is alive
                    deadline = time.monotonic() + self.idle
                lines = [line for line in lines if line]
                if lines:
                    if self.accept_batch(lines, "tcp"):
                        # Named by the fault, whether or not the long line had its newline yet.
                        reason = "too_long" if any(len(line) > MAX_BYTES for line in lines) else "invalid"
                        return
                    state.proven = True
                if len(buffer) > MAX_BYTES:
                    self.accept_batch([buffer], "tcp")  # counted as rejected (too large), like a large Redis message
                    reason = "too_long"
                    return
        except OSError as exc:
            log.info("tcp connection error peer=%s error=%r", state.name, exc)
        finally:
            with self._lock:
                if self.connections.get(conn) is state:
                    del self.connections[conn]
            _shutdown(conn)
            self._closed(state, reason or state.closed_by)

    def _closed(self, state: _Connection, reason: str) -> None:
        if reason and reason != "evicted":  # an eviction is counted where it is decided
            with self._lock:  # handlers run in threads of their own in threading mode
                self.stats.tcp_closed[reason] += 1
        if not reason or self.stopping.is_set():
            log.info("tcp connection closed peer=%s reason=%s", state.name, reason or "closed by peer")
            return
        detail = {
            "idle": f"no complete line in {self.idle:g}s",
            "evicted": "a new connection needed its slot",
            "invalid": "invalid line",
            "too_long": f"line longer than {MAX_BYTES} bytes",
        }[reason]
        log.warning("tcp connection closed peer=%s reason=%s (%s)", state.name, reason, detail)


def _shutdown(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone
    conn.close()


def _name(peer) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
