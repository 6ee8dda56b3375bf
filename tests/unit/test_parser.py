"""The parser on bytes: every split point, one byte at a time, hypothesis, and the bad-input table."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gracehttp.errors import ProtocolError
from gracehttp.http.chunked import ChunkedDecoder
from gracehttp.http.parser import Limits, RequestHead, find_head_end, parse_head

LIMITS = Limits()


def parse_stream(pieces: list[bytes], limits: Limits = LIMITS) -> list[tuple[RequestHead, bytes]]:
    """Drive the parser as the connection does, with input arriving in `pieces`."""
    out: list[tuple[RequestHead, bytes]] = []
    buf = b""
    head: RequestHead | None = None
    decoder: ChunkedDecoder | None = None
    body = b""
    remaining = 0
    for piece in pieces:
        buf += piece
        while True:
            if head is None:
                end = find_head_end(buf, limits)
                if end < 0:
                    break
                head = parse_head(buf[:end], limits)
                buf = buf[end:]
                body = b""
                decoder = ChunkedDecoder() if head.chunked else None
                remaining = head.content_length or 0
            if decoder is not None:
                body += decoder.feed(buf)
                buf = b""
                if not decoder.done:
                    break
                buf = decoder.leftover
            else:
                take = buf[:remaining]
                body += take
                buf = buf[len(take):]
                remaining -= len(take)
                if remaining:
                    break
            out.append((head, body))
            head = None
    return out


def summary(results: list[tuple[RequestHead, bytes]]) -> list[tuple[object, ...]]:
    return [(h.method, h.target, h.path, h.query, h.version, h.headers, h.keep_alive, b) for h, b in results]


STREAMS = [
    b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    b"GET /after HTTP/1.0\r\n\r\n",
    b"\r\nGET http://example.com/abs?q=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
]


@pytest.mark.parametrize("stream", STREAMS)
def test_every_split_point_gives_the_same_requests(stream: bytes) -> None:
    whole = summary(parse_stream([stream]))
    assert whole
    for i in range(1, len(stream)):
        assert summary(parse_stream([stream[:i], stream[i:]])) == whole, i


@pytest.mark.parametrize("stream", STREAMS)
def test_one_byte_at_a_time(stream: bytes) -> None:
    whole = summary(parse_stream([stream]))
    assert summary(parse_stream([stream[i:i + 1] for i in range(len(stream))])) == whole


def test_parsed_fields() -> None:
    (head, body), (head2, _) = parse_stream([STREAMS[1]])
    assert head.method == "POST"
    assert head.path == b"/up"
    assert head.content_length == 5
    assert body == b"hello"
    assert head.keep_alive
    assert head2.path == b"/next"
    (chunked, cbody), (after, _) = parse_stream([STREAMS[2]])
    assert cbody == b"hello world"
    assert chunked.chunked
    assert after.version == "HTTP/1.0"
    assert not after.keep_alive
    (absolute, _), = parse_stream([STREAMS[3]])
    assert absolute.path == b"/abs"
    assert absolute.query == b"q=1"
    assert not absolute.keep_alive


def test_trailers_are_kept() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\nrest") == b"abc"
    assert decoder.done
    assert decoder.trailers == [(b"X-Sum", b"1")]
    assert decoder.leftover == b"rest"


def _status(raw: bytes, limits: Limits = LIMITS) -> int:
    with pytest.raises(ProtocolError) as info:
        parse_stream([raw], limits)
    return info.value.status


H = b"Host: x\r\n"
BAD = {
    400: [
        b"GET /\r\n\r\n",                                   # malformed request line
        b"GET  / HTTP/1.1\r\n" + H + b"\r\n",
        b"GET / HTTP/1.1\r\n" + H + b"NoColon\r\n\r\n",      # malformed header
        b"GET / HTTP/1.1\r\n" + H + b": empty-name\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk framing
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",  # both
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",  # differing CL
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 4\r\n\r\nabcd",
        b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n",  # obsolete line folding
        b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n\tb\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + H + b"X : a\r\n\r\n",       # space before colon
        b"GET / HTTP/1.1\r\n" + H + b"X\t: a\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",                          # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",    # two Hosts
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",            # invalid Hosts (RFC 9112 section 3.2)
        b"GET / HTTP/1.1\r\nHost: a/../b@c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: x\"y\r\n\r\n",           # validated in HTTP/1.0 too, when sent
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n20;invalid=\r\n",  # chunk extensions
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2;\r\nab\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2;a=\"b\r\nab\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2;a=b c\r\nab\r\n0\r\n\r\n",
        b"GET / HTTP/1.x\r\n" + H + b"\r\n",                # malformed versions
        b"GET / HTTP/111\r\n" + H + b"\r\n",
        b"GET / FTP/1.1\r\n" + H + b"\r\n",
    ],
    414: [b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n",
          b"GET /?q=" + b"b" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n"],
    431: [b"GET / HTTP/1.1\r\n" + H + b"X: " + b"v" * 70000 + b"\r\n\r\n",
          b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n"],
    501: [b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
          b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n"],
    505: [b"GET / HTTP/2.0\r\n" + H + b"\r\n", b"GET / HTTP/1.2\r\n" + H + b"\r\n"],
}


@pytest.mark.parametrize(("status", "raw"), [(s, r) for s, raws in BAD.items() for r in raws])
def test_bad_input_status(status: int, raw: bytes) -> None:
    assert _status(raw) == status


def test_body_limit_gives_413() -> None:
    limits = Limits(max_body_bytes=10)
    assert _status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", limits) == 413
    assert _status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", limits) == 413


def test_limits_are_enforced_before_the_head_is_complete() -> None:
    with pytest.raises(ProtocolError) as info:
        find_head_end(b"GET /" + b"a" * 9000, LIMITS)
    assert info.value.status == 414
    with pytest.raises(ProtocolError) as info:
        find_head_end(b"GET / HTTP/1.1\r\n" + b"X: " + b"v" * 80000, LIMITS)
    assert info.value.status == 431


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_protocol_errors(data: bytes) -> None:
    statuses = set()
    try:
        parse_stream([data])
    except ProtocolError as exc:
        statuses.add(exc.status)
    assert statuses <= {400, 408, 413, 414, 431, 501, 505}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8), st.data())
def test_chunked_round_trip_at_random_splits(chunks: list[bytes], data: st.DataObject) -> None:
    wire = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    decoder = ChunkedDecoder()
    out = b""
    last = 0
    for cut in [*cuts, len(wire)]:
        out += decoder.feed(wire[last:cut])
        last = cut
    assert decoder.done
    assert out == b"".join(chunks)


def test_a_head_arriving_a_byte_at_a_time_is_scanned_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each look for the head's end searches only the bytes added since the last one (and
    three before them): a 60 KB head sent a byte at a time is searched about once, not
    60,000 times over (quadratic: seconds of CPU per such client)."""
    from gracehttp.http import framing

    searched = 0
    real = framing.find_head_end

    def counting(buf: bytes, limits: Limits, start: int = 0) -> int:
        nonlocal searched
        searched += len(buf) - start
        return real(buf, limits, start)

    monkeypatch.setattr(framing, "find_head_end", counting)
    head = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Pad: " + b"p" * 60_000 + b"\r\n\r\n"
    scanner, buf, end = framing.HeadScanner(), b"", -1
    for i in range(len(head)):
        if buf:
            scanner.grew(len(buf))
        buf += head[i:i + 1]
        buf, end = scanner.find(buf, Limits(max_header_bytes=65536))
    assert end == len(head)
    assert searched < 5 * len(head)


@pytest.mark.parametrize("host", [b"example.com", b"example.com:8080", b"127.0.0.1:80", b"[::1]:8080",
                                  b"[v1.fe]", b"xn--bcher-kva.example", b"ex%41mple", b"a-b_c~d!$&'()*+,;="])
def test_valid_hosts_are_accepted(host: bytes) -> None:
    (head,) = [h for h, _ in parse_stream([b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"])]
    assert dict(head.headers)[b"Host"] == host


def test_an_empty_host_is_accepted() -> None:
    """RFC 9112 section 3.2: a client sends an empty Host when the target has no authority."""
    assert len(parse_stream([b"GET / HTTP/1.1\r\nHost:\r\n\r\n"])) == 1


@pytest.mark.parametrize("ext", [b";a", b";a=b", b" ; a = b", b';a="x y"', b';a="q\\"d"', b";a;b=c;d=\"\""])
def test_well_formed_chunk_extensions_are_ignored(ext: bytes) -> None:
    raw = b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2" + ext + b"\r\nab\r\n0\r\n\r\n"
    ((_, body),) = parse_stream([raw])
    assert body == b"ab"



@pytest.mark.parametrize(("head", "status", "reason"), [
    # Two faults: the header limits and the Host are checked before the target, as always.
    (b"GET * HTTP/1.1\r\nHost: t\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431, "too_many_headers"),
    (b"GET * HTTP/1.1\r\n\r\n", 400, "bad_host"),
    (b"GET * HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_target"),
])
def test_which_fault_is_named_does_not_depend_on_the_line_caches(head: bytes, status: int, reason: str) -> None:
    # Twice, with a good request of the same request line between: the second parse of each
    # line may come from the caches, and must refuse the same way.
    for _ in range(2):
        with pytest.raises(ProtocolError) as err:
            parse_head(head, Limits())
        assert (err.value.status, err.value.reason) == (status, reason)
        parse_head(b"OPTIONS * HTTP/1.1\r\nHost: t\r\nX: y\r\n\r\n", Limits())


def test_a_cached_header_line_parses_as_it_did_the_first_time() -> None:
    head = b"POST /a?b=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\nX-K: v \r\n\r\n"
    first, second = parse_head(head, Limits()), parse_head(head, Limits())
    for got in (first, second):
        assert (got.method, got.path, got.query, got.content_length, got.keep_alive) == ("POST", b"/a", b"b=1", 3,
                                                                                         False)
        assert got.headers == [(b"Host", b"h"), (b"Content-Length", b"3"), (b"Connection", b"close"),
                               (b"X-K", b"v")]
