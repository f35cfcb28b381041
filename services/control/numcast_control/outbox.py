"""A bounded queue between the generator and one output, so a slow output never slows the others."""

from __future__ import annotations

import threading
from collections import deque


class Outbox:
    """Holds at most `limit` items; when full, the oldest is dropped and counted."""

    def __init__(self, limit: int, on_drop=lambda n: None) -> None:
        self._items: deque = deque(maxlen=limit)
        self._ready = threading.Event()
        self._on_drop = on_drop
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item) -> None:
        """Queue `item`, dropping the oldest when full."""
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
            self._on_drop(1)
        self._items.append(item)
        self._ready.set()

    def put_many(self, items: list) -> None:
        """Queue `items` in order, dropping the oldest (counted) beyond the limit."""
        over = len(self._items) + len(items) - self._items.maxlen
        if over > 0:
            self.dropped += over
            self._on_drop(over)
        self._items.extend(items)
        self._ready.set()

    def room(self) -> int:
        """Items it takes before the oldest drop."""
        return self._items.maxlen - len(self._items)

    def take(self, most: int, timeout: float) -> list:
        """Up to `most` items, oldest first, waiting up to `timeout` seconds for the first."""
        if not self._items:
            self._ready.wait(timeout)
        self._ready.clear()
        batch = []
        while self._items and len(batch) < most:
            batch.append(self._items.popleft())
        if self._items:
            self._ready.set()
        return batch

    def wake(self) -> None:
        """End a `take` that is waiting, now (at shutdown)."""
        self._ready.set()

    def requeue(self, batch: list) -> None:
        """Put back a batch that could not be sent, ahead of newer items, within the limit."""
        room = self._items.maxlen - len(self._items)
        lost = max(0, len(batch) - room)
        if lost:
            self.dropped += lost
            self._on_drop(lost)
        self._items.extendleft(reversed(batch[lost:]))
        self._ready.set()
