"""Prometheus metrics: one registry per app, every name prefixed `numcast_`."""

from __future__ import annotations

import bisect
import math

from flask import Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily

PREFIX = "numcast_"
# End-to-end latency from the envelope's `ts` to its arrival: sub-millisecond on one host, seconds when stalled.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Builds metrics in a registry of their own, so that tests can run several apps in one process."""

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series double the output and no dashboard of ours reads them
        self.registry = CollectorRegistry()

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        """A counter named numcast_<name>_total."""
        return Counter(PREFIX + name, doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        """A gauge named numcast_<name>."""
        return Gauge(PREFIX + name, doc, labels, registry=self.registry)

    def histogram(self, name: str, doc: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> FastHistogram:
        """A histogram named numcast_<name>."""
        histogram = FastHistogram(PREFIX + name, doc, buckets)
        self.registry.register(histogram)
        return histogram

    def init_app(self, app: Flask) -> None:
        """Serve the registry at GET /metrics in the Prometheus text format."""

        @app.get("/metrics")
        def metrics() -> Response:
            return Response(generate_latest(self.registry), mimetype=CONTENT_TYPE_LATEST)


class FastHistogram:
    """A histogram observed once per value on the hot path: plain integers, no lock, exposed by a collector.

    prometheus_client's Histogram takes a lock twice per observe (a green lock under eventlet).
    """

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.bounds = name, doc, list(buckets)
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le: a value equal to a bound is in it
        self.sum += value

    def collect(self):
        """The Prometheus view: cumulative buckets."""
        total, buckets = 0, []
        for bound, n in zip([*self.bounds, math.inf], self.counts, strict=True):
            total += n
            buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), total))
        yield HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.sum)
