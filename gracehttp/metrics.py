"""Prometheus metrics: the fixed names, bounded labels, one registry per server
(docs/architecture.rst, "Admin listener and metrics").

Middle layer: imports `state`, `inflight`, `flushbell` and `workermetrics`.

The request path only adds to its own thread's running totals (`_Tally`: no
lock, about a microsecond); a flusher thread adds what grew into the
prometheus-client metrics every `FLUSH_INTERVAL`, and a scrape flushes first,
so a scrape is always exact. prometheus-client itself (35 ms to import) is
imported by that thread, not on the way to serving the first request. The
gauges that describe the present (in flight, open connections, ready) are read
when scraped.

With workers, prometheus-client's multiprocess mode aggregates the files of all
workers: the flusher is what writes them (so the request path never touches
the memory-mapped files), and it also writes this worker's present gauges,
summed over the live workers.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

from gracehttp.flushbell import Doorbell, doorbell_pids, remove_doorbell, ring
from gracehttp.inflight import InFlight
from gracehttp.state import Lifecycle
from gracehttp.workermetrics import UPGRADES_HELP, ProcessGauges, WorkerFiles, multiprocess_dir

#: Methods counted under their own name; anything else is "other", so a client
#: sending random methods cannot create unbounded label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
#: Request duration buckets, in seconds: sub-millisecond to the default read timeout.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Seconds between flushes. A flush costs the same however many requests came (it
#: reads each thread's totals, not each request), so this only bounds how stale
#: another worker's numbers may be in a scrape (one's own are flushed first).
FLUSH_INTERVAL = 0.1


def can_observe_many(histogram: Any) -> bool:
    """Whether `observe_many` can add to this prometheus-client histogram in bulk: it has
    a value per bucket and a sum, and a probe histogram shows them kept as `observe_many`
    assumes (a count per bucket, not running totals; nothing else counted)."""
    buckets = getattr(histogram, "_buckets", None)
    if not (isinstance(buckets, list) and len(buckets) == len(BUCKETS) + 1 and hasattr(histogram, "_sum")):
        return False
    try:
        from prometheus_client import CollectorRegistry, Histogram

        probe = Histogram("probe", "probe", buckets=BUCKETS, registry=CollectorRegistry())
        probe.observe(0.0007)
        observe_many(probe, [0, 0, 1, *[0] * (len(BUCKETS) - 2)], 0.002)
        got = [b.get() for b in probe._buckets]
        plain = {s.name: s.value for m in probe.collect() for s in m.samples if "le" not in s.labels}
    except Exception:  # a layout other than the one assumed: observe each request instead
        return False
    return got == [0, 1, 1, *[0] * (len(BUCKETS) - 2)] and plain.get("probe_count") == 2.0 and \
        abs(plain.get("probe_sum", 0) - 0.0027) < 1e-9


class _Tally:
    """One thread's running totals of the requests it answered.

    Only that thread writes them, so counting a request takes no lock and queues
    nothing for the flusher to work through (a flush that went through a queue
    held the GIL long enough to show in a lone client's p99). The flusher copies
    them (each copy made in C, so it never sees a dict mid-change) and adds what
    grew since its last look; a request counted between two of its copies shows in
    the next flush.
    """

    __slots__ = ("buckets", "counts", "seconds", "seen", "sent")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.seconds = 0.0
        self.sent = 0
        self.seen: tuple[dict[tuple[str, int], int], list[int], float, int] = ({}, list(self.buckets), 0.0, 0)

    def take(self) -> tuple[dict[tuple[str, int], int], list[int], float, int]:
        """What grew since the last call: counts by (method, status), by bucket, the
        seconds and the body bytes."""
        now = (dict(self.counts), list(self.buckets), self.seconds, self.sent)
        counts, buckets, seconds, sent = self.seen
        self.seen = now
        return ({key: n - counts.get(key, 0) for key, n in now[0].items() if n != counts.get(key, 0)},
                [a - b for a, b in zip(now[1], buckets, strict=True)], now[2] - seconds, now[3] - sent)


def observe_many(histogram: Any, per_bucket: list[int], total: float) -> None:
    """Add many observations to a prometheus-client `histogram` at once: `per_bucket`
    counts them by bucket (`BUCKETS`, then +Inf), `total` is their sum.

    prometheus-client has no call for this, so its histogram's own values (one per
    bucket, kept non-cumulative, and the sum) are added to; `can_observe_many` says
    whether the installed version keeps them so (else the flusher observes each
    request at its bucket's bound: exact counts, an approximate sum).
    """
    for value, n in zip(histogram._buckets, per_bucket, strict=True):
        if n:
            value.inc(n)
    histogram._sum.inc(total)


#: (busy request threads, all request threads, complete requests waiting for a thread).
PoolState = Callable[[], tuple[int, int, int]]


class Metrics:
    def __init__(self, lifecycle: Lifecycle, inflight: InFlight, open_connections: Callable[[], int],
                 pool: PoolState = lambda: (0, 0, 0), upgrades: int = 0) -> None:
        self.multiprocess = multiprocess_dir() is not None
        #: Each request thread's running totals (`_Tally`), made at its first request.
        self._local = threading.local()
        self._tallies: list[_Tally] = []
        self._tallies_lock = threading.Lock()
        self._bad: collections.deque[str] = collections.deque()
        #: One entry per request found past request_timeout; per upgrade that failed.
        self._over: collections.deque[None] = collections.deque()
        self._upgrade_results: collections.deque[str] = collections.deque()
        #: Upgrades this process is the result of (each generation passes the count on).
        self._upgrades = upgrades
        self._drain_seconds: float | None = None
        self._live = _LiveGauges(lifecycle, inflight, open_connections, pool)
        self._ready = threading.Event()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._children: dict[tuple[str, int], Any] = {}
        self._process: ProcessGauges | None = None
        self._bell: Doorbell | None = None
        directory = multiprocess_dir()
        if directory is not None:
            # Without one (a second server in this process has it), scrapes elsewhere see
            # this one's numbers as of its last periodic flush.
            with contextlib.suppress(OSError):
                self._bell = Doorbell(directory)
        self.registry: Any = None
        self._bulk = False  # set with the histogram (`can_observe_many`)
        threading.Thread(target=self._run, name="gracehttp-metrics", daemon=True).start()

    # -- the request path ------------------------------------------------------

    def observe(self, method: str, status: int, seconds: float, body_bytes: int = 0) -> None:
        """Count one answered request, in this thread's own running totals."""
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._local.tally = _Tally()
            with self._tallies_lock:
                self._tallies.append(tally)
        key = (method if method in KNOWN_METHODS else "other", status)  # bounded: no label per made-up method
        counts = tally.counts
        counts[key] = counts.get(key, 0) + 1
        tally.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1  # the first bound >= seconds
        tally.seconds += seconds
        tally.sent += body_bytes

    def over_timeout(self) -> None:
        """A request was found running past request_timeout."""
        self._over.append(None)

    def upgrade_failed(self) -> None:
        self._upgrade_results.append("failed")

    def bad_request(self, reason: str) -> None:
        self._bad.append(reason)

    def drained(self, seconds: float) -> None:
        self._drain_seconds = seconds
        if self._ready.is_set():
            self.flush()

    # -- the flusher -------------------------------------------------------------

    def _run(self) -> None:
        bell = self._bell
        try:
            self._build()
            self._ready.set()
            while True:
                # With workers, another worker's scrape rings to have this one flush now.
                if bell is not None:
                    callers = bell.wait(FLUSH_INTERVAL)
                else:
                    callers = []
                    self._stop.wait(FLUSH_INTERVAL)
                stopping = self._stop.is_set()
                if not stopping or callers:
                    self.flush(process=bool(callers))
                if bell is not None and callers:
                    bell.answer(callers)
                if stopping:
                    return
        finally:
            if bell is not None:
                bell.close()

    def close(self) -> None:
        self._stop.set()
        if self._bell is not None:
            # Its file at once (the flusher closes the socket): a process that exits before
            # the flusher wakes leaves no doorbell behind.
            remove_doorbell(self._bell.directory, self._bell.pid)
        if self._ready.is_set():
            self.flush()

    def _build(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client import values as pc_values

        if self.multiprocess and pc_values.ValueClass.__name__ != "MmapedValue":
            # prometheus-client chose its value class when first imported, maybe before the
            # supervisor set PROMETHEUS_MULTIPROC_DIR: choose again for the metrics made here.
            pc_values.ValueClass = pc_values.MultiProcessValue()  # type: ignore[no-untyped-call]
        reg = CollectorRegistry(auto_describe=True)
        self.requests = Counter("gracehttp_requests", "Requests answered by the app, by method and status.",
                                ["method", "status"], registry=reg)
        self.duration = Histogram("gracehttp_request_duration_seconds",
                                  "Time from the request head to the end of the response.", buckets=BUCKETS,
                                  registry=reg)
        self._bulk = can_observe_many(self.duration)
        self.bad_requests = Counter("gracehttp_bad_requests", "Requests refused before the app, by reason.",
                                    ["reason"], registry=reg)
        self.response_bytes = Counter("gracehttp_response_bytes", "Response body bytes of the requests answered "
                                      "by the app.", registry=reg)
        self.over_timeout_total = Counter("gracehttp_requests_over_timeout", "Requests found running past "
                                          "request_timeout (each counted once).", registry=reg)
        if not self.multiprocess:  # with workers, the supervisor upgrades and counts (`WorkerEvents`)
            self.upgrades = Counter("gracehttp_upgrades", UPGRADES_HELP, ["result"], registry=reg)
            self.upgrades.labels("succeeded").inc(self._upgrades)
            self.upgrades.labels("failed")
        self.drain_duration = Gauge("gracehttp_drain_duration_seconds",
                                    "How long the last drain took (0 until one happened).", registry=reg,
                                    multiprocess_mode="max")
        if self.multiprocess:
            self._live.register_multiprocess(reg)
            self._process = ProcessGauges(reg)
        else:
            reg.register(self._live)
            from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)
        self.registry = reg

    def flush(self, process: bool = False) -> None:
        """Move what the request path queued into the prometheus-client metrics; with
        `process`, also this worker's process metrics (with workers, before a scrape)."""
        with self._flush_lock:
            counts: collections.Counter[tuple[str, int]] = collections.Counter()
            per_bucket = [0] * (len(BUCKETS) + 1)
            seconds = 0.0
            sent = 0
            with self._tallies_lock:
                tallies = tuple(self._tallies)
            for tally in tallies:
                grew = tally.take()
                counts.update(grew[0])
                per_bucket = [a + b for a, b in zip(per_bucket, grew[1], strict=True)]
                seconds += grew[2]
                sent += grew[3]
            if any(per_bucket):
                if self._bulk:
                    observe_many(self.duration, per_bucket, seconds)
                else:  # each at its bucket's bound: the counts are exact, the sum is not
                    for bound, n in zip((*BUCKETS, 2 * BUCKETS[-1]), per_bucket, strict=True):
                        for _ in range(n):
                            self.duration.observe(bound)
            if sent:
                self.response_bytes.inc(sent)
            while self._over:
                self._over.popleft()
                self.over_timeout_total.inc()
            while self._upgrade_results:
                self.upgrades.labels(self._upgrade_results.popleft()).inc()
            for key, n in counts.items():
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = self.requests.labels(key[0], str(key[1]))
                child.inc(n)
            while True:
                try:
                    reason = self._bad.popleft()
                except IndexError:
                    break
                self.bad_requests.labels(reason).inc()
            if self._drain_seconds is not None:
                self.drain_duration.set(self._drain_seconds)
            self._live.publish()
            if process and self._process is not None:
                self._process.publish()

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition for a scrape (flushed first): OpenMetrics when the scraper asks."""
        self._ready.wait(30)
        self.flush(process=True)
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        if not self.multiprocess:
            return encoder(self.registry), content_type
        from prometheus_client import CollectorRegistry

        directory = multiprocess_dir() or ""
        ring(directory, doorbell_pids(directory))  # every other worker flushes first

        for attempt in range(3):
            registry = CollectorRegistry()
            registry.register(WorkerFiles(directory))
            try:
                return encoder(registry), content_type
            except (OSError, ValueError, struct.error):
                # A worker's file was marked dead while it was being read (prometheus-client
                # reads the directory without a lock): read it again.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


class _LiveGauges:
    """The present: in flight, open connections, readiness, the request pool; read at
    scrape time (a collector)."""

    #: (name, help, how workers' values combine): the order of `values`.
    GAUGES: tuple[tuple[str, str, Any], ...] = (
        ("gracehttp_requests_in_flight", "Requests being handled now.", "livesum"),
        ("gracehttp_connections_open", "Open client connections.", "livesum"),
        ("gracehttp_ready", "1 when the readiness endpoint answers 200.", "livemin"),
        ("gracehttp_request_threads_busy", "Request threads serving a connection now.", "livesum"),
        ("gracehttp_request_threads", "Request threads (the pool's size).", "livesum"),
        ("gracehttp_requests_queued", "Complete requests waiting for a free request thread.", "livesum"),
    )

    def __init__(self, lifecycle: Lifecycle, inflight: InFlight, open_connections: Callable[[], int],
                 pool: PoolState) -> None:
        self.lifecycle = lifecycle
        self.inflight = inflight
        self.open_connections = open_connections
        self.pool = pool
        self._gauges: tuple[Any, ...] | None = None

    def values(self) -> tuple[float, ...]:
        busy, total, queued = self.pool()
        return (float(self.inflight.requests), float(self.open_connections()),
                1.0 if self.lifecycle.is_ready else 0.0, float(busy), float(total), float(queued))

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        for (name, doc, _), value in zip(self.GAUGES, self.values(), strict=True):
            yield GaugeMetricFamily(name, doc, value=value)

    def register_multiprocess(self, registry: Any) -> None:
        from prometheus_client import Gauge

        self._gauges = tuple(Gauge(name, doc, registry=registry, multiprocess_mode=mode)
                             for name, doc, mode in self.GAUGES)

    def publish(self) -> None:
        """Multiprocess mode: write this process's present values for every worker's scrape."""
        if self._gauges is not None:
            for gauge, value in zip(self._gauges, self.values(), strict=True):
                gauge.set(value)
