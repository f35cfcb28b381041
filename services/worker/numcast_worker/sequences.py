"""Sequence tracking per source: a value that arrives by both paths counts once, and lost values are gaps."""

from __future__ import annotations

from collections import OrderedDict

WINDOW = 4096  # seqs remembered per source; an older one that shows up again is treated as a duplicate
GRACE_SECONDS = 2.0  # a missing seq may still arrive by the other path within this long before it is a gap
MAX_SOURCES = 64  # a new control-plane run is a new source; the least recently heard is forgotten


class _Source:
    __slots__ = ("highest", "missing", "seen")

    def __init__(self, seq: int) -> None:
        self.highest = seq
        self.seen = {seq}
        self.missing: dict[int, float] = {}


class Sequences:
    """Decides whether an envelope is new, and counts the seqs that never came.

    Not thread-safe: its owner (Ingest) calls every method under one lock.
    """

    def __init__(self, window: int = WINDOW, grace: float = GRACE_SECONDS, max_sources: int = MAX_SOURCES):
        self.window, self.grace, self.max_sources = window, grace, max_sources
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self.gaps = 0
        self.skips = 0  # times a seq came with seqs missing before it: each is a reason to read the replay log

    def observe(self, source: str, seq: int, now: float) -> bool:
        """True if (source, seq) is new; False for a duplicate."""
        state = self._sources.get(source)
        if state is None:
            self._sources[source] = _Source(seq)
            if len(self._sources) > self.max_sources:
                _, old = self._sources.popitem(last=False)
                self.gaps += len(old.missing)
            return True
        self._sources.move_to_end(source)
        if seq > state.highest:
            skipped = seq - state.highest - 1
            if skipped:
                self.skips += 1
                remembered = min(skipped, self.window)
                self.gaps += skipped - remembered  # too many to wait for: gaps now
                for missing in range(seq - remembered, seq):
                    state.missing[missing] = now
                if len(state.missing) > self.window:
                    self._trim_missing(state)
            state.highest = seq
            state.seen.add(seq)
            if len(state.seen) > 2 * self.window:
                floor = seq - self.window
                state.seen = {s for s in state.seen if s > floor}
            return True
        if seq in state.seen or seq <= state.highest - self.window:
            return False
        state.seen.add(seq)
        state.missing.pop(seq, None)
        return True

    def expire(self, now: float) -> int:
        """Count as gaps the missing seqs older than the grace period; return how many were added."""
        before = self.gaps
        deadline = now - self.grace
        for state in self._sources.values():
            if state.missing:
                late = [seq for seq, since in state.missing.items() if since <= deadline]
                for seq in late:
                    del state.missing[seq]
                self.gaps += len(late)
        return self.gaps - before

    def resume_points(self) -> dict[str, int]:
        """{source: the seq after which everything is wanted}: before the oldest missing seq, else the highest."""
        return {
            source: min(state.missing) - 1 if state.missing else state.highest
            for source, state in self._sources.items()
        }

    def _trim_missing(self, state: _Source) -> None:
        excess = sorted(state.missing)[: len(state.missing) - self.window]
        for seq in excess:
            del state.missing[seq]
        self.gaps += len(excess)
