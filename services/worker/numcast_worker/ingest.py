"""The worker's single door for values: validate, deduplicate, then file, history and browsers."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from numcast.envelope import EnvelopeError, decode
from numcast.logs import Throttled
from numcast.matchers import Matcher
from numcast_worker.sequences import DUPLICATE, FULL, JUMP, NEW
from numcast_worker.series import SeriesTable

log = logging.getLogger(__name__)

# While a catch-up from the replay log runs, live values wait so that everything goes in in seq order; but
# never longer than this, nor more of them than this: then they go in at once, and the catch-up fills behind.
HOLD_SECONDS = 2.0
HOLD_MAX = 50_000
HELD_APART = {  # quarantined reasons
    "far_ahead": "seq jumps too far ahead of its source",
    "sources_full": "a new source, and every place holds a live or logged one",
    "beyond_log": "a line of the file is ahead of what the replay log holds for its source",
}


class Ingest:
    """Treats what arrives from Redis, the TCP mirror and the replay log exactly alike.

    One lock guards everything the paths share (sequences, sink, series and their history, fan-out): in threading
    mode the subscriber, every TCP connection, the catch-up and housekeeping run in threads of their own.
    """

    def __init__(
        self,
        sequences,
        sink,
        fanout,
        stats,
        latency,
        history_size: int,
        on_skip: Callable[[], object] = lambda: None,
        series: SeriesTable | None = None,
    ) -> None:
        """`on_skip()` is called (under the lock: it must only take note) when a live value skipped seqs."""
        self.sequences, self.sink, self.fanout, self.stats = sequences, sink, fanout, stats
        self.latency = latency
        if series is None:  # (not `series or`: an empty table is falsy)
            series = SeriesTable(10_000, 3600.0, history_size, max(history_size, 100_000), time.monotonic())
        self.series = series
        self.last_value_at = 0.0
        self.on_skip = on_skip
        self._lock = threading.Lock()
        self._holds = 0  # catch-ups that asked live values to wait
        self._held: list[tuple[list, str]] = []
        self._held_count = 0
        self._hold_until = 0.0
        self._warn = Throttled(log)

    def accept_batch(self, batch, path: str) -> int:
        """Take messages from `path`, oldest first; return how many were invalid."""
        clock = time.monotonic()
        with self._lock:
            self.stats.received[path] += len(batch)
            envelopes = self._valid(batch, path)
            if self._holds and path != "replay":
                if clock < self._hold_until and self._held_count + len(envelopes) <= HOLD_MAX:
                    self._held.append((envelopes, path))
                    self._held_count += len(envelopes)
                    return len(batch) - len(envelopes)
                log.warning("catch-up too long: live values go in now held=%d", self._held_count)
                self._release()
            self._take(envelopes, path)
        return len(batch) - len(envelopes)

    def _valid(self, batch, path: str) -> list:
        envelopes = []
        for raw in batch:
            try:
                envelopes.append(decode(raw))
            except EnvelopeError as exc:
                self._reject(raw, path, exc)
        return envelopes

    def _take(self, envelopes: list, path: str) -> None:
        stats, sequences, fanout, sink = self.stats, self.sequences, self.fanout, self.sink
        table = self.series
        find, add = table.find, table.add
        observe_latency = self.latency.observe
        now, clock = time.time(), time.monotonic()  # once per batch: a batch is read in well under a millisecond
        skips, jumps, full = sequences.skips, sequences.jumps, sequences.full
        trusted = path == "replay"  # the log is written by the control-plane alone: a jump there is real
        accepted = 0
        for envelope in envelopes:
            verdict = sequences.observe(envelope.source, envelope.seq, clock, trusted)
            if verdict is not NEW:
                if verdict is DUPLICATE:
                    stats.duplicates += 1
                else:
                    self._hold_apart(envelope, path, "sources_full" if verdict is FULL else "far_ahead")
                continue
            accepted += 1
            item = {"seq": envelope.seq, "value": envelope.value, "ts": envelope.ts, "source": envelope.source}
            if envelope.series is None:
                found = table.generator
            else:  # a pushed sample: its series and labels go along, as they came
                item["series"], item["labels"] = envelope.series, envelope.labels
                found = find(envelope.series, envelope.labels, clock)
            # The canonical encoding, never the bytes as they came: every reader of the file reads the same value.
            sink.write(envelope.to_json())
            if found is not None:  # None: a new label set past MAX_SERIES, counted; filed and sent all the same
                add(found, item, clock)
            fanout.push(item)
            observe_latency(max(0.0, now - envelope.ts))
        if accepted:
            stats.accepted[path] += accepted
            self.last_value_at = now
        if (sequences.skips, sequences.jumps, sequences.full) != (skips, jumps, full) and not trusted:
            self.on_skip()  # the log may hold what was skipped, or confirm the jump or the new source

    def hold(self) -> None:
        """Keep live values back until `release()` (or HOLD_SECONDS), so a catch-up goes in first."""
        with self._lock:
            if not self._holds:
                self._hold_until = time.monotonic() + HOLD_SECONDS
            self._holds += 1

    def release(self) -> None:
        """End one `hold()`; the last one lets the held values in, in the order they came."""
        with self._lock:
            self._holds = max(0, self._holds - 1)
            if not self._holds:
                self._release()

    def _release(self) -> None:
        held, self._held, self._held_count, self._holds = self._held, [], 0, 0
        for envelopes, path in held:
            self._take(envelopes, path)

    def prime(self, lines: list[bytes], logged: dict[str, int] | None = None) -> int:
        """Remember lines already in the file (at start): into history and sequences, not the file again.

        The file is checked against the replay log, `logged` ({source: highest seq the log holds}; None: it could
        not be read). A line the log holds is trusted; one beyond it, or of a source the log does not hold, is
        taken as a live value would be: a far jump is not trusted, so a line written by an attack on an older
        version cannot silence its source after a restart.
        """
        primed = 0
        logged = logged or {}
        with self._lock:
            clock = time.monotonic()
            for raw in lines:
                try:
                    envelope = decode(raw)
                except EnvelopeError:
                    continue  # the file holds only what was accepted; a bad line is someone else's edit
                highest = logged.get(envelope.source)
                trusted = highest is not None and envelope.seq <= highest
                if highest is not None and envelope.seq > highest + self.sequences.max_skip + 1:
                    self._hold_apart(envelope, "sink", "beyond_log")
                    continue
                verdict = self.sequences.observe(envelope.source, envelope.seq, clock, trusted=trusted)
                if verdict is JUMP or verdict is FULL:
                    self._hold_apart(envelope, "sink", "far_ahead" if verdict is JUMP else "sources_full")
                    continue
                if verdict is NEW:
                    found = self.series.find(envelope.series, envelope.labels, clock)
                    if found is not None:
                        self.series.add(found, envelope.to_dict(), clock, live=False)
                    primed += 1
        return primed

    def resume_points(self) -> dict[str, int]:
        """{source: the seq after which the replay log may hold something this worker lacks}."""
        with self._lock:
            return self.sequences.resume_points()

    def expire(self) -> int:
        """Count as gaps the seqs missing past the grace period; forget the label sets silent past SERIES_TTL."""
        with self._lock:
            clock = time.monotonic()
            self.series.expire(clock)
            return self.sequences.expire(clock)

    def flush(self) -> bool:
        """Write the sink's queued lines; False while the file fails."""
        with self._lock:
            return self.sink.flush()

    def close(self) -> None:
        """Flush and close the sink."""
        with self._lock:
            self.sink.close()

    def _reject(self, raw: bytes, path: str, exc: EnvelopeError) -> None:
        self.stats.rejected[path, exc.reason] += 1
        self._warn.warning(
            f"{path}:{exc.reason}",
            "message rejected path=%s reason=%s detail=%s sample=%r",
            path,
            exc.reason,
            exc,
            bytes(raw[:80]) if isinstance(raw, bytes | bytearray) else raw[:80],
        )

    def _hold_apart(self, envelope, path: str, reason: str) -> None:
        self.stats.quarantined[path, reason] += 1
        self._warn.warning(
            f"{path}:{reason}",
            "value held apart: %s path=%s source=%s seq=%d",
            HELD_APART[reason],
            path,
            envelope.source,
            envelope.seq,
        )

    def recent(self, limit: int, names: Iterable[str] | None = None, matchers: tuple[Matcher, ...] = ()) -> list[dict]:
        """The last `limit` accepted envelopes of each label set of `names` (None: all) that `matchers` select,
        in the order they arrived."""
        with self._lock:
            table = self.series
            return table.recent(table.select(names, matchers), limit)

    def listing(self, names: Iterable[str] | None = None, matchers: tuple[Matcher, ...] = ()) -> list[dict]:
        """The series seen, as /api/series lists them."""
        with self._lock:
            table = self.series
            return table.listing(table.select(names, matchers), time.monotonic())
