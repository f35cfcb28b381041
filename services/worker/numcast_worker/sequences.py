"""Sequence tracking per source: a value that arrives by both paths counts once, and lost values are gaps.

A live value (pub/sub or the mirror) may skip at most MAX_SKIP seqs past the last settled one (nothing awaited
before it). One that jumps further is held apart
(quarantined) rather than taken as the source's new position: adopting it would make every real value after
it look old, so one spoofed message could silence a source. Such a jump is confirmed by the replay log (the
worker asks for a catch-up, and what the log holds comes in by the trusted "replay" path), or, when the log
cannot answer, by continuity: CONFIRM consecutive seqs continuing the jump while the source's own line has
advanced by nothing for STALE_SECONDS.

At most MAX_SOURCES sources are followed. A made-up source never pushes out one that is live (heard in the last
LIVE_SECONDS) or logged (read from the replay log): when every place holds one, a new source from a live path is
held apart (full), and only the replay log, which no stranger writes, may bring in a new one then. A source
pushed out is remembered (its highest seq, MAX_FORGOTTEN of them), so the jump rule still applies when it comes
back: a source once seen is never taken again at any seq.
"""

from __future__ import annotations

from collections import OrderedDict

WINDOW = 4096  # seqs remembered per source; an older one that shows up again is treated as a duplicate
GRACE_SECONDS = 2.0  # a missing seq may still arrive by the other path within this long before it is a gap
MAX_SOURCES = 64  # a new control-plane run is a new source; the least recently heard that may go is forgotten
LIVE_SECONDS = 60.0  # a source heard this recently is live: no new source pushes it out
MAX_FORGOTTEN = 4096  # sources pushed out whose highest seq is remembered, so the jump rule still holds for them
MAX_SKIP = 64  # seqs a live value may skip and still be taken at once; further is a jump, held apart
CONFIRM = 3  # consecutive seqs that confirm a jump the log could not
STALE_SECONDS = 5.0  # ...and only once the source's own line has been silent this long
MAX_CANDIDATES = 4  # jumps followed per source; the least recent is forgotten

NEW, DUPLICATE, JUMP, FULL = "new", "duplicate", "jump", "full"


class _Source:
    __slots__ = ("advanced_at", "candidates", "heard_at", "highest", "logged", "missing", "seen")

    def __init__(self, seq: int, now: float, logged: bool) -> None:
        self.highest = seq
        self.seen = {seq}
        self.missing: dict[int, float] = {}
        self.advanced_at = now  # when the line last took a new seq
        self.heard_at = now  # when anything of this source last came, taken or not
        self.logged = logged  # the replay log (or, at start, the file checked against it) holds this source
        self.candidates: OrderedDict[int, int] = OrderedDict()  # next seq a jump expects -> seqs it has shown


class Sequences:
    """Decides whether an envelope is new, a duplicate or a jump held apart, and counts the seqs that never came.

    Not thread-safe: its owner (Ingest) calls every method under one lock.
    """

    def __init__(
        self,
        window: int = WINDOW,
        grace: float = GRACE_SECONDS,
        max_sources: int = MAX_SOURCES,
        max_skip: int = MAX_SKIP,
        stale: float = STALE_SECONDS,
    ):
        self.window, self.grace, self.max_sources = window, grace, max_sources
        self.max_skip, self.stale = max_skip, stale
        self._sources: OrderedDict[str, _Source] = OrderedDict()  # least recently heard first
        self._forgotten: OrderedDict[str, int] = OrderedDict()  # source pushed out -> its highest seq
        self.gaps = 0
        self.skips = 0  # times a seq came with seqs missing before it: each is a reason to read the replay log
        self.jumps = 0  # live values held apart: too far ahead of their source (each also asks for the log)
        self.confirmed = 0  # jumps taken after all, on continuity
        self.full = 0  # values of a new source held apart: every place held a live or logged source

    @property
    def pending(self) -> int:
        """Seqs missing now and still awaited: within the grace period, neither come nor counted as gaps yet."""
        return sum(len(state.missing) for state in self._sources.values())

    def observe(self, source: str, seq: int, now: float, trusted: bool = False) -> str:
        """NEW if (source, seq) is new; DUPLICATE if seen (or too old); JUMP or FULL if held apart.

        `trusted`: from the replay log (or the worker's own file, checked against it), which no stranger writes:
        never held apart.
        """
        state = self._sources.get(source)
        if state is None:
            remembered = self._forgotten.get(source)
            if remembered is not None and seq <= remembered:
                return DUPLICATE  # an old value of a source pushed out: it was taken (or given up) then
            if not self._make_room(now, trusted):
                self.full += 1
                return FULL
            if remembered is None:
                self._sources[source] = _Source(seq, now, trusted)
                return NEW
            self._forgotten.pop(source, None)
            # Seen before: back on its old line, silent since, so the jump rule (and its confirmation) holds.
            state = self._sources[source] = _Source(remembered, now - self.stale, trusted)
        else:
            self._sources.move_to_end(source)
        state.heard_at = now
        state.logged = state.logged or trusted
        if seq > state.highest + 1 and not trusted and self._jump(state, seq) and not self._confirmed(state, seq, now):
            self.jumps += 1
            return JUMP
        if seq > state.highest:
            self._advance(state, seq, now)
            return NEW
        if seq in state.seen or seq <= state.highest - self.window:
            return DUPLICATE
        state.seen.add(seq)
        state.missing.pop(seq, None)
        state.advanced_at = now
        return NEW

    def _make_room(self, now: float, trusted: bool) -> bool:
        """True once there is a place for a new source: the least recently heard one that may go is forgotten.

        Any new source may push out one neither live nor logged; only a trusted one (from the replay log) may
        push out a live one, unlogged first. False: the new source must wait.
        """
        if len(self._sources) < self.max_sources:
            return True
        live_since = now - LIVE_SECONDS
        victim = next(
            (name for name, s in self._sources.items() if not s.logged and s.heard_at <= live_since),
            None,
        )
        if victim is None and trusted:
            victim = next((name for name, s in self._sources.items() if not s.logged), next(iter(self._sources)))
        if victim is None:
            return False
        old = self._sources.pop(victim)
        self.gaps += len(old.missing)
        self._forgotten[victim] = old.highest
        self._forgotten.move_to_end(victim)
        if len(self._forgotten) > MAX_FORGOTTEN:
            self._forgotten.popitem(last=False)
        return True

    def _jump(self, state: _Source, seq: int) -> bool:
        """True if `seq` skips more than max_skip past the source's settled position.

        Settled: before the oldest seq still awaited. So skips cannot be chained into a walk: after one, the next
        may not skip further until the seqs it left behind have come or been given up as gaps (the grace period).
        """
        settled = min(state.missing) - 1 if state.missing else state.highest
        return seq - settled - 1 > self.max_skip

    def _confirmed(self, state: _Source, seq: int, now: float) -> bool:
        """Follow the jump `seq` continues (or start one); True once it has shown CONFIRM seqs on a silent line."""
        shown = state.candidates.pop(seq, 0) + 1
        if shown >= CONFIRM and now - state.advanced_at >= self.stale:
            state.candidates.clear()
            self.confirmed += 1
            return True
        state.candidates[seq + 1] = shown
        if len(state.candidates) > MAX_CANDIDATES:
            state.candidates.popitem(last=False)
        return False

    def _advance(self, state: _Source, seq: int, now: float) -> None:
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
        state.advanced_at = now
        state.seen.add(seq)
        if len(state.seen) > 2 * self.window:
            floor = seq - self.window
            state.seen = {s for s in state.seen if s > floor}
        if state.candidates:
            # A jump the line has now reached is no longer ahead of it.
            for expected in [e for e in state.candidates if e <= seq + 1 + self.max_skip]:
                del state.candidates[expected]

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
