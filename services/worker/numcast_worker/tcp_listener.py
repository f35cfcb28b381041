"""The worker's end of the TCP mirror: newline-delimited envelopes, each line handled like a Redis message.

Only the holders of the mirror key count: each connection is greeted with a challenge, and every line must carry
its MAC (numcast.mirror_key). The first line without a valid one is refused, counted (`bad_mac`), logged, and
the connection closed.

The door is kept from being held shut: a connection that sends no complete line (an envelope, or the signed empty
line the control-plane sends as a heartbeat when it has nothing to send) for `idle` seconds is closed, and when
all `max_clients` slots are taken a new connection takes the slot of the oldest one that has not yet sent a line
with a valid MAC. Only when every slot holds an authenticated connection is the new one refused.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from numcast.envelope import MAX_BYTES
from numcast.mirror_key import MAC_HEX, NONCE_BYTES, MirrorKeys, greeting

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
MAX_LINE = MAC_HEX + 1 + MAX_BYTES  # a MAC, a space and an envelope


class _Connection:
    __slots__ = ("authenticated", "closed_by", "counter", "key", "name", "nonce", "opened")

    def __init__(self, name: str) -> None:
        self.name = name
        self.opened = time.monotonic()
        self.nonce = os.urandom(NONCE_BYTES)  # the challenge: a line signed for another connection fails here
        self.counter = 0  # lines received: the next one's MAC is bound to it, so none can be replayed or moved
        self.key = 0  # the key that verified its last line, tried first
        self.authenticated = False  # has sent a line with a valid MAC: it holds the key
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
        keys: MirrorKeys | None,
        idle: float = 5.0,
    ):
        """`keys` None: the mirror is off (no MIRROR_KEY_FILE); `bind` and `run` do nothing."""
        self.host, self.port, self.max_clients, self.idle = host, port, max_clients, idle
        self.accept_batch, self.stats, self.keys = accept_batch, stats, keys
        self.connections: dict[socket.socket, _Connection] = {}
        self.stopping = threading.Event()
        self._server: socket.socket | None = None
        self._lock = threading.Lock()  # the accept loop and every handler change `connections`

    def bind(self) -> None:
        """Open the listening socket (before serving, so a taken port fails at start-up)."""
        if self.keys is None:
            log.warning(
                "tcp mirror off: MIRROR_KEY_FILE is not set, so TCP_PORT %d does not listen; values come by Redis "
                "only (see docs/security.md)",
                self.port,
            )
            return
        self._server = socket.create_server((self.host, self.port), backlog=self.max_clients)

    def run(self, spawn: Callable) -> None:
        """Accept connections until stopped, handling each with `spawn(handler, conn, state)`."""
        if self._server is None:
            return
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
        """True if there is a slot for a new connection, evicting the oldest unauthenticated one if need be."""
        with self._lock:
            if len(self.connections) < self.max_clients:
                return True
            unproven = [(s.opened, id(c), c) for c, s in self.connections.items() if not s.authenticated]
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
            conn.settimeout(self.idle)
            conn.sendall(greeting(state.nonce))
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
                if lines:
                    envelopes, signed = self._verified(lines, state)
                    if envelopes and self.accept_batch(envelopes, "tcp"):
                        reason = "invalid"
                        return
                    if not signed:
                        reason = "bad_mac"
                        return
                    deadline = time.monotonic() + self.idle  # a complete signed line, even a heartbeat: alive
                if len(buffer) > MAX_LINE:
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

    def _verified(self, lines: list[bytes], state: _Connection) -> tuple[list[bytes], bool]:
        """The envelopes of the lines up to the first without a valid MAC; False if there was one."""
        envelopes = []
        for line in lines:
            given, _, payload = line.partition(b" ")
            key = -1
            if len(given) == MAC_HEX:
                key = self.keys.verify(state.nonce, state.counter, payload, given, state.key)
            if key < 0:
                return envelopes, False
            state.counter += 1
            state.key = key
            state.authenticated = True
            if payload:
                envelopes.append(payload)
        return envelopes, True

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
            "too_long": f"line longer than {MAX_LINE} bytes (a MAC and an envelope)",
            "bad_mac": "a line without a valid MAC: not signed with the mirror key, or replayed",
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
