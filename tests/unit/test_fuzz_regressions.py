"""The fuzz properties (tests/fuzz/properties.py) on the seed corpus, and on every input a
fuzzer found that broke them: each stays here as a regression case."""

from __future__ import annotations

import base64
import json
import pathlib

import pytest

from tests.fuzz.properties import check

VECTORS = json.loads((pathlib.Path(__file__).resolve().parents[1] / "data" / "gunicorn-requests.json").read_text())
#: Found by atheris on 2026-11-23: a complete chunked body with bytes after it, which the harness
#: first compared wrongly when fed a byte at a time (the parser was right; kept as a case).
FOUND = [
    b"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0005\r\nhello\r\n0\r\n\r\n0005",
]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_seed_corpus(case: dict[str, object]) -> None:
    check(base64.b64decode(str(case["raw_b64"])))


@pytest.mark.parametrize("data", FOUND)
def test_found_by_the_fuzzer(data: bytes) -> None:
    check(data)
