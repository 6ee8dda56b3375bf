"""An idle server's metrics flusher writes nothing: it wakes every 0.1 s, and with
workers every write goes to the memory-mapped files, so a flush that found nothing
new used to cost an idle worker CPU ten times a second for no change. What changed
is still written, at once: a request, a refused request, a drain, a gauge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import values as pc_values

from gracehttp.inflight import InFlight
from gracehttp.metrics import Metrics
from gracehttp.state import Lifecycle
from gracehttp.totals import Grown


class _Recorded:
    """The sink the flusher built, with each `add` it is given recorded."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.added: list[Grown] = []

    def add(self, grown: Grown) -> None:
        self.added.append(grown)
        self.sink.add(grown)


def _recording(metrics: Metrics) -> _Recorded:
    metrics.flush()  # waits for nothing: the sink is built before the first flush runs
    recorded = _Recorded(metrics._sink)
    metrics._sink = recorded
    return recorded


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics(Lifecycle(), InFlight(), lambda: 0)
    m._ready.wait(10)
    try:
        yield m
    finally:
        m.close()


def test_a_flush_with_nothing_counted_adds_nothing(metrics: Metrics) -> None:
    recorded = _recording(metrics)
    for _ in range(3):
        metrics.flush()
    assert recorded.added == []
    metrics.observe("GET", 200, 0.001, 5)
    metrics.flush()
    metrics.flush()
    assert len(recorded.added) == 1
    assert recorded.added[0].requests == {("GET", 200): 1}
    assert recorded.added[0].sent == 5
    assert 'gracehttp_requests_total{method="GET",status="200"} 1.0' in metrics.render("text/plain")[0].decode()


def test_refusals_and_a_drain_are_added_though_no_request_was_answered(metrics: Metrics) -> None:
    recorded = _recording(metrics)
    metrics.bad_request("bad_request_line")
    metrics.flush()
    assert [g.bad for g in recorded.added] == [["bad_request_line"]]
    metrics.drained(1.5)
    metrics.flush()
    metrics.flush()
    assert len(recorded.added) == 2
    assert recorded.added[1].drain == 1.5
    text = metrics.render("text/plain")[0].decode()
    assert "gracehttp_drain_duration_seconds 1.5" in text
    assert 'gracehttp_bad_requests_total{reason="bad_request_line"} 1.0' in text


def test_with_workers_only_gauges_that_changed_are_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    # The worker's metrics switch prometheus-client to its multiprocess values: put back after.
    monkeypatch.setattr(pc_values, "ValueClass", pc_values.ValueClass)
    open_now = [3]
    m = Metrics(Lifecycle(), InFlight(), lambda: open_now[0])
    try:
        assert m._ready.wait(10)
        m.flush()  # every gauge written once, as the flusher's first flush would
        live = m._live
        assert live._gauges is not None
        written: list[str] = []
        for gauge in live._gauges:
            real = gauge.set

            def record(value: float, real: Any = real, name: str = gauge._name) -> None:
                written.append(name)
                real(value)
            gauge.set = record
        for _ in range(3):
            m.flush()
        assert written == []  # idle: every value as the flusher last wrote it
        open_now[0] = 4
        m.flush()
        assert written == ["gracehttp_connections_open"]
    finally:
        m.close()
