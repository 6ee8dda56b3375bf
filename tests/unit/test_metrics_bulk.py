"""The flusher adds request durations to the histogram in bulk: the scrape must read
exactly as if each had been observed on its own, bucket bounds and +Inf included."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gracehttp.metrics import BUCKETS, bucket_counts, can_observe_many, observe_many

SAMPLES = [0.0, 0.0001, 0.0005, 0.00050001, 0.001, 0.003, 0.0999, 0.1, 2.5, 29.9, 30.0, 30.5, 1e6]


def _histogram() -> tuple[CollectorRegistry, Histogram]:
    reg = CollectorRegistry()
    return reg, Histogram("d", "durations", buckets=BUCKETS, registry=reg)


def test_bulk_observations_read_as_single_ones() -> None:
    one_reg, one = _histogram()
    for s in SAMPLES:
        one.observe(s)
    bulk_reg, bulk = _histogram()
    assert can_observe_many(bulk)
    observe_many(bulk, bucket_counts(sorted(SAMPLES)), sum(SAMPLES))

    def lines(reg: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(reg).decode().splitlines() if not line.startswith("d_created")]

    assert lines(bulk_reg) == lines(one_reg)
    assert 'd_bucket{le="+Inf"} 13.0' in lines(bulk_reg)
    assert 'd_bucket{le="0.0005"} 3.0' in lines(bulk_reg)  # a value on a bound counts in that bucket


def test_an_unknown_histogram_is_not_taken_in_bulk() -> None:
    class Other:
        def observe(self, amount: float) -> None:
            pass

    assert not can_observe_many(Other())
