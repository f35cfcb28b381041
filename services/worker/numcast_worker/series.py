"""The series this worker has seen: for each label set its last value, its rate and its recent samples, bounded.

A series is a name and a label set; the generator's values are the series GENERATOR_SERIES without labels. At
most `limit` label sets are listed at once (the generator's always is): the samples of another new one are still
filed and sent to browsers, but it is neither listed nor kept in the history, and each such sample is counted
(`unlisted`). A label set is forgotten `ttl` seconds after its last sample. The history keeps the last
`history_size` samples of each label set and `history_total` of all together: when they pass it, every label set
is cut to an equal share, so a busy series never pushes a quiet one out of the history.

Not thread-safe: the worker's Ingest calls it under its lock.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

from numcast.envelope import GENERATOR_SERIES
from numcast.matchers import Matcher, matches

RATE_WINDOW = 10.0  # seconds: the rate is the samples of the last window or so (two buckets, weighted)
_FIRST = 0  # the order of (arrival, envelope) pairs: by arrival


class LabelSet:
    """One series and label set: its last value and time, how often it comes, and its recent samples."""

    __slots__ = ("_current", "_previous", "_start", "first", "history", "key", "labels", "name", "seen", "ts", "value")

    def __init__(self, name: str, labels: dict, key: tuple, history_size: int, clock: float) -> None:
        self.name, self.labels, self.key = name, labels, key
        self.value = self.ts = 0.0
        self.seen = self.first = self._start = clock  # monotonic: when its last sample arrived, and its first
        self._current = self._previous = 0  # samples in the current and the previous RATE_WINDOW
        self.history: deque[tuple[int, dict]] = deque(maxlen=history_size)  # (arrival, envelope)

    def count(self, clock: float) -> None:
        """One more live sample now."""
        self._roll(clock)
        self._current += 1
        self.seen = clock

    def rate(self, clock: float) -> float:
        """Samples per second lately: the last window's, blended with the current one as it fills."""
        self._roll(clock)
        elapsed = clock - self._start
        if clock - self.first < RATE_WINDOW:  # younger than a window: what it sent over what it lived
            return self._current / max(1.0, clock - self.first)
        return (self._previous * (1 - elapsed / RATE_WINDOW) + self._current) / RATE_WINDOW

    def _roll(self, clock: float) -> None:
        if clock - self._start >= RATE_WINDOW:
            windows = int((clock - self._start) // RATE_WINDOW)
            self._previous = self._current if windows == 1 else 0
            self._current = 0
            self._start += windows * RATE_WINDOW

    def to_dict(self, clock: float) -> dict:
        """As /api/series lists it."""
        return {"labels": self.labels, "value": self.value, "ts": self.ts, "rate": round(self.rate(clock), 3)}


def label_key(labels: dict) -> tuple:
    """A label set as a dict key: the same labels in any order are the same key."""
    return tuple(sorted(labels.items()))


class SeriesTable:
    """The label sets seen, by (name, label_key); see the module's docstring for the bounds."""

    def __init__(self, limit: int, ttl: float, history_size: int, history_total: int, clock: float = 0.0) -> None:
        self.limit, self.ttl = limit, ttl
        self.history_size, self.history_total = history_size, history_total
        self.generator = LabelSet(GENERATOR_SERIES, {}, (GENERATOR_SERIES, ()), history_size, clock)
        self.sets: dict[tuple, LabelSet] = {self.generator.key: self.generator}
        self.names: dict[str, dict[tuple, LabelSet]] = {GENERATOR_SERIES: {self.generator.key: self.generator}}
        self.unlisted = 0  # samples of label sets left out because `limit` were listed
        self.expired = 0  # label sets forgotten after `ttl`
        self.stored = 0  # samples in all histories
        self._arrivals = 0

    def __len__(self) -> int:
        """Label sets listed now, pushed ones only (the generator's is always there)."""
        return len(self.sets) - 1

    def find(self, series: str | None, labels: dict | None, clock: float) -> LabelSet | None:
        """The label set of a sample, created if new; None when it is new and `limit` are listed."""
        if series is None:
            return self.generator
        key = (series, label_key(labels) if labels else ())
        found = self.sets.get(key)
        if found is None:
            if len(self.sets) - 1 >= self.limit:
                self.unlisted += 1
                return None
            found = self.sets[key] = LabelSet(series, labels or {}, key, self.history_size, clock)
            self.names.setdefault(series, {})[key] = found
        return found

    def add(self, found: LabelSet, envelope: dict, clock: float, live: bool = True) -> None:
        """Record one accepted sample of `found`: last value, rate (when `live`), history."""
        found.value, found.ts = envelope["value"], envelope["ts"]
        if live:
            found.count(clock)
        else:
            found.seen = clock
        history = found.history
        if len(history) < self.history_size:
            self.stored += 1
        self._arrivals += 1
        history.append((self._arrivals, envelope))
        if self.stored > self.history_total:
            self._share()

    def _share(self) -> None:
        """Cut every history to an equal share of nine tenths of the total: amortised, it costs nearly nothing."""
        share = max(1, int(0.9 * self.history_total) // len(self.sets))
        stored = 0
        for found in self.sets.values():
            history = found.history
            while len(history) > share:
                history.popleft()
            stored += len(history)
        self.stored = stored

    def expire(self, clock: float) -> int:
        """Forget the pushed label sets silent for `ttl` seconds (0: never); return how many."""
        if not self.ttl:
            return 0
        deadline = clock - self.ttl
        stale = [found for found in self.sets.values() if found.seen < deadline and found is not self.generator]
        for found in stale:
            del self.sets[found.key]
            named = self.names[found.name]
            del named[found.key]
            if not named:
                del self.names[found.name]
            self.stored -= len(found.history)
            found.history.clear()
        self.expired += len(stale)
        return len(stale)

    def select(self, names: Iterable[str] | None = None, matchers: tuple[Matcher, ...] = ()) -> list[LabelSet]:
        """The label sets of `names` (None: every name) whose labels satisfy `matchers`."""
        if names is None:
            chosen = list(self.sets.values())
        else:
            chosen = [found for name in names for found in self.names.get(name, {}).values()]
        return [found for found in chosen if matches(matchers, found.labels)] if matchers else chosen

    def recent(self, sets: list[LabelSet], limit: int) -> list[dict]:
        """The last `limit` samples of each of `sets`, all in the order they arrived."""
        tails = [list(found.history)[-limit:] for found in sets if found.history]
        if len(tails) == 1:
            return [envelope for _, envelope in tails[0]]
        return [envelope for _, envelope in heapq.merge(*tails, key=_arrival)]

    def listing(self, sets: list[LabelSet], clock: float) -> list[dict]:
        """`sets` grouped by name, as /api/series lists them: names sorted, label sets in order of their labels."""
        by_name: dict[str, list[LabelSet]] = {}
        for found in sets:
            if found is not self.generator or found.history:  # the generator's, once it has sent something
                by_name.setdefault(found.name, []).append(found)
        return [
            {
                "name": name,
                "label_sets": [found.to_dict(clock) for found in sorted(by_name[name], key=_labels_order)],
            }
            for name in sorted(by_name)
        ]


def _arrival(pair: tuple[int, dict]) -> int:
    return pair[_FIRST]


def _labels_order(found: LabelSet) -> tuple:
    return found.key[1]
