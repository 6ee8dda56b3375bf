"""Metrics across worker processes: prometheus-client's multiprocess directory, each
worker's process gauges, the merge at scrape time, and the supervisor's own counts.

Middle layer: imports `exposition`, `totals`, `inherit` and `flushbell`. The supervisor uses the
directory and `WorkerEvents` without importing prometheus-client; the rest is
imported by a worker's metrics thread or a scrape.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

from gracehttp.exposition import Family, Sample
from gracehttp.flushbell import remove_doorbell
from gracehttp.inherit import inheritance
from gracehttp.totals import BAD, BUCKETS, DRAIN, DURATION, OVER, REQUESTS, SENT, UPGRADES, Grown


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def start_multiprocess() -> str:
    """prometheus-client's multiprocess mode, for a supervisor before it forks: every
    worker writes its samples to files in this new directory, a scrape sums them."""
    path = tempfile.mkdtemp(prefix="gracehttp-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def worker_gone(path: str, pid: int) -> None:
    """A worker exited: its live gauges stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    remove_doorbell(path, pid)


def end_multiprocess(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


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


def observe_many(histogram: Any, per_bucket: list[int], total: float) -> None:
    """Add many observations to a prometheus-client `histogram` at once: `per_bucket`
    counts them by bucket (then +Inf), `total` is their sum.

    prometheus-client has no call for this, so its histogram's own values (one per
    bucket, kept non-cumulative, and the sum) are added to; `can_observe_many` says
    whether the installed version keeps them so (else each request is observed at
    its bucket's bound: exact counts, an approximate sum).
    """
    for value, n in zip(histogram._buckets, per_bucket, strict=True):
        if n:
            value.inc(n)
    histogram._sum.inc(total)


class ClientMetrics:
    """A worker's counts, as a `totals.Sink`: prometheus-client's metrics in
    multiprocess mode, which write the files every worker's scrape merges."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram
        from prometheus_client import values as pc_values

        if pc_values.ValueClass.__name__ != "MmapedValue":
            # prometheus-client chose its value class when first imported, maybe before the
            # supervisor set PROMETHEUS_MULTIPROC_DIR: choose again for the metrics made here.
            pc_values.ValueClass = pc_values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self.requests = Counter(*REQUESTS, registry=registry)
        self.duration = Histogram(*DURATION, buckets=BUCKETS, registry=registry)
        self.bulk = can_observe_many(self.duration)
        self.bad_requests = Counter(*BAD, registry=registry)
        self.response_bytes = Counter(*SENT, registry=registry)
        self.over_timeout = Counter(*OVER, registry=registry)
        self.drain_duration = Gauge(*DRAIN, registry=registry, multiprocess_mode="max")
        self._children: dict[tuple[str, int], Any] = {}

    def add(self, grown: Grown) -> None:
        if any(grown.per_bucket):
            if self.bulk:
                observe_many(self.duration, grown.per_bucket, grown.seconds)
            else:  # each at its bucket's bound: the counts are exact, the sum is not
                for bound, n in zip((*BUCKETS, 2 * BUCKETS[-1]), grown.per_bucket, strict=True):
                    for _ in range(n):
                        self.duration.observe(bound)
        if grown.sent:
            self.response_bytes.inc(grown.sent)
        if grown.over:
            self.over_timeout.inc(grown.over)
        for key, n in grown.requests.items():
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.requests.labels(key[0], str(key[1]))
            child.inc(n)
        for reason in grown.bad:
            self.bad_requests.labels(reason).inc()
        if grown.drain is not None:
            self.drain_duration.set(grown.drain)
        # Upgrades: with workers the supervisor upgrades and counts them (`WorkerEvents`).


class ProcessGauges:
    """prometheus-client's process collector, which multiprocess mode cannot aggregate,
    written into each worker's files: memory, descriptors and start time per live
    worker (a ``pid`` label), CPU seconds as a counter summed over every worker."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, ProcessCollector

        self._collector = ProcessCollector(registry=None)
        self._gauges: dict[str, Any] = {}
        self._cpu = Counter("process_cpu_seconds", "Total user and system CPU time spent in seconds.",
                            registry=registry)
        self._cpu_seen = 0.0
        for family in self._collector.collect():
            if family.type == "gauge":
                self._gauges[family.name] = Gauge(family.name, family.documentation, registry=registry,
                                                  multiprocess_mode="liveall")

    def publish(self) -> None:
        for family in self._collector.collect():
            for sample in family.samples:
                if sample.name == "process_cpu_seconds_total":
                    if sample.value > self._cpu_seen:
                        self._cpu.inc(sample.value - self._cpu_seen)
                        self._cpu_seen = sample.value
                elif sample.name in self._gauges:
                    self._gauges[sample.name].set(sample.value)


class WorkerFiles:
    """prometheus-client's multiprocess collector, minus files a starting worker has
    created but not yet sized (reading one of those raises)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = []
        for name in os.listdir(self.path):
            full = os.path.join(self.path, name)
            if name.endswith(".db") and os.path.getsize(full) >= 8:
                files.append(full)
        yield from MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        yield from WorkerEvents.families(self.path)


class WorkerEvents:
    """The supervisor's counts: workers started and exited, by reason, and its upgrades.

    The supervisor never imports prometheus-client (35 ms and megabytes in a process
    that serves nothing), so it keeps these few numbers in a JSON file in the metrics
    directory, replaced whole at each event, which a worker's scrape reads.
    """

    FILE = "supervisor.json"
    FAMILIES: ClassVar[dict[str, tuple[str, str]]] = {
        "starts": ("gracehttp_worker_starts", "Workers started, by reason: start, replace (SIGHUP, max_requests, "
                   "request_timeout), restart (after dying), added (SIGTTIN)."),
        "exits": ("gracehttp_worker_exits", "Workers exited, by reason: retired (replaced), stopped (shutdown), "
                  "died (unasked), killed (SIGKILL: past a deadline)."),
        "upgrades": UPGRADES[:2],
    }

    def __init__(self) -> None:
        self.directory: str | None = None
        upgrades = inheritance().upgrades  # the generations before this supervisor
        self.counts: dict[str, dict[str, int]] = {"upgrades": {"succeeded": upgrades, "failed": 0}}
        self._lock = threading.Lock()

    def exited(self, code: int, asked: bool, retired: bool) -> None:
        """A worker exited with `code` (negative: the signal that killed it)."""
        self.count("exits", "killed" if code == -signal.SIGKILL else "retired" if retired
                   else "stopped" if asked else "died")

    def count(self, family: str, reason: str) -> None:
        with self._lock:  # the main loop and an upgrade's thread both count
            bucket = self.counts.setdefault(family, {})
            bucket[reason] = bucket.get(reason, 0) + 1
            self._write()

    def _write(self) -> None:
        if self.directory is not None:
            tmp = os.path.join(self.directory, f".{self.FILE}.tmp")
            with contextlib.suppress(OSError):
                with open(tmp, "w") as f:
                    json.dump(self.counts, f)
                os.replace(tmp, os.path.join(self.directory, self.FILE))

    @classmethod
    def families(cls, directory: str) -> Iterator[Family]:
        try:
            with open(os.path.join(directory, cls.FILE)) as f:
                counts = json.load(f)
        except (OSError, ValueError):
            return
        for key, (name, doc) in cls.FAMILIES.items():
            label = "result" if key == "upgrades" else "reason"
            yield Family(name, "counter", doc, [Sample(f"{name}_total", {label: reason}, float(n))
                                                for reason, n in sorted(counts.get(key, {}).items())])
