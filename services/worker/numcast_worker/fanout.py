"""Fan-out to browsers: one shared ring of recent envelopes, a cursor per browser, one batch per tick.

python-socketio's emit queues without limit for a client that stopped reading. Here a browser gets a new
batch only when its previous one has left the server's queue, so each costs at most two batches of memory;
a browser that falls more than the ring's length behind loses the oldest values, counted and told.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Fanout:
    """Pushes envelopes as `numbers` events (a JSON array in seq order) to every connected browser.

    Besides the stream, each browser gets the latest value of every named state (`status`, `alerts`...): on
    connect, and after `mark(event)` says it changed. A browser that is behind gets only the newest value once.
    """

    def __init__(
        self, socketio, limit: int, interval: float, states: Mapping[str, Callable[[], object]] | None = None
    ) -> None:
        self.socketio, self.interval = socketio, interval
        self.states = dict(states or {})  # event -> what it sends, read when it is sent
        self._ring: list = []
        self._limit = limit
        self._next = 0  # index of the next envelope pushed; the ring holds [_next - len(ring), _next)
        self._cursors: dict[str, int] = {}
        self._due: dict[str, set[str]] = {}  # browser -> the states it has not had since they changed
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
        self._due[sid] = set(self.states)

    def disconnect(self, sid: str) -> None:
        """Forget `sid`."""
        self._cursors.pop(sid, None)
        self._due.pop(sid, None)
        self._missed.pop(sid, None)

    def mark(self, event: str) -> None:
        """State `event` changed: every browser gets its new value with its next batch."""
        for due in list(self._due.values()):
            due.add(event)

    def run(self) -> None:
        """Flush every `interval` seconds until stopped."""
        while not self.stopping.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        """Send each browser that is keeping up everything it has not had yet."""
        if not self._cursors:
            return
        ring, end = self._ring, self._next
        first = end - min(len(ring), self._limit)
        values: dict[str, object] = {}  # each state read once per flush, whoever gets it
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
            due = self._due.get(sid)
            while due:
                event = due.pop()
                if event not in values:
                    values[event] = self.states[event]()
                self.socketio.emit(event, values[event], to=sid)
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
