"""Request smuggling (RFC 9112 section 6 and the field rules of section 5), one test per
rule, over a real socket: the request is refused with its status and the connection is
closed, so nothing after it on the wire is ever read as a second request."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import exchange, get, running, statuses

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
RULES = {
    "content-length and transfer-encoding together":
        (400, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "two differing content-lengths":
        (400, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n"),
    "a content-length list":
        (400, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0, 40\r\n\r\n"),
    "a signed content-length":
        (400, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +0\r\n\r\n"),
    "transfer-encoding not ending in chunked":
        (501, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    "chunked twice":
        (501, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
    "a chunk size that overflows":
        (400, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"10000000000000000000001\r\nx\r\n0\r\n\r\n"),
    "a chunk size with a sign":
        (400, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n"),
    "bare LF line endings":
        (400, b"GET / HTTP/1.1\nHost: t\n\n"),
    "a bare CR inside the head":
        (400, b"GET / HTTP/1.1\r\nHost: t\rX-Evil: 1\r\n\r\n"),
    "whitespace before the colon":
        (400, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    "a NUL byte in a field value":
        (400, b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n"),
    "a NUL byte in the target":
        (400, b"GET /a\x00b HTTP/1.1\r\nHost: t\r\n\r\n"),
    "an invalid field-name character":
        (400, b"GET / HTTP/1.1\r\nHost: t\r\nX(y): a\r\n\r\n"),
    "obsolete line folding":
        (400, b"POST / HTTP/1.1\r\nHost: t\r\nX: a\r\n Transfer-Encoding: chunked\r\n\r\n"),
}


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['PATH_INFO']} host={environ.get('HTTP_HOST')} body={len(body)}".encode()]


@pytest.fixture(scope="module")
def server() -> Any:
    with running(echo, threads=4, read_header_timeout=2.0) as srv:
        yield srv


@pytest.mark.parametrize("rule", list(RULES))
def test_rule(server: Any, rule: str) -> None:
    status, raw = RULES[rule]
    data = exchange(server.port, raw + SMUGGLED)
    assert statuses(data) == [status], data  # one answer: the smuggled request is never read
    assert b"/smuggled" not in data
    assert b"Connection: close" in data
    assert get(server.port, "/after").status == 200


def test_identical_duplicate_content_lengths_are_one(server: Any) -> None:
    """RFC 9110 section 8.6 lets a recipient treat identical repeated values as one."""
    raw = b"POST /dup HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    data = exchange(server.port, raw)
    assert statuses(data) == [200]
    assert data.endswith(b"/dup host=t body=3")


def test_absolute_form_target_wins_over_host(server: Any) -> None:
    """RFC 9112 section 3.2.2: with an absolute-form target, its authority is the host."""
    raw = b"GET http://api.example:8080/p?q=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n"
    data = exchange(server.port, raw)
    assert statuses(data) == [200]
    assert data.endswith(b"/p host=api.example:8080 body=0")
