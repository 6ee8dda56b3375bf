"""Request durations reach the histogram in bulk (each thread's running totals, added
once per bucket by the flusher): a scrape must read exactly as if each had been observed
on its own, bucket bounds and +Inf included, from one thread or several."""

from __future__ import annotations

import re
import sys
import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gracehttp.inflight import InFlight
from gracehttp.metrics import BUCKETS, Metrics
from gracehttp.state import Lifecycle
from gracehttp.workermetrics import can_observe_many

SAMPLES = [0.0, 0.0001, 0.0005, 0.00050001, 0.001, 0.003, 0.0999, 0.1, 2.5, 29.9, 30.0, 30.5, 1e6]
NAME = "gracehttp_request_duration_seconds"


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(NAME) and "_created" not in line]


def _reference(samples: list[float]) -> list[str]:
    reg = CollectorRegistry()
    one = Histogram(NAME, "d", buckets=BUCKETS, registry=reg)
    assert can_observe_many(one)
    for s in samples:
        one.observe(s)
    return _lines(generate_latest(reg).decode())


def _scraped(metrics: Metrics) -> list[str]:
    return _lines(metrics.render("text/plain")[0].decode())


def test_durations_counted_in_bulk_read_as_single_observations() -> None:
    metrics = Metrics(Lifecycle(), InFlight(), lambda: 0)
    try:
        for s in SAMPLES:
            metrics.observe("GET", 200, s, 10)
        scraped = _scraped(metrics)
        assert scraped == _reference(SAMPLES)
        assert f'{NAME}_bucket{{le="+Inf"}} 13.0' in scraped
        assert f'{NAME}_bucket{{le="0.0005"}} 3.0' in scraped  # a value on a bound counts in that bucket
        # Counted once: a second scrape adds nothing, more requests add only themselves.
        assert _scraped(metrics) == scraped
        metrics.observe("GET", 200, 0.002, 10)
        assert _scraped(metrics) == _reference([*SAMPLES, 0.002])
    finally:
        metrics.close()


def test_requests_counted_on_many_threads_are_all_scraped() -> None:
    metrics = Metrics(Lifecycle(), InFlight(), lambda: 0)
    try:
        def count() -> None:
            for s in SAMPLES:
                metrics.observe("POST", 201, s, 3)
                metrics.flush()  # flushes racing the counting: nothing lost, nothing twice

        threads = [threading.Thread(target=count) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert _scraped(metrics) == _reference(SAMPLES * 4)
        text = metrics.render("text/plain")[0].decode()
        assert 'gracehttp_requests_total{method="POST",status="201"} 52.0' in text
        assert "gracehttp_response_bytes_total 156.0" in text
    finally:
        metrics.close()


def test_an_unknown_histogram_is_not_taken_in_bulk() -> None:
    class Other:
        def observe(self, amount: float) -> None:
            pass

    assert not can_observe_many(Other())


def test_made_up_methods_share_one_label_and_keep_no_entry_each() -> None:
    metrics = Metrics(Lifecycle(), InFlight(), lambda: 0)
    try:
        for i in range(500):
            metrics.observe(f"M{i}", 405, 0.001)
        metrics.observe("GET", 200, 0.001)
        text = metrics.render("text/plain")[0].decode()
        assert 'gracehttp_requests_total{method="other",status="405"} 500.0' in text
        assert 'method="M1"' not in text
        assert len(metrics._tallies[0].counts) == 2  # ("other", 405) and ("GET", 200)
    finally:
        metrics.close()


def test_counts_are_exact_with_flushes_racing_new_methods_and_statuses() -> None:
    """A thread counting methods and statuses never seen before while two others flush,
    switching threads as often as the interpreter allows: no flush fails on a count that
    grew under it, and every request is counted once."""
    metrics = Metrics(Lifecycle(), InFlight(), lambda: 0)
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "FOO", "other", "get"]
    errors: list[BaseException] = []
    done = threading.Event()

    def count() -> None:
        for i in range(30_000):
            metrics.observe(methods[i % len(methods)], 100 + i % 500, 0.001)
        done.set()

    def flush() -> None:
        try:
            while not done.is_set():
                metrics.flush()
        except BaseException as exc:
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=f) for f in (count, flush, flush)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    try:
        assert not errors
        text = metrics.render("text/plain")[0].decode()
        total = sum(float(n) for n in re.findall(r"^gracehttp_requests_total\{[^}]*\} (\S+)$", text, re.M))
        assert total == 30_000
        assert 'method="FOO"' not in text
        assert 'method="get"' not in text
    finally:
        metrics.close()
