"""One process's running totals of its metrics, and the families a scrape writes from
them (docs/architecture.rst, "Admin listener and metrics").

Middle layer: imports `exposition` only.

The metrics flusher adds what the request threads counted (`Grown`) to a sink:
with workers, prometheus-client's metrics, which write the shared files that a
scrape merges (`workermetrics.ClientMetrics`); in a single process, `Totals`,
plain numbers kept here, so that a server that is never run with workers never
imports prometheus-client (8 MiB of memory, mostly ssl and libcrypto, which its
exposition module imports). Both give the same families: the counters with
their ``_created`` time per label set, the histogram with cumulative buckets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from gracehttp.exposition import Family, Sample, go_float

#: Request duration buckets, in seconds: sub-millisecond to the default read timeout.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UPGRADES_HELP = "Upgrades in place (SIGUSR2): succeeded ones that led to this process, failed ones it survived."
#: name, help, label names: in the order a scrape lists them.
REQUESTS = ("gracehttp_requests", "Requests answered by the app, by method and status.", ("method", "status"))
DURATION = ("gracehttp_request_duration_seconds", "Time from the request head to the end of the response.")
BAD = ("gracehttp_bad_requests", "Requests refused before the app, by reason.", ("reason",))
SENT = ("gracehttp_response_bytes", "Response body bytes of the requests answered by the app.")
OVER = ("gracehttp_requests_over_timeout", "Requests found running past request_timeout (each counted once).")
UPGRADES = ("gracehttp_upgrades", UPGRADES_HELP, ("result",))
DRAIN = ("gracehttp_drain_duration_seconds", "How long the last drain took (0 until one happened).")


def use_created() -> bool:
    """Whether counters and histograms have ``_created`` samples: prometheus-client's
    switch, ``PROMETHEUS_DISABLE_CREATED_SERIES=true``, turns them off here too."""
    return os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "false").lower() not in ("true", "1", "t")


class Grown(NamedTuple):
    """What was counted since the last flush."""

    requests: dict[tuple[str, int], int]  # by (method, status)
    per_bucket: list[int]  # request durations by bucket, +Inf last
    seconds: float  # their sum
    sent: int  # response body bytes
    over: int  # requests found past request_timeout
    upgrades: list[str]  # one result per upgrade
    bad: list[str]  # one reason per refused request
    drain: float | None  # the last drain's seconds, once one happened


class Sink(Protocol):
    def add(self, grown: Grown) -> None: ...


class _Counter:
    """A counter's value per label set, each with the time it was first counted."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.values: dict[tuple[str, ...], list[float]] = {}  # label values -> [total, created]
        if not self.labels:
            self.add((), 0)

    def add(self, key: tuple[str, ...], n: float) -> None:
        entry = self.values.get(key)
        if entry is None:
            entry = self.values[key] = [0.0, time.time()]
        entry[0] += n

    def family(self, created: bool) -> Family:
        samples = []
        for key, (total, first) in self.values.items():
            labels = dict(zip(self.labels, key, strict=True))
            samples.append(Sample(self.name + "_total", labels, total))
            if created:
                samples.append(Sample(self.name + "_created", labels, first))
        return Family(self.name, "counter", self.documentation, samples)


class Totals:
    """A single process's counts, as a `Sink`."""

    def __init__(self, upgrades: int) -> None:
        self.bounds = BUCKETS
        self.requests = _Counter(*REQUESTS)
        self.per_bucket = [0] * (len(self.bounds) + 1)
        self.seconds = 0.0
        self.duration_created = time.time()
        self.bad = _Counter(*BAD)
        self.sent = _Counter(*SENT)
        self.over = _Counter(*OVER)
        self.upgrades = _Counter(*UPGRADES)
        self.upgrades.add(("succeeded",), upgrades)  # the generations before this process
        self.upgrades.add(("failed",), 0)
        self.drain = 0.0
        self.created = use_created()

    def add(self, grown: Grown) -> None:
        for (method, status), n in grown.requests.items():
            self.requests.add((method, str(status)), n)
        self.per_bucket = [a + b for a, b in zip(self.per_bucket, grown.per_bucket, strict=True)]
        self.seconds += grown.seconds
        if grown.sent:
            self.sent.add((), grown.sent)
        if grown.over:
            self.over.add((), grown.over)
        for result in grown.upgrades:
            self.upgrades.add((result,), 1)
        for reason in grown.bad:
            self.bad.add((reason,), 1)
        if grown.drain is not None:
            self.drain = grown.drain

    def families(self) -> list[Family]:
        name, doc = DURATION
        samples = []
        cumulative = 0
        for bound, n in zip((*self.bounds, float("inf")), self.per_bucket, strict=True):
            cumulative += n
            samples.append(Sample(f"{name}_bucket", {"le": go_float(bound)}, float(cumulative)))
        samples += [Sample(f"{name}_count", {}, float(cumulative)), Sample(f"{name}_sum", {}, self.seconds)]
        if self.created:
            samples.append(Sample(f"{name}_created", {}, self.duration_created))
        created = self.created
        return [self.requests.family(created), Family(name, "histogram", doc, samples), self.bad.family(created),
                self.sent.family(created), self.over.family(created), self.upgrades.family(created),
                Family(DRAIN[0], "gauge", DRAIN[1], [Sample(DRAIN[0], {}, self.drain)])]
