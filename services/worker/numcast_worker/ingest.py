"""The worker's single door for values: validate, deduplicate, then file, history and browsers."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from numcast.envelope import EnvelopeError, decode
from numcast.logs import Throttled

log = logging.getLogger(__name__)


class Ingest:
    """Treats what arrives from Redis and from the TCP mirror exactly alike.

    One lock guards everything the paths share (sequences, sink, history, fan-out): in threading mode the
    subscriber, every TCP connection and housekeeping run in threads of their own.
    """

    def __init__(self, sequences, sink, fanout, stats, latency, history_size: int) -> None:
        self.sequences, self.sink, self.fanout, self.stats = sequences, sink, fanout, stats
        self.latency = latency
        self.history: deque[dict] = deque(maxlen=history_size)
        self.last_value_at = 0.0
        self._lock = threading.Lock()
        self._warn = Throttled(log)

    def accept_batch(self, batch, path: str) -> int:
        """Take messages from `path`, oldest first; return how many were invalid."""
        stats, sequences, history, fanout = self.stats, self.sequences, self.history, self.fanout
        observe_latency = self.latency.observe
        invalid = accepted = 0
        now, clock = time.time(), time.monotonic()  # once per batch: a batch is read in well under a millisecond
        with self._lock:
            stats.received[path] += len(batch)
            for raw in batch:
                try:
                    envelope = decode(raw)
                except EnvelopeError as exc:
                    invalid += 1
                    self._reject(raw, path, exc)
                    continue
                if not sequences.observe(envelope.source, envelope.seq, clock):
                    stats.duplicates += 1
                    continue
                accepted += 1
                item = {"seq": envelope.seq, "value": envelope.value, "ts": envelope.ts, "source": envelope.source}
                # The message as it came is a valid envelope; only one spread over lines needs re-encoding.
                self.sink.write(raw if b"\n" not in raw else envelope.to_json())
                history.append(item)
                fanout.push(item)
                observe_latency(max(0.0, now - envelope.ts))
            if accepted:
                stats.accepted[path] += accepted
                self.last_value_at = now
        return invalid

    def expire(self) -> int:
        """Count as gaps the seqs missing past the grace period."""
        with self._lock:
            return self.sequences.expire(time.monotonic())

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

    def recent(self, limit: int) -> list[dict]:
        """The last `limit` accepted envelopes, oldest first."""
        with self._lock:
            items = list(self.history)
        return items[-limit:] if limit < len(items) else items
