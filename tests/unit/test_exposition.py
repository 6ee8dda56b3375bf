"""The scrape a single process writes itself must be what prometheus-client writes:
the same bytes in both formats for any families, the same number formatting, the same
choice of format per Accept header, and process and Python metrics with prometheus-client's
names, help and values. prometheus-client is the reference here (the test process may
import it; a serving process with one worker does not)."""

from __future__ import annotations

import gc
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client import generate_latest as reference_text
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as om_reference
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

from gracehttp import exposition
from gracehttp.exposition import Family, Sample
from gracehttp.inflight import InFlight
from gracehttp.metrics import Metrics
from gracehttp.procstats import process_families, python_families
from gracehttp.state import Lifecycle

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(
    lambda n: not n.endswith(("_total", "_created", "_bucket", "_count", "_sum", "_gsum", "_gcount", "_info")))
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
NUMBERS = st.floats(allow_nan=False) | st.integers(-(10**18), 10**18).map(float) | st.sampled_from(
    [0.0, 1e6, 1234567.0, 12345678.5, 1.7962781619812179e9, 1e22, 2.5e-7, math.inf, -math.inf])


class _Registry:
    """A prometheus-client collector yielding the same families, for its encoders."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        out = []
        for family in self.families:
            metric = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                metric.add_sample(sample.name, dict(sample.labels), sample.value)
            out.append(metric)
        return out


@st.composite
def families(draw: st.DrawFn) -> list[Family]:
    out = []
    for name in draw(st.lists(NAMES, max_size=4, unique=True)):
        kind = draw(st.sampled_from(["counter", "gauge", "histogram"]))
        doc = draw(TEXT)
        label_sets = draw(st.lists(st.dictionaries(st.sampled_from(["method", "reason", "a", "z"]), TEXT,
                                                   max_size=3), max_size=3))
        samples = []
        for labels in label_sets or [{}]:
            if kind == "counter":
                samples += [Sample(f"{name}_total", labels, draw(NUMBERS)),
                            Sample(f"{name}_created", labels, draw(NUMBERS))]
            elif kind == "gauge":
                samples.append(Sample(name, labels, draw(NUMBERS)))
            else:
                for le in ("0.5", "+Inf"):
                    samples.append(Sample(f"{name}_bucket", {**labels, "le": le}, draw(NUMBERS)))
                samples += [Sample(f"{name}_{suffix}", labels, draw(NUMBERS)) for suffix in ("count", "sum", "created")]
        out.append(Family(name, kind, doc, samples))
    return out


@settings(max_examples=300, deadline=None)
@given(families())
def test_both_formats_are_byte_for_byte_prometheus_clients(fams: list[Family]) -> None:
    assert exposition.text(fams) == reference_text(_Registry(fams))  # type: ignore[arg-type]
    assert exposition.openmetrics(fams) == om_reference.generate_latest(_Registry(fams))  # type: ignore[no-untyped-call]


@settings(max_examples=2000, deadline=None)
@given(NUMBERS | st.floats())
def test_numbers_are_written_as_prometheus_client_writes_them(value: float) -> None:
    assert exposition.go_float(value) == floatToGoString(value)


@pytest.mark.parametrize("accept", [
    "", "text/plain", "*/*", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text", "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5",
    "application/openmetrics-text;version=1", "application/openmetrics-text;version=2.0.0",
    "text/html, application/openmetrics-text; version=1.0.0; charset=utf-8",
    # Prometheus 3 asking for text 1.0.0 first: the text format, though OpenMetrics follows.
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4",
    "text/plain;version=0.0.4;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4",
])
def test_the_format_is_chosen_as_prometheus_client_chooses_it(accept: str) -> None:
    _, ours = exposition.choose(accept)
    _, theirs = choose_encoder(accept)
    assert ours.split(";")[0] == theirs.split(";")[0]
    assert ours in (exposition.TEXT_TYPE, exposition.OPENMETRICS_TYPE)


def test_media_types_are_compared_as_http_says_and_a_bad_version_is_not_an_error() -> None:
    """Case-insensitively (RFC 9110 section 8.3.1), where prometheus-client compares them as
    written; a version that is not numbers gets the classic format (prometheus-client raises)."""
    assert exposition.choose("Application/OpenMetrics-Text")[1] == exposition.OPENMETRICS_TYPE
    assert exposition.choose("application/openmetrics-text;version=x")[1] == exposition.TEXT_TYPE


def _reference_families(*collectors: object) -> dict[str, Metric]:
    registry = CollectorRegistry()
    for make in collectors:
        make(registry=registry)  # type: ignore[operator]
    return {m.name: m for m in registry.collect()}


def test_process_metrics_match_prometheus_clients_collector() -> None:
    ours = {f.name: f for f in process_families()}
    theirs = _reference_families(ProcessCollector)
    assert [(f.name, f.type, f.documentation) for f in ours.values()] == \
        [(m.name, m.type, m.documentation) for m in theirs.values()]
    value = {name: f.samples[0].value for name, f in ours.items()}
    ref = {name: m.samples[0].value for name, m in theirs.items()}
    assert [s.name for f in ours.values() for s in f.samples] == [s.name for m in theirs.values() for s in m.samples]
    assert value["process_start_time_seconds"] == ref["process_start_time_seconds"]
    assert value["process_max_fds"] == ref["process_max_fds"]
    assert abs(value["process_resident_memory_bytes"] - ref["process_resident_memory_bytes"]) < 8 << 20
    assert abs(value["process_open_fds"] - ref["process_open_fds"]) <= 2
    assert 0 < value["process_cpu_seconds"] <= ref["process_cpu_seconds"] + 0.05
    assert value["process_resident_memory_bytes"] > 1 << 20
    assert abs(value["process_open_fds"] - len(os.listdir("/proc/self/fd"))) <= 2


def test_python_metrics_match_prometheus_clients_collectors() -> None:
    gc.disable()  # no collection between the two reads
    try:
        ours = python_families()
        theirs = _reference_families(PlatformCollector, GCCollector)
    finally:
        gc.enable()
    assert exposition.text(ours) == reference_text(_Registry([
        Family(m.name, m.type, m.documentation, [Sample(s.name, s.labels, s.value) for s in m.samples])
        for m in theirs.values()]))  # type: ignore[arg-type]


def test_a_single_process_scrape_parses_in_both_formats_with_every_fixed_name() -> None:
    metrics = Metrics(Lifecycle(), InFlight(), lambda: 3, upgrades=2)
    try:
        metrics.observe("GET", 200, 0.002, 5)
        metrics.observe("BREW", 418, 0.2)
        metrics.bad_request("bad_host")
        metrics.over_timeout()
        metrics.upgrade_failed()
        metrics.drained(1.5)
        text, text_type = metrics.render("")
        om, om_type = metrics.render("application/openmetrics-text; version=1.0.0")
    finally:
        metrics.close()
    assert text_type.startswith("text/plain; version=0.0.4")
    assert om_type.startswith("application/openmetrics-text")
    assert om.endswith(b"# EOF\n")
    for parse, body in ((parse_text, text), (parse_openmetrics, om)):
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for family in parse(body.decode()) for s in family.samples}
        assert values[("gracehttp_requests_total", (("method", "GET"), ("status", "200")))] == 1
        assert values[("gracehttp_requests_total", (("method", "other"), ("status", "418")))] == 1
        assert values[("gracehttp_request_duration_seconds_count", ())] == 2
        assert values[("gracehttp_request_duration_seconds_bucket", (("le", "0.0025"),))] == 1
        assert values[("gracehttp_bad_requests_total", (("reason", "bad_host"),))] == 1
        assert values[("gracehttp_requests_over_timeout_total", ())] == 1
        assert values[("gracehttp_upgrades_total", (("result", "succeeded"),))] == 2
        assert values[("gracehttp_upgrades_total", (("result", "failed"),))] == 1
        assert values[("gracehttp_drain_duration_seconds", ())] == 1.5
        assert values[("gracehttp_connections_open", ())] == 3
        assert values[("gracehttp_requests_in_flight", ())] == 0
        assert values[("gracehttp_response_bytes_total", ())] == 5
        assert ("gracehttp_ready", ()) in values
        assert ("process_resident_memory_bytes", ()) in values
        assert ("python_gc_collections_total", (("generation", "0"),)) in values


def test_created_samples_follow_prometheus_clients_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_DISABLE_CREATED_SERIES", "True")
    metrics = Metrics(Lifecycle(), InFlight(), lambda: 0)
    try:
        metrics.observe("GET", 200, 0.002)
        metrics.bad_request("bad_host")
        text = metrics.render("")[0].decode()
    finally:
        metrics.close()
    assert "_created" not in text
    assert 'gracehttp_requests_total{method="GET",status="200"} 1.0' in text
    assert "gracehttp_request_duration_seconds_count 1.0" in text
