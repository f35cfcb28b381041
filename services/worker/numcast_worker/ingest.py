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
    """Treats what arrives from Redis and from the TCP mirror exactly alike."""

    def __init__(self, sequences, sink, fanout, stats, latency, history_size: int) -> None:
        self.sequences, self.sink, self.fanout, self.stats = sequences, sink, fanout, stats
        self.latency = latency
        self.history: deque[dict] = deque(maxlen=history_size)
        self.last_value_at = 0.0
        self._lock = threading.Lock()  # both paths may call at once in threading mode
        self._warn = Throttled(log)

    def accept(self, raw: bytes, path: str) -> bool:
        """Take one message from `path`; False if it was invalid (duplicates are valid)."""
        stats = self.stats
        stats.received[path] += 1
        try:
            envelope = decode(raw)
        except EnvelopeError as exc:
            stats.rejected[path, exc.reason] += 1
            self._warn.warning(
                f"{path}:{exc.reason}",
                "message rejected path=%s reason=%s detail=%s sample=%r",
                path,
                exc.reason,
                exc,
                bytes(raw[:80]) if isinstance(raw, bytes | bytearray) else raw[:80],
            )
            return False
        now = time.time()
        with self._lock:
            if not self.sequences.observe(envelope.source, envelope.seq, time.monotonic()):
                stats.duplicates += 1
                return True
            stats.accepted[path] += 1
            item = {"seq": envelope.seq, "value": envelope.value, "ts": envelope.ts, "source": envelope.source}
            # The message as it came is a valid envelope; only one spread over lines needs re-encoding.
            self.sink.write(raw if b"\n" not in raw else envelope.to_json())
            self.history.append(item)
            self.fanout.push(item)
            self.last_value_at = now
        self.latency.observe(max(0.0, now - envelope.ts))
        return True

    def recent(self, limit: int) -> list[dict]:
        """The last `limit` accepted envelopes, oldest first."""
        items = list(self.history)
        return items[-limit:] if limit < len(items) else items
