"""The bad-input table of SPEC section 10 over real sockets: each row, at least two cases;
the server answers a normal request afterwards."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.helpers import connect, exchange, get, read_until_close, running, statuses
from tests.unit.test_parser import BAD

CASES = [(status, raw) for status, raws in BAD.items() for raw in raws]
BODY_413 = [
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n" + b"x" * 101,
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"20\r\n" + b"y" * 32 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n",
]


def reading_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"read %d" % len(body)]


@pytest.fixture(scope="module")
def server() -> Any:
    with running(reading_app, max_body_bytes=100, read_header_timeout=1.0, threads=4) as srv:
        yield srv


@pytest.mark.parametrize(("status", "raw"), CASES)
def test_row(server: Any, status: int, raw: bytes) -> None:
    data = exchange(server.port, raw)
    assert statuses(data) == [status]
    assert data.endswith(b"\n")  # the error page came whole, then a clean close
    assert get(server.port, "/").status == 200


@pytest.mark.parametrize("raw", BODY_413)
def test_body_over_max_body_bytes_is_413(server: Any, raw: bytes) -> None:
    assert statuses(exchange(server.port, raw)) == [413]
    assert get(server.port, "/").status == 200


@pytest.mark.parametrize("partial", [b"GET / HTTP/1.1\r\nHost: t\r\n", b"GET /slow"])
def test_head_not_complete_within_read_header_timeout(server: Any, partial: bytes) -> None:
    with connect(server.port, timeout=10) as sock:
        sock.sendall(partial)
        started = time.monotonic()
        data = read_until_close(sock, timeout=10)
        elapsed = time.monotonic() - started
    assert statuses(data) == [408]
    assert 0.8 <= elapsed < 5
    assert get(server.port, "/").status == 200


def test_silent_connection_is_closed_without_an_answer(server: Any) -> None:
    with connect(server.port, timeout=10) as sock:
        assert read_until_close(sock, timeout=10) == b""


def test_bad_input_after_a_good_request_on_the_same_connection(server: Any) -> None:
    data = exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/9.9\r\nHost: t\r\n\r\n")
    assert statuses(data) == [200, 505]
