"""A bounded queue of alert changes that keeps only the newest change per alert, for senders that retry."""

from __future__ import annotations

import threading
from collections import OrderedDict


class Backlog:
    """Changes waiting to be delivered, keyed by fingerprint; a newer change of the same alert replaces the older.

    So an outage of any length holds at most one entry per alert, and the delivery after it is the current
    state. Beyond `limit` alerts the oldest entry is dropped and counted.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.ready = threading.Event()  # set while something waits

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, item: dict) -> bool:
        """Queue `item` for `key`; False when that pushed the oldest entry out."""
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = item
            full = len(self._items) > self.limit
            if full:
                self._items.popitem(last=False)
                self.dropped += 1
        self.ready.set()
        return not full

    def peek(self, count: int) -> list[tuple[str, dict]]:
        """The oldest `count` entries, left in place until `done`."""
        with self._lock:
            return [entry for entry, _ in zip(self._items.items(), range(count), strict=False)]

    def done(self, entries: list[tuple[str, dict]]) -> None:
        """Remove delivered entries, unless a newer change of the same alert arrived meanwhile."""
        with self._lock:
            for key, item in entries:
                if self._items.get(key) is item:
                    del self._items[key]
            if not self._items:
                self.ready.clear()
