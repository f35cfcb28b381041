"""The one path every push takes, whatever its format: check the batch whole, stamp it, publish it.

The control-plane stays the one writer: a pushed sample becomes an envelope with the push stream's source and
its next seq, queued for the push channel (and its log) and for every TCP mirror, as the generator's values are.
A batch is accepted whole or refused whole: nothing is queued, stamped or remembered before every sample passed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from numcast.envelope import GENERATOR_SERIES, MAX_BYTES, valid_label_name, valid_label_value, valid_series
from numcast.push.formats import Sample
from numcast_control.series import Group, SeriesTable
from numcast_control.settings import PUSH_IN_FLIGHT

MAX_FUTURE_SECONDS = 300  # a sample stamped later than this is refused: a clock that far ahead is wrong
REASONS = (
    "missing", "wrong", "not_loopback", "cross_origin",  # who may push (numcast_control.push_api)
    "invalid", "too_large", "too_many_samples", "too_many_labels", "label_too_long", "series_limit", "rate",
    "queue_full",
)  # fmt: skip
_KNOWN_MAX = 10_000  # names checked once; a flood of made-up ones only costs the check again


class PushError(Exception):
    """A refused push: the HTTP status, a reason (the metric's label) and a message naming what is at fault."""

    def __init__(self, status: int, reason: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.retry_after = status, reason, retry_after


class Bucket:
    """A token bucket: `rate` samples per second, at most a second's worth saved up."""

    __slots__ = ("at", "rate", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.at = rate, rate, time.monotonic()

    def take(self, n: int) -> float:
        """0 when `n` samples may go now (and they are taken), else the seconds until they may."""
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if n <= self.tokens:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


class Pusher:
    """Checks, stamps and queues pushed batches; remembers each series' last value for Prometheus (`table`)."""

    def __init__(self, settings, source: str, output, mirrors: list, metrics, clock: Callable[[], float] = time.time):
        self.settings, self.source, self.output, self.mirrors = settings, source, output, mirrors
        self.clock = clock
        self.seq = 0
        self.table = SeriesTable(settings.push_max_series, settings.push_series_ttl)
        self._buckets: dict[str, Bucket] = {}  # one per token: a handful
        self._lock = threading.Lock()
        self._series_ok: set[str] = set()
        self._label_names_ok: set[str] = set()
        self._values_ok: set[str] = set()  # label values checked once (within PUSH_MAX_LABEL_VALUE: checked each time)
        self.accepted = metrics.counter("pushed", "Samples accepted by the push doors, by format.", ("format",))
        self.refused = metrics.counter(
            "push_refused", f"Pushes refused, by reason ({', '.join(REASONS)}).", ("reason",)
        )
        for reason in REASONS:
            self.refused.labels(reason)
        self.skipped = metrics.counter("push_skipped", "String fields of line protocol left out (numbers only).")
        gauge = metrics.gauge("push_series", "Distinct pushed series known now (PUSH_MAX_SERIES at most).")
        gauge.set_function(lambda: len(self.table))

    def push(self, samples: list[Sample], who: str, fmt: str, group: Group | None = None, replace: str = "") -> int:
        """Publish `samples` as one batch for the token `who`; raise PushError and change nothing if any is wrong.

        `group` (the Pushgateway door): its labels go on every sample; `replace` is `group` (PUT: the group's
        series become exactly these) or `names` (POST: its series of the pushed names are replaced).
        """
        s = self.settings
        if len(samples) > s.push_max_samples:
            raise PushError(413, "too_many_samples", f"{len(samples)} samples, at most {s.push_max_samples} a push")
        bucket = self._buckets.setdefault(who, Bucket(s.push_rate))
        with self._lock:
            wait = bucket.take(len(samples))
            if wait:
                raise PushError(
                    429, "rate", f"over PUSH_RATE ({s.push_rate:g} samples/s for this token)", math.ceil(wait)
                )
            room = self.output.outbox.room() - self._in_flight()
            if len(samples) > room:  # before any work: a client that retries a full queue costs nothing more
                raise PushError(
                    503, "queue_full", f"{len(samples)} samples do not fit in the queue to Redis (room for {room})", 1
                )
            now = self.clock()
            lines, seen = self._encode(samples, group, now, check_twice=group is not None)
            self.table.apply(seen, group, replace, now)  # raises PushError(series_limit) before any change
            self.seq += len(lines)
            self.output.put_many(lines)
            for mirror in self.mirrors:
                mirror.put_many(lines)
        self.accepted.labels(fmt).inc(len(lines))
        return len(lines)

    def delete(self, group: Group) -> bool:
        """Forget a group and its series (Pushgateway's DELETE); nothing is published. False if it was unknown."""
        with self._lock:
            return self.table.delete(group)

    def render(self) -> str:
        """Every pushed series in the text exposition format (numcast_control.series)."""
        with self._lock:
            return self.table.render(self.clock())

    def failed(self, group: Group | None) -> None:
        """Note a refused push to `group`, as Pushgateway's push_failure_time_seconds does."""
        if group is not None:
            with self._lock:
                self.table.failed(group, self.clock())

    @staticmethod
    def _in_flight() -> int:
        """A batch the output took may come back (requeued) after a failed send: room is kept for it."""
        return PUSH_IN_FLIGHT

    def _encode(
        self, samples: list[Sample], group: Group | None, now: float, check_twice: bool
    ) -> tuple[list[str], dict]:
        """The envelope lines of a batch and {series key: (sample, ts, fragment)}; PushError for the first bad one."""
        s = self.settings
        max_labels, max_value, latest = s.push_max_labels, s.push_max_label_value, now + MAX_FUTURE_SECONDS
        head = '{"seq":%d,"value":%r,"ts":%r,"source":"' + self.source + '",%s}'
        known = self.table.fragments
        seen: dict = {}
        lines = []
        seq = self.seq
        for sample in samples:
            series, labels = sample.series, sample.labels
            if series not in self._series_ok:
                self._check_series(series, sample.named)
            if type(labels) is not dict:
                raise PushError(400, "invalid", f"{sample.named}: labels must be an object of names to strings")
            if group is not None:
                labels = group.merge(labels, sample.named)
            if "" in labels.values():  # to Prometheus an empty label is no label: leave it out
                labels = {name: value for name, value in labels.items() if value != ""}
            if len(labels) > max_labels:
                raise PushError(400, "too_many_labels", f"{sample.named}: {len(labels)} labels, at most {max_labels}")
            for name, text in labels.items():
                if name not in self._label_names_ok:
                    self._check_label_name(name, sample.named)
                if type(text) is not str or len(text) > max_value:
                    raise PushError(
                        400,
                        "label_too_long" if type(text) is str else "invalid",
                        f"{sample.named}: label {name} must be a string of at most {max_value} characters",
                    )
                if text not in self._values_ok and not self._check_value(text):
                    raise PushError(400, "invalid", f"{sample.named}: label {name} holds control characters")
            value, ts = sample.value, sample.ts
            try:
                value = float(value)
                ts = now if ts is None else float(ts)
            except (OverflowError, TypeError, ValueError):
                raise PushError(400, "invalid", f"{sample.named}: value and ts must be finite numbers") from None
            if not math.isfinite(value) or not 0 < ts <= latest:
                raise PushError(
                    400,
                    "invalid",
                    f"{sample.named}: value must be finite and ts Unix seconds, > 0 and at most "
                    f"{MAX_FUTURE_SECONDS} s ahead of this server's clock",
                )
            key = (series, tuple(sorted(labels.items())))
            if check_twice and key in seen:
                raise PushError(400, "invalid", f"{sample.named}: the same series twice in one push")
            fragment = known.get(key) or self.table.fragment(key)
            seq += 1
            line = head % (seq, value, ts, fragment)
            if len(line) > MAX_BYTES // 4 and len(line.encode()) > MAX_BYTES:
                raise PushError(
                    400,
                    "too_large",
                    f"{sample.named}: as an envelope it takes {len(line.encode())} bytes, at most {MAX_BYTES}: "
                    "fewer or shorter labels",
                )
            lines.append(line)
            seen[key] = (sample, value, ts, fragment)
        return lines, seen

    def _check_series(self, series: object, where: str) -> None:
        if not valid_series(series):
            raise PushError(400, "invalid", f"{where}: {str(series)[:80]!r} is not a Prometheus metric name")
        if series == GENERATOR_SERIES:
            raise PushError(400, "invalid", f"{where}: {GENERATOR_SERIES} is the generator's series")
        if len(self._series_ok) >= _KNOWN_MAX:
            self._series_ok.clear()
        self._series_ok.add(series)

    def _check_value(self, text: str) -> bool:
        if not valid_label_value(text):
            return False
        if len(self._values_ok) >= _KNOWN_MAX:
            self._values_ok.clear()
        self._values_ok.add(text)
        return True

    def _check_label_name(self, name: str, where: str) -> None:
        if not valid_label_name(name):
            raise PushError(400, "invalid", f"{where}: {name[:80]!r} is not a label name (or starts with __)")
        if len(self._label_names_ok) >= _KNOWN_MAX:
            self._label_names_ok.clear()
        self._label_names_ok.add(name)
