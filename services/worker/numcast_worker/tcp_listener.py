"""The worker's end of the TCP mirror: newline-delimited envelopes, each line handled like a Redis message."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

from numcast.envelope import MAX_BYTES

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


class TcpListener:
    """Accepts up to `max_clients` connections; a connection that sends junk is closed, the others go on."""

    def __init__(self, host: str, port: int, max_clients: int, accept_batch: Callable[[list, str], int], stats):
        self.host, self.port, self.max_clients = host, port, max_clients
        self.accept_batch, self.stats = accept_batch, stats
        self.connections: set[socket.socket] = set()
        self.stopping = threading.Event()
        self._server: socket.socket | None = None

    def bind(self) -> None:
        """Open the listening socket (before serving, so a taken port fails at start-up)."""
        self._server = socket.create_server((self.host, self.port), backlog=self.max_clients)
        self._server.settimeout(0.5)

    def run(self, spawn: Callable) -> None:
        """Accept connections until stopped, handling each with `spawn(handler, conn, peer)`."""
        log.info("tcp mirror listening port=%d", self.port)
        while not self.stopping.is_set():
            try:
                conn, peer = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    return
                raise
            if len(self.connections) >= self.max_clients:
                self.stats.tcp_refused += 1
                log.warning("tcp connection refused peer=%s open=%d limit", _name(peer), len(self.connections))
                conn.close()
                continue
            # Keepalive: a control-plane that vanished without a FIN must not hold one of the slots for ever.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if hasattr(socket, "TCP_KEEPIDLE"):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
            self.connections.add(conn)
            spawn(self._serve, conn, peer)

    def stop(self) -> None:
        """Stop accepting and close every connection."""
        self.stopping.set()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            _shutdown(conn)

    def _serve(self, conn: socket.socket, peer) -> None:
        name = _name(peer)
        log.info("tcp connection opened peer=%s", name)
        reason = "closed by peer"
        buffer = b""
        conn.settimeout(None)
        try:
            while not self.stopping.is_set():
                data = conn.recv(READ_SIZE)
                if not data:
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                lines = [line for line in lines if line]
                if lines and self.accept_batch(lines, "tcp"):
                    reason = "invalid line"
                    return
                if len(buffer) > MAX_BYTES:
                    self.accept_batch([buffer], "tcp")  # counted as rejected (too large), like a large Redis message
                    reason = f"line longer than {MAX_BYTES} bytes"
                    return
        except OSError as exc:
            reason = f"error {exc!r}"
        finally:
            self.connections.discard(conn)
            _shutdown(conn)
            level = logging.INFO if reason == "closed by peer" or self.stopping.is_set() else logging.WARNING
            log.log(level, "tcp connection closed peer=%s reason=%s", name, reason)


def _shutdown(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone
    conn.close()


def _name(peer) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
