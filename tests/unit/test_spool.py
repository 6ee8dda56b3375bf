"""BodySpool: a body collected from raw bytes in any pieces comes out whole and framed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gracehttp.errors import ProtocolError
from gracehttp.http.parser import Limits, RequestHead, parse_head
from gracehttp.spool import BODY_MEMORY_LIMIT, BUDGET, MEMORY_BUDGET, MEMORY_LIMIT, BodySpool
from gracehttp.wsgi import Body


def head(fields: bytes) -> RequestHead:
    return parse_head(b"POST /u HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n\r\n", Limits())


def chunked(body: bytes, size: int) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def collect(spool: BodySpool, raw: bytes, cuts: list[int]) -> None:
    at = 0
    for cut in [*sorted(cuts), len(raw)]:
        spool.feed(raw[at:cut])
        at = max(at, cut)


def never(_: object = None) -> bytes:
    raise AssertionError("the body was whole: nothing more may be received")


def read_all(spool: BodySpool) -> bytes:
    body = Body(spool.framer, never, stored=spool.read)
    return body.read()


@given(body=st.binary(max_size=3000), size=st.integers(1, 700),
       cuts=st.lists(st.integers(0, 4000), max_size=6), chunk=st.booleans())
def test_any_split_gives_the_body_and_the_bytes_after_it(body: bytes, size: int, cuts: list[int],
                                                        chunk: bool) -> None:
    after = b"GET /next HTTP/1.1\r\n"
    raw = (chunked(body, size) if chunk else body) + after
    fields = b"Transfer-Encoding: chunked" if chunk else b"Content-Length: %d" % len(body)
    spool = BodySpool(head(fields), None)
    collect(spool, raw, [c for c in cuts if c <= len(raw)])
    assert spool.done
    assert spool.length == len(body)
    assert read_all(spool) == body
    assert spool.framer.leftover == after


def fed(body: bytes) -> BodySpool:
    spool = BodySpool(head(b"Content-Length: %d" % len(body)), None)
    for i in range(0, len(body), 65_536):
        spool.feed(body[i:i + 65_536])
    return spool


def test_a_body_past_the_memory_limits_goes_to_a_temporary_file_and_reads_back_whole() -> None:
    body = bytes(range(256)) * (BODY_MEMORY_LIMIT // 256 + 7)
    spool = fed(body)
    assert spool._file is not None
    assert not spool._mem
    assert BUDGET.free == MEMORY_BUDGET  # what it held in memory on the way was given back
    assert read_all(spool) == body
    spool.close()
    assert spool._file is None


def test_a_megabyte_body_stays_in_memory_and_gives_its_budget_back() -> None:
    body = bytes(range(256)) * (1024 * 1024 // 256)
    spool = fed(body)
    assert spool._file is None  # no file to create, write, read and unlink
    assert spool._map is not None
    assert BUDGET.free == MEMORY_BUDGET - len(body)  # a power of two: its buffer is just its size
    assert read_all(spool) == body
    spool.close()
    assert BUDGET.free == MEMORY_BUDGET


def test_past_the_process_budget_bodies_go_to_files() -> None:
    body = bytes(1024 * 1024)
    held = [fed(body) for _ in range(MEMORY_BUDGET // len(body))]
    assert all(s._map is not None for s in held)
    late = fed(body)
    assert late._file is not None  # the budget is spent: memory stays bounded
    assert read_all(late) == body
    for s in [*held, late]:
        s.close()
    assert BUDGET.free == MEMORY_BUDGET


def test_not_done_until_the_last_byte_or_the_last_chunk() -> None:
    spool = BodySpool(head(b"Content-Length: 10"), None)
    spool.feed(b"123456789")
    assert not spool.done
    spool.feed(b"0")
    assert spool.done
    spool = BodySpool(head(b"Transfer-Encoding: chunked"), None)
    spool.feed(b"3\r\nabc\r\n0\r\n")
    assert not spool.done  # the trailer section's empty line is still to come
    spool.feed(b"\r\n")
    assert spool.done
    assert read_all(spool) == b"abc"


def test_a_chunked_body_past_max_body_bytes_is_413_as_soon_as_it_is_past() -> None:
    spool = BodySpool(head(b"Transfer-Encoding: chunked"), 100)
    spool.feed(b"64\r\n" + b"x" * 100 + b"\r\n")
    spool.feed(b"1\r\n")
    with pytest.raises(ProtocolError) as err:
        spool.feed(b"y\r\n")
    assert err.value.status == 413


def test_bad_chunk_framing_is_400() -> None:
    spool = BodySpool(head(b"Transfer-Encoding: chunked"), None)
    with pytest.raises(ProtocolError) as err:
        spool.feed(b"3\r\nabcX\r\n")
    assert err.value.status == 400


@given(body=st.binary(min_size=1, max_size=3000), size=st.integers(1, 700), limit=st.integers(1, 3000),
       piece=st.integers(1, 500), chunk=st.booleans())
def test_a_body_past_the_spool_limit_goes_on_streaming_through_the_same_framer(
        body: bytes, size: int, limit: int, piece: int, chunk: bool) -> None:
    """Collected up to `limit`, then the app reads the rest from the wire: one framing,
    the whole body once, and the bytes after it found where it ends."""
    after = b"GET /next HTTP/1.1\r\n"
    raw = (chunked(body, size) if chunk else body) + after
    fields = b"Transfer-Encoding: chunked" if chunk else b"Content-Length: %d" % len(body)
    spool = BodySpool(head(fields), None, limit=limit)
    at = 0
    while at < len(raw) and not spool.done and not spool.full:
        spool.feed(raw[at:at + piece])
        at += piece
    assert spool.done or spool.length >= limit
    rest = [raw[i:i + piece] for i in range(at, len(raw), piece)]
    wire = iter(rest)
    got = Body(spool.framer, lambda: next(wire, b""), stored=spool.read).read()
    assert got == body
    assert spool.framer.leftover + b"".join(wire) == after


def test_full_only_while_the_body_is_unfinished() -> None:
    spool = BodySpool(head(b"Content-Length: 10"), None, limit=4)
    spool.feed(b"123")
    assert not spool.full
    spool.feed(b"45")
    assert spool.full
    assert not spool.done
    spool.feed(b"67890")
    assert spool.done
    assert not spool.full


def test_a_chunked_body_past_the_memory_limit_goes_to_a_file() -> None:
    body = bytes(range(256)) * (4 * MEMORY_LIMIT // 256)
    spool = BodySpool(head(b"Transfer-Encoding: chunked"), None)
    spool.feed(chunked(body, 65_536) + b"0\r\n\r\n")
    assert spool.done
    assert spool._map is None  # its size was not known: no memory to set aside for it
    assert spool._file is not None
    assert read_all(spool) == body
    spool.close()


def test_the_budget_counts_the_whole_buffer_a_body_gets() -> None:
    body = bytes(600 * 1024)  # gets a 1 MiB buffer
    spool = fed(body)
    assert spool._map is not None
    assert len(spool._map) == 1024 * 1024
    assert BUDGET.free == MEMORY_BUDGET - 1024 * 1024
    assert read_all(spool) == body
    spool.close()
    assert BUDGET.free == MEMORY_BUDGET
