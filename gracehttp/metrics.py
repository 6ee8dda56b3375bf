"""Prometheus metrics: the fixed names, bounded labels, one set per server
(docs/architecture.rst, "Admin listener and metrics").

Middle layer: imports `state`, `inflight`, `flushbell`, `exposition`, `procstats`,
`totals` and `workermetrics`.

The request path only adds to its own thread's running totals (`_Tally`: no
lock, about a microsecond); a flusher thread adds what grew to the process's
totals every `FLUSH_INTERVAL`, and a scrape flushes first, so a scrape is
always exact. The gauges that describe the present (in flight, open
connections, ready) are read when scraped.

A single process keeps its totals itself (`totals.Totals`) and writes the
scrape with `exposition`: it never imports prometheus-client, whose import
alone costs about 8 MiB and 35 ms. With workers, prometheus-client's
multiprocess mode aggregates the files of all workers: the flusher is what
writes them (`workermetrics.ClientMetrics`, so the request path never touches
the memory-mapped files), and it also writes this worker's present gauges,
summed over the live workers.
"""

from __future__ import annotations

import collections
import contextlib
import math
import struct
import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from gracehttp import exposition
from gracehttp.exposition import Family, FamilyLike, gauge
from gracehttp.flushbell import Doorbell, doorbell_pids, remove_doorbell, ring
from gracehttp.inflight import InFlight
from gracehttp.procstats import process_families, python_families
from gracehttp.state import Lifecycle
from gracehttp.totals import BUCKETS, Grown, Sink, Totals
from gracehttp.workermetrics import ClientMetrics, ProcessGauges, WorkerFiles, multiprocess_dir

#: Methods counted under their own name; anything else is "other", so a client
#: sending random methods cannot create unbounded label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
#: Seconds between flushes. A flush costs the same however many requests came (it
#: reads each thread's totals, not each request), so this only bounds how stale
#: another worker's numbers may be in a scrape (one's own are flushed first).
FLUSH_INTERVAL = 0.1
#: The longest a flusher waits once flushes keep finding nothing new (doubling from
#: `FLUSH_INTERVAL`); the first flush that finds something goes back to the short one.
IDLE_FLUSH_INTERVAL = 1.6
#: Most requests take less than the first bound.
_FIRST_BOUND = BUCKETS[0]


class _Tally:
    """One thread's running totals of the requests it answered.

    Only that thread writes them, so counting a request takes no lock and queues
    nothing for the flusher to work through (a flush that went through a queue
    held the GIL long enough to show in a lone client's p99). The flusher copies
    them (each copy made in C, so it never sees a dict mid-change) and adds what
    grew since its last look; a request counted between two of its copies shows in
    the next flush.
    """

    __slots__ = ("buckets", "methods", "seconds", "seen", "sent")

    def __init__(self) -> None:
        #: Counts by method label, then status: keyed by strings and ints whose hashes are
        #: kept or free, not by a (method, status) tuple made and hashed twice per request.
        self.methods: dict[str, dict[int, int]] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.seconds = 0.0
        self.sent = 0
        self.seen: tuple[dict[tuple[str, int], int], list[int], float, int] = ({}, list(self.buckets), 0.0, 0)

    def statuses(self, method: str) -> dict[int, int]:
        """The counts of `method`'s label (a made-up method counts as "other", so a client
        sending random methods adds no entry)."""
        label = method if method in KNOWN_METHODS else "other"
        per = self.methods.get(label)
        if per is None:
            per = self.methods[label] = {}
        return per

    @property
    def counts(self) -> dict[tuple[str, int], int]:
        """Counts by (method, status), each dict copied in C: the owner may be adding to them."""
        return {(label, status): n for label, per in dict(self.methods).items() for status, n in dict(per).items()}

    def grew(self) -> bool:
        """Whether a request was counted since the last `take`. Each adds to one bucket, the
        last of what it adds to, and `take` copies the buckets first: a request whose bucket
        that copy missed shows here next time, and one it saw is whole in the rest."""
        return self.buckets != self.seen[1]

    def take(self) -> tuple[dict[tuple[str, int], int], list[int], float, int]:
        """What grew since the last call: counts by (method, status), by bucket, the
        seconds and the body bytes."""
        copied = list(self.buckets)  # first: see `grew`
        now = (self.counts, copied, self.seconds, self.sent)
        counts, buckets, seconds, sent = self.seen
        self.seen = now
        return ({key: n - counts.get(key, 0) for key, n in now[0].items() if n != counts.get(key, 0)},
                [a - b for a, b in zip(now[1], buckets, strict=True)], now[2] - seconds, now[3] - sent)


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
        self._drain_added: float | None = None  # the value the sink was last given
        self._live = _LiveGauges(lifecycle, inflight, open_connections, pool)
        self._ready = threading.Event()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._process: ProcessGauges | None = None
        self._bell: Doorbell | None = None
        directory = multiprocess_dir()
        if directory is not None:
            # Without one (a second server in this process has it), scrapes elsewhere see
            # this one's numbers as of its last periodic flush.
            with contextlib.suppress(OSError):
                self._bell = Doorbell(directory)
        self._sink: Sink | None = None  # made by the flusher thread (`_build`)
        self._totals: Totals | None = None  # the sink when this is a single process
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
        per = tally.methods.get(method)
        if per is None:  # a method not seen before, or a made-up one (bounded: see `statuses`)
            per = tally.statuses(method)
        try:
            per[status] += 1
        except KeyError:
            per[status] = 1
        tally.seconds += seconds
        tally.sent += body_bytes
        # Last (see `_Tally.grew`). The first bound >= seconds: most are under the first.
        tally.buckets[0 if seconds <= _FIRST_BOUND else bisect_left(BUCKETS, seconds)] += 1

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
            interval = FLUSH_INTERVAL
            while True:
                # With workers, another worker's scrape rings to have this one flush now.
                if bell is not None:
                    callers = bell.wait(interval)
                else:
                    callers = []
                    self._stop.wait(interval)
                stopping = self._stop.is_set()
                if not stopping or callers:
                    found = self.flush(process=bool(callers))
                    # Idle, the looks thin out: each wake-up costs an idle worker CPU, and a
                    # scrape has every worker flush first whenever it last looked.
                    interval = FLUSH_INTERVAL if found else min(IDLE_FLUSH_INTERVAL, 2 * interval)
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
        if not self.multiprocess:
            self._sink = self._totals = Totals(self._upgrades)
            return
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=True)
        self._sink = ClientMetrics(registry)
        self._live.register_multiprocess(registry)
        self._process = ProcessGauges(registry)

    def flush(self, process: bool = False) -> bool:
        """Add what the request path counted to the sink; with `process`, also this
        worker's process metrics (with workers, before a scrape). Whether anything new
        was counted."""
        with self._flush_lock:
            counts: collections.Counter[tuple[str, int]] = collections.Counter()
            per_bucket = [0] * (len(BUCKETS) + 1)
            seconds = 0.0
            sent = 0
            with self._tallies_lock:
                tallies = tuple(self._tallies)
            for tally in tallies:
                if not tally.grew():
                    continue
                grew = tally.take()
                counts.update(grew[0])
                per_bucket = [a + b for a, b in zip(per_bucket, grew[1], strict=True)]
                seconds += grew[2]
                sent += grew[3]
            assert self._sink is not None, "flushed before the flusher built the sink"
            over, upgrades, bad = len(_take(self._over)), _take(self._upgrade_results), _take(self._bad)
            # An idle server's flush adds nothing: with workers, each add writes the files.
            found = bool(any(per_bucket) or over or upgrades or bad or self._drain_seconds != self._drain_added)
            if found:
                self._drain_added = self._drain_seconds
                self._sink.add(Grown(dict(counts), per_bucket, seconds, sent, over, upgrades, bad,
                                     self._drain_seconds))
            found = self._live.publish() or found
            if process and self._process is not None:
                self._process.publish()
            return found

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition for a scrape (flushed first): OpenMetrics when the scraper asks."""
        self._ready.wait(30)
        self.flush(process=True)
        encoder, content_type = exposition.choose(accept)
        if self._totals is not None:
            with self._flush_lock:  # the flusher adds to the totals under it
                families: list[FamilyLike] = [*self._totals.families(), *self._live.families()]
            return encoder([*families, *process_families(), *python_families()]), content_type
        directory = multiprocess_dir() or ""
        ring(directory, doorbell_pids(directory))  # every other worker flushes first
        for attempt in range(3):
            try:
                return encoder(list(WorkerFiles(directory).collect())), content_type
            except (OSError, ValueError, struct.error):
                # A worker's file was marked dead while it was being read (prometheus-client
                # reads the directory without a lock): read it again.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def _take(queue: collections.deque[Any]) -> list[Any]:
    """Everything in a queue that other threads append to, taken out."""
    taken = []
    while True:
        try:
            taken.append(queue.popleft())
        except IndexError:
            return taken


class _LiveGauges:
    """The present: in flight, open connections, readiness, the request pool; read at
    scrape time (a collector)."""

    #: (name, help, how workers' values combine): the order of `values`.
    GAUGES: tuple[tuple[str, str, Any], ...] = (
        ("gracehttp_requests_in_flight", "Requests being handled now.", "livesum"),
        ("gracehttp_connections_open", "Open client connections.", "livesum"),
        ("gracehttp_ready", "1 when the readiness endpoint answers 200.", "livemin"),
        ("gracehttp_request_threads_busy", "Request threads serving a connection now.", "livesum"),
        ("gracehttp_request_threads", "Request threads the pool may run (it starts a few and grows as requests "
         "wait in the app).", "livesum"),
        ("gracehttp_requests_queued", "Complete requests waiting for a free request thread.", "livesum"),
    )

    def __init__(self, lifecycle: Lifecycle, inflight: InFlight, open_connections: Callable[[], int],
                 pool: PoolState) -> None:
        self.lifecycle = lifecycle
        self.inflight = inflight
        self.open_connections = open_connections
        self.pool = pool
        self._gauges: tuple[Any, ...] | None = None
        #: The values last written (NaN at first, unequal to anything: all are written).
        self._published: tuple[float, ...] = (math.nan,) * len(self.GAUGES)

    def values(self) -> tuple[float, ...]:
        busy, total, queued = self.pool()
        return (float(self.inflight.requests), float(self.open_connections()),
                1.0 if self.lifecycle.is_ready else 0.0, float(busy), float(total), float(queued))

    def families(self) -> list[Family]:
        return [gauge(name, doc, value) for (name, doc, _), value in zip(self.GAUGES, self.values(), strict=True)]

    def register_multiprocess(self, registry: Any) -> None:
        from prometheus_client import Gauge

        self._gauges = tuple(Gauge(name, doc, registry=registry, multiprocess_mode=mode)
                             for name, doc, mode in self.GAUGES)

    def publish(self) -> bool:
        """Multiprocess mode: write this process's present values for every worker's
        scrape, those that changed (idle, none: nothing is written). Whether any did."""
        if self._gauges is None:
            return False
        values = self.values()
        if values == self._published:
            return False
        for written, value, old in zip(self._gauges, values, self._published, strict=True):
            if value != old:
                written.set(value)
        self._published = values
        return True
