"""The worker's counters: plain integers on the hot path, exposed to Prometheus by a collector."""

from __future__ import annotations

from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from numcast import alerts, envelope
from numcast.metrics import PREFIX

PATHS = ("redis", "tcp", "replay")  # replay: read back from the replay log
# Every (path, reason) a rejection can carry and every reason the mirror door closes for: each is served at 0 from
# the start, so `increase()` sees the first one (a series that appears at 1 has no increase).
REJECTED = [(path, reason) for path in PATHS for reason in envelope.REASONS] + [
    ("alerts", reason) for reason in alerts.REASONS
]
TCP_CLOSED = ("idle", "evicted", "refused", "invalid", "too_long", "bad_mac")


class Stats:
    """Counts what the worker received, accepted and rejected; read by /metrics and /api/status."""

    def __init__(self) -> None:
        self.received = dict.fromkeys(PATHS, 0)
        self.accepted = dict.fromkeys(PATHS, 0)
        self.rejected: Counter[tuple[str, str]] = Counter(dict.fromkeys(REJECTED, 0))
        self.quarantined: Counter[tuple[str, str]] = Counter()  # (path, reason): valid, but held apart
        self.tcp_closed: Counter[str] = Counter(dict.fromkeys(TCP_CLOSED, 0))  # reason
        self.subscribe_refused: Counter[str] = Counter()  # reason
        self.duplicates = 0
        self.reconnects = 0
        # name -> (doc, read, labels): read when /metrics is scraped, so the parts that own a value keep it
        self.gauges: dict = {}
        self.counters: dict = {
            "duplicates": ("Envelopes seen before (the other path, or a replay).", lambda: self.duplicates, {}),
            "reconnects": ("Subscriptions re-established after a loss.", lambda: self.reconnects, {"path": "redis"}),
        }

    def to_dict(self) -> dict:
        """The counters, as /api/status shows them."""
        rejected: dict[str, int] = {}
        for (path, _reason), n in self.rejected.items():
            if n:
                rejected[path] = rejected.get(path, 0) + n
        return {
            "received": dict(self.received),
            "accepted": dict(self.accepted),
            "rejected": rejected,
            "duplicates": self.duplicates,
            "quarantined": sum(self.quarantined.values()),
            "redis_reconnects": self.reconnects,
        }

    def collect(self):
        """The Prometheus view of the counters."""
        received = CounterMetricFamily(PREFIX + "received", "Messages received, by path.", labels=["path"])
        accepted = CounterMetricFamily(PREFIX + "accepted", "Envelopes accepted (new), by path.", labels=["path"])
        for path in PATHS:
            received.add_metric([path], self.received[path])
            accepted.add_metric([path], self.accepted[path])
        rejected = CounterMetricFamily(
            PREFIX + "rejected",
            "Messages rejected as invalid, by path and reason.",
            labels=["path", "reason"],
        )
        for (path, reason), n in sorted(self.rejected.items()):
            rejected.add_metric([path, reason], n)
        quarantined = CounterMetricFamily(
            PREFIX + "quarantined",
            "Valid envelopes held apart, not shown: far_ahead = a seq jump the log did not confirm.",
            labels=["path", "reason"],
        )
        for (path, reason), n in sorted(self.quarantined.items()):
            quarantined.add_metric([path, reason], n)
        closed = CounterMetricFamily(
            PREFIX + "tcp_closed",
            "TCP mirror connections the worker closed or refused, by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(self.tcp_closed.items()):
            closed.add_metric([reason], n)
        subscribe = CounterMetricFamily(
            PREFIX + "subscribe_refused",
            "Browsers' `subscribe` events refused, by reason: invalid, too_many_series, subscriptions_full.",
            labels=["reason"],
        )
        for reason, n in sorted(self.subscribe_refused.items()):
            subscribe.add_metric([reason], n)
        yield received
        yield accepted
        yield rejected
        yield quarantined
        yield closed
        yield subscribe
        for name, (doc, read, labels) in self.counters.items():
            family = CounterMetricFamily(PREFIX + name, doc, labels=list(labels))
            family.add_metric(list(labels.values()), read())
            yield family
        for name, (doc, read) in self.gauges.items():
            yield GaugeMetricFamily(PREFIX + name, doc, value=read())
