"""Prometheus metrics (SPEC section 6): the fixed names, bounded labels, one registry per server.

Middle layer: imports `state` and `inflight`; prometheus-client is imported only
when a server is built with ``metrics=True``.

The gauges that describe the present (in flight, open connections, ready) are
read when scraped, so the request path pays nothing for them. The request path
pays one counter child lookup, one increment and one histogram observation.
With workers, prometheus-client's multiprocess mode aggregates the files of all
workers; the present-tense gauges are then written by each worker once a second
(and by the one answering the scrape, at once) and summed over the live ones.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from gracehttp.inflight import InFlight
from gracehttp.state import Lifecycle

#: Methods counted under their own name; anything else is "other", so a client
#: sending random methods cannot create unbounded label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
#: Request duration buckets, in seconds: sub-millisecond to the default read timeout.
#: With workers, how often each one writes its present gauges for the others' scrapes.
PUBLISH_INTERVAL = 1.0
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    def __init__(self, lifecycle: Lifecycle, inflight: InFlight, open_connections: Callable[[], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client import values as pc_values

        self.multiprocess = multiprocess_dir() is not None
        if self.multiprocess and pc_values.ValueClass.__name__ != "MmapedValue":
            # prometheus-client chose its value class when first imported, maybe before the
            # supervisor set PROMETHEUS_MULTIPROC_DIR: choose again for the metrics made here.
            pc_values.ValueClass = pc_values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("gracehttp_requests", "Requests answered by the app, by method and status.",
                                ["method", "status"], registry=reg)
        self.duration = Histogram("gracehttp_request_duration_seconds",
                                  "Time from the request head to the end of the response.", buckets=BUCKETS,
                                  registry=reg)
        self.bad_requests = Counter("gracehttp_bad_requests", "Requests refused before the app, by reason.",
                                    ["reason"], registry=reg)
        self.drain_duration = Gauge("gracehttp_drain_duration_seconds",
                                    "How long the last drain took (0 until one happened).", registry=reg,
                                    multiprocess_mode="max")
        self._children: dict[tuple[str, int], Any] = {}
        self._observe = self.duration.observe
        self._live = _LiveGauges(lifecycle, inflight, open_connections)
        if self.multiprocess:
            self._live.register_multiprocess(reg)
            threading.Thread(target=self._live.publish_every, args=(PUBLISH_INTERVAL,),
                             name="gracehttp-metrics", daemon=True).start()
        else:
            reg.register(self._live)
            from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)

    def observe(self, method: str, status: int, seconds: float) -> None:
        """Count one answered request: the request path's only metrics work."""
        key = (method, status)
        child = self._children.get(key)
        if child is None:
            label = method if method in KNOWN_METHODS else "other"
            child = self._children[key] = self.requests.labels(label, str(status))
        child.inc()
        self._observe(seconds)

    def bad_request(self, reason: str) -> None:
        self.bad_requests.labels(reason).inc()

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition for a scrape: OpenMetrics when the scraper asks for it."""
        from prometheus_client.exposition import choose_encoder

        registry: Any = self.registry
        if self.multiprocess:
            from prometheus_client import CollectorRegistry
            from prometheus_client.multiprocess import MultiProcessCollector

            self._live.publish()
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=multiprocess_dir())  # type: ignore[no-untyped-call]
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type


class _LiveGauges:
    """in flight, open connections and readiness, read at scrape time (a collector)."""

    def __init__(self, lifecycle: Lifecycle, inflight: InFlight, open_connections: Callable[[], int]) -> None:
        self.lifecycle = lifecycle
        self.inflight = inflight
        self.open_connections = open_connections
        self._gauges: tuple[Any, Any, Any] | None = None

    def values(self) -> tuple[float, float, float]:
        return (float(self.inflight.requests), float(self.open_connections()),
                1.0 if self.lifecycle.is_ready else 0.0)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        in_flight, conns, ready = self.values()
        yield GaugeMetricFamily("gracehttp_requests_in_flight", "Requests being handled now.", value=in_flight)
        yield GaugeMetricFamily("gracehttp_connections_open", "Open client connections.", value=conns)
        yield GaugeMetricFamily("gracehttp_ready", "1 when the readiness endpoint answers 200.", value=ready)

    def register_multiprocess(self, registry: Any) -> None:
        from prometheus_client import Gauge

        self._gauges = (
            Gauge("gracehttp_requests_in_flight", "Requests being handled now.", registry=registry,
                  multiprocess_mode="livesum"),
            Gauge("gracehttp_connections_open", "Open client connections.", registry=registry,
                  multiprocess_mode="livesum"),
            Gauge("gracehttp_ready", "1 when the readiness endpoint answers 200.", registry=registry,
                  multiprocess_mode="livemin"),
        )

    def publish_every(self, interval: float) -> None:
        while True:
            self.publish()
            time.sleep(interval)

    def publish(self) -> None:
        """Multiprocess mode: write this process's present values before the files are read."""
        if self._gauges is not None:
            for gauge, value in zip(self._gauges, self.values(), strict=True):
                gauge.set(value)
