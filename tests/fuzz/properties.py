"""The parser's properties, checked on any bytes: by the atheris harness (fuzz_parser.py)
and, on the seed corpus and every input a fuzzer ever broke it with, by the unit tests."""

from __future__ import annotations

from gracehttp.errors import ProtocolError
from gracehttp.http.chunked import ChunkedDecoder
from gracehttp.http.parser import Limits, find_head_end, parse_head

LIMITS = Limits(1024, 4096, 50, 65536)


def check(data: bytes) -> None:
    """The property; raises on a crash."""
    try:
        end = find_head_end(data, LIMITS)
        if end < 0:
            return
        head = parse_head(data[:end], LIMITS)
        assert not (head.chunked and head.content_length is not None), "two framings"
        rest = data[end:]
        if head.chunked:
            whole = _decode(rest, 0)
            assert _decode(rest, 1) == whole, "chunked decoding depends on how the bytes arrive"
    except ProtocolError as exc:
        if not 400 <= exc.status < 600:
            raise AssertionError(f"ProtocolError with status {exc.status}") from exc


def _decode(rest: bytes, step: int) -> tuple[str, bytes, bytes]:
    """(outcome, body, bytes after the body), feeding `rest` whole (step 0) or `step` bytes at a time."""
    decoder = ChunkedDecoder()
    out = []
    size = step or len(rest) or 1
    try:
        for at in range(0, len(rest), size):
            out.append(decoder.feed(rest[at:at + size]))
            if decoder.done:  # what was not fed yet is after the body too
                return ("done", b"".join(out), decoder.leftover + rest[at + size:])
    except ProtocolError as exc:
        if not 400 <= exc.status < 600:
            raise AssertionError(f"ProtocolError with status {exc.status}") from exc
        return ("refused", b"", b"")
    return ("partial", b"".join(out), b"")
