"""Metrics across worker processes: prometheus-client's multiprocess directory, each
worker's process gauges, the merge at scrape time, and the supervisor's own counts.

Middle layer: imports `inherit` and `flushbell`. The supervisor uses the
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

from gracehttp.flushbell import remove_doorbell
from gracehttp.inherit import inheritance

UPGRADES_HELP = "Upgrades in place (SIGUSR2): succeeded ones that led to this process, failed ones it survived."


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
        "upgrades": ("gracehttp_upgrades", UPGRADES_HELP),
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
    def families(cls, directory: str) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        try:
            with open(os.path.join(directory, cls.FILE)) as f:
                counts = json.load(f)
        except (OSError, ValueError):
            return
        for key, (name, doc) in cls.FAMILIES.items():
            family = CounterMetricFamily(name, doc, labels=["result" if key == "upgrades" else "reason"])
            for reason, n in sorted(counts.get(key, {}).items()):
                family.add_metric([reason], n)
            yield family
