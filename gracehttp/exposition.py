"""The two text formats a Prometheus scrape reads: the classic text format (0.0.4) and
OpenMetrics 1.0.0, written from metric families (docs/architecture.rst, "Admin
listener and metrics").

Bottom layer: imports nothing of gracehttp's.

Why not prometheus-client's encoders: importing any part of that package imports
its exposition module, which imports urllib, http.server and ssl, and with them
libcrypto: about 8 MiB of every idle server's memory, for a scrape that needs a
few string joins. A single process keeps its own numbers and writes them here;
with workers, the families prometheus-client merges from the workers' files are
written here too, so both modes give the same bytes. The output is
prometheus-client's byte for byte (tests/unit/test_exposition.py compares them),
so scrapers, dashboards and the parsers see no difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

#: Sample suffixes that the classic format has no place for in their family: each
#: becomes a gauge family of its own after it (what Prometheus itself expects).
_OWN_GAUGE_SUFFIXES = ("_created", "_gcount", "_gsum")
#: A family's type as the classic format names it, where it differs.
_CLASSIC_TYPE = {"unknown": "untyped", "stateset": "gauge", "info": "gauge", "gaugehistogram": "histogram"}
#: The suffix the classic format adds to the family's name in HELP and TYPE.
_CLASSIC_SUFFIX = {"counter": "_total", "info": "_info"}


class SampleLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def value(self) -> float: ...


class FamilyLike(Protocol):
    """What both this package's `Family` and prometheus-client's merged metrics have."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def documentation(self) -> str: ...
    @property
    def samples(self) -> Sequence[SampleLike]: ...


class Sample(NamedTuple):
    name: str
    labels: Mapping[str, str]
    value: float


class Family(NamedTuple):
    """A metric family: `name` without a counter's `_total`; `type` as OpenMetrics
    names it (counter, gauge, histogram)."""

    name: str
    type: str
    documentation: str
    samples: list[Sample]


def gauge(name: str, documentation: str, value: float) -> Family:
    return Family(name, "gauge", documentation, [Sample(name, {}, value)])


def go_float(value: float) -> str:
    """A number as Prometheus writes it: Python's shortest repr, except that large
    numbers switch to an exponent where Go's formatting would (more than six digits
    before the point), and the infinities and NaN by their Prometheus names."""
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    point = text.find(".")
    if value > 0 and point > 6:
        digits = (text[:point] + text[point + 1:]).rstrip("0")
        mantissa = f"{digits[0]}.{digits[1:]}".rstrip(".")
        return f"{mantissa}e+{point - 1:02d}"
    return text


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _line(sample: SampleLike) -> str:
    if not sample.labels:
        return f"{sample.name} {go_float(sample.value)}\n"
    labels = ",".join(f'{key}="{_label_value(value)}"' for key, value in sorted(sample.labels.items()))
    return f"{sample.name}{{{labels}}} {go_float(sample.value)}\n"


def text(families: Iterable[FamilyLike]) -> bytes:
    """The classic text format."""
    out: list[str] = []
    for family in families:
        name = family.name + _CLASSIC_SUFFIX.get(family.type, "")
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {_CLASSIC_TYPE.get(family.type, family.type)}\n")
        moved: dict[str, list[str]] = {}
        for sample in family.samples:
            suffix = sample.name[len(family.name):] if sample.name.startswith(family.name) else ""
            if suffix in _OWN_GAUGE_SUFFIXES:
                moved.setdefault(suffix, []).append(_line(sample))
            else:
                out.append(_line(sample))
        for suffix, lines in sorted(moved.items()):
            out.append(f"# HELP {family.name}{suffix} {doc}\n# TYPE {family.name}{suffix} gauge\n")
            out.extend(lines)
    return "".join(out).encode()


def openmetrics(families: Iterable[FamilyLike]) -> bytes:
    """OpenMetrics 1.0.0: the family's own name and type, every sample in place, and
    the closing ``# EOF`` that tells a scraper the answer is whole."""
    out: list[str] = []
    for family in families:
        out.append(f"# HELP {family.name} {_label_value(family.documentation)}\n"
                   f"# TYPE {family.name} {family.type}\n")
        out.extend(_line(sample) for sample in family.samples)
    out.append("# EOF\n")
    return "".join(out).encode()


def _version(params: list[str]) -> tuple[int, ...] | None:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "version":
            try:
                return tuple(int(part) for part in value.strip().split("."))
            except ValueError:
                return (0,)
    return None


def choose(accept: str) -> tuple[Callable[[Iterable[FamilyLike]], bytes], str]:
    """The format a scraper's Accept header asks for, as prometheus-client chooses it:
    the first entry that is OpenMetrics (without a version, or 1.0.0 or later) or the
    text format at version 1.0.0 or later decides; otherwise the classic text format,
    which every Prometheus reads. Either is written at the version this module
    writes (OpenMetrics 1.0.0, text 0.0.4, the same lines as text 1.0.0 for these
    names)."""
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        if media == "application/openmetrics-text":
            version = _version(params)
            if version is None or version >= (1, 0, 0):
                return openmetrics, OPENMETRICS_TYPE
        elif media == "text/plain":
            version = _version(params)
            if version is not None and version >= (1, 0, 0):
                return text, TEXT_TYPE
    return text, TEXT_TYPE
