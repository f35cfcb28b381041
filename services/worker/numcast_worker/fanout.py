"""Fan-out to browsers: one shared ring of recent envelopes, a cursor per browser, one batch per tick.

python-socketio's emit queues without limit for a client that stopped reading. Here a browser gets a new
batch only when its previous one has left the server's queue, so each costs at most two batches of memory;
a browser that falls more than the ring's length behind loses the oldest values, counted and told.
"""

from __future__ import annotations

import itertools
import logging
import threading

log = logging.getLogger(__name__)


class Fanout:
    """Pushes envelopes as `numbers` events (a JSON array in seq order) to every connected browser."""

    def __init__(self, socketio, limit: int, interval: float, status=lambda: {}) -> None:
        self.socketio, self.interval, self.status = socketio, interval, status
        self._ring: list = []
        self._limit = limit
        self._next = 0  # index of the next envelope pushed; the ring holds [_next - len(ring), _next)
        self._cursors: dict[str, int] = {}
        self._status_due: dict[str, bool] = {}
        self._missed: dict[str, int] = {}  # values dropped for a browser and not yet told to it
        self.dropped = 0
        self.stopping = threading.Event()

    @property
    def clients(self) -> int:
        """Browsers connected now."""
        return len(self._cursors)

    def push(self, envelope: dict) -> None:
        """Queue one envelope for every browser."""
        self._ring.append(envelope)
        self._next += 1
        if len(self._ring) > 2 * self._limit:  # trim in steps: amortised O(1), never above 2 x limit
            self._ring = self._ring[-self._limit :]  # a new list, so a flush in progress keeps its snapshot

    def connect(self, sid: str) -> None:
        """Start sending `sid` what arrives from now on; the page backfills the past from /api/history."""
        self._cursors[sid] = self._next
        self._status_due[sid] = True

    def disconnect(self, sid: str) -> None:
        """Forget `sid`."""
        self._cursors.pop(sid, None)
        self._status_due.pop(sid, None)
        self._missed.pop(sid, None)

    def run(self) -> None:
        """Flush every `interval` seconds, and send the status once a second, until stopped."""
        ticks_per_status = max(1, round(1.0 / self.interval))
        for tick in itertools.count():
            if self.stopping.wait(self.interval):
                return
            if tick % ticks_per_status == 0:
                for sid in self._status_due:
                    self._status_due[sid] = True
            self.flush()

    def flush(self) -> None:
        """Send each browser that is keeping up everything it has not had yet."""
        if not self._cursors:
            return
        ring, end = self._ring, self._next
        first = end - min(len(ring), self._limit)
        status = None
        for sid, cursor in list(self._cursors.items()):
            if cursor < first:  # fell more than the ring behind: what it missed is gone, count it now
                missed = first - cursor
                self.dropped += missed
                self._missed[sid] = self._missed.get(sid, 0) + missed
                cursor = first
                if sid in self._cursors:
                    self._cursors[sid] = first
            if self._backlog(sid):
                continue  # its previous batch is still on the way: send it more later, in one batch
            if sid in self._missed:
                self.socketio.emit("dropped", {"count": self._missed.pop(sid)}, to=sid)
            if cursor < end:
                start = len(ring) - (end - cursor)
                batch = sorted(ring[start : start + end - cursor], key=_seq)
                self.socketio.emit("numbers", batch, to=sid)
            if self._status_due.get(sid):
                status = status or self.status()
                self.socketio.emit("status", status, to=sid)
                self._status_due[sid] = False
            if sid in self._cursors:
                self._cursors[sid] = end

    def _backlog(self, sid: str) -> int:
        """Packets waiting in the Engine.IO queue of `sid` (0 when it cannot be told)."""
        server = self.socketio.server
        try:
            eio_sid = server.manager.eio_sid_from_sid(sid, "/")
            socket = server.eio.sockets.get(eio_sid)
            return socket.queue.qsize() if socket is not None else 0
        except (AttributeError, KeyError):
            return 0


def _seq(envelope: dict) -> int:
    return envelope["seq"]
