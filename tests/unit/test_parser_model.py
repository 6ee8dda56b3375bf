"""Round trips (issue 7): a request generated from a model parses back to the same model
at every split point of its bytes, pipelined behind another; a response rendered by the
writer parses back, with http.client, to what was rendered."""

from __future__ import annotations

import http.client
import io
import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gracehttp.http.writer import chunk, render_head
from tests.unit.test_parser import parse_stream

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
FRAMING = {"host", "content-length", "transfer-encoding", "connection", "expect", "te", "upgrade", "trailer"}


@dataclass
class Model:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    chunks: list[int] | None  # chunk sizes (their sum is len(body)), or None for Content-Length

    def wire(self) -> bytes:
        target = self.path + ("?" + self.query if self.query else "")
        lines = [f"{self.method} {target} HTTP/1.1", "Host: example.test"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        if self.chunks is None:
            lines.append(f"Content-Length: {len(self.body)}")
            return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body
        lines.append("Transfer-Encoding: chunked")
        out, at = [], 0
        for size in self.chunks:
            out.append(b"%x\r\n%s\r\n" % (size, self.body[at:at + size]))
            at += size
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + b"".join(out) + b"0\r\n\r\n"


@st.composite
def models(draw: st.DrawFn) -> Model:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]) | TOKEN.map(str.upper))
    path = "/" + "/".join(draw(st.lists(TOKEN, max_size=4)))
    query = "&".join(f"{k}={v}" for k, v in draw(st.lists(st.tuples(TOKEN, TOKEN), max_size=3)))
    names = draw(st.lists(TOKEN.filter(lambda n: n not in FRAMING), max_size=6, unique=True))
    values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
    headers = [(name, draw(values)) for name in names]
    body = draw(st.binary(max_size=120))
    chunks = None
    if draw(st.booleans()) and body:
        cuts = sorted(set(draw(st.lists(st.integers(1, len(body) - 1), max_size=3)))) if len(body) > 1 else []
        edges = [0, *cuts, len(body)]
        chunks = [b - a for a, b in itertools.pairwise(edges)]
    return Model(method, path, query, headers, body, chunks)


@settings(max_examples=60, deadline=None)
@given(models())
def test_a_model_request_parses_back_at_every_split_point(model: Model) -> None:
    lead = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"  # pipelined behind another request
    wire = lead + model.wire()
    for cut in range(len(wire) + 1):
        results = parse_stream([wire[:cut], wire[cut:]])
        assert len(results) == 2, cut
        head, body = results[1]
        assert head.method == model.method
        assert head.path.decode() == model.path
        assert head.query.decode() == model.query
        sent = [(k.encode(), v.encode()) for k, v in model.headers]
        got = [(k.lower(), v) for k, v in head.headers if k.lower().decode() in {n for n, _ in model.headers}]
        assert got == sent
        assert head.chunked == (model.chunks is not None)
        assert body == model.body


class _Wire:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


@settings(max_examples=100, deadline=None)
# 204 and 304 never carry a body (RFC 9110 15.3.5, 15.4.5): a client reads none whatever follows,
# and the server's rule for them is tested against a live server in the response-rules tests.
@given(st.integers(200, 599).filter(lambda c: c not in (204, 304)),
       st.lists(st.tuples(TOKEN.filter(lambda n: n not in FRAMING), TOKEN), max_size=5, unique_by=lambda h: h[0]),
       st.binary(max_size=200), st.booleans())
def test_the_writer_renders_what_a_client_parses(code: int, headers: list[tuple[str, str]], body: bytes,
                                                  chunked: bool) -> None:
    status = f"{code} Whatever"
    if chunked:
        wire = render_head(status, headers, "Transfer-Encoding: chunked\r\n")
        wire += (chunk(body) if body else b"") + b"0\r\n\r\n"
    else:
        wire = render_head(status, headers, f"Content-Length: {len(body)}\r\n") + body
    resp = http.client.HTTPResponse(_Wire(wire))  # type: ignore[arg-type]
    resp.begin()
    assert resp.status == code
    for name, value in headers:
        assert resp.getheader(name) == value
    assert resp.read() == body
