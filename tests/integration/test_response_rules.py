"""What an app cannot do to the wire (issue 7): inject headers, send a body where HTTP has
none, or desynchronise the stream with a wrong Content-Length; bad status lines are 500."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.helpers import connect, exchange, get, read_until_close, running, statuses, wait_until

PLAIN = [("Content-Type", "text/plain")]


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path == "/status":
        start_response(environ["QUERY_STRING"].replace("+", " ").replace("%0D%0A", "\r\n"), PLAIN)
        return [b"body"]
    if path in ("/204", "/304"):
        start_response(f"{path[1:]} No Body", PLAIN)
        return [b"must not be sent"]
    if path in ("/204-length", "/304-length"):  # a framework that sets Content-Length on every response
        start_response(f"{path[1:4]} No Body", [*PLAIN, ("Content-Length", "16")])
        return [b"must not be sent"]
    if path == "/own-date-server":
        start_response("200 OK", [*PLAIN, ("Date", "Tue, 01 Jan 2030 00:00:00 GMT"), ("server", "mine/1.0"),
                                  ("Content-Length", "2")])
        return [b"ok"]
    if path == "/long":  # says 4, yields 10
        start_response("200 OK", [("Content-Length", "4")])
        return [b"12345", b"67890"]
    if path == "/short":  # says 10, yields 4
        start_response("200 OK", [("Content-Length", "10")])
        return [b"12", b"34"]
    if path == "/header":
        name, _, value = environ["QUERY_STRING"].partition("=")
        start_response("200 OK", [(bytes.fromhex(name).decode("latin-1"), bytes.fromhex(value).decode("latin-1"))])
        return [b"body"]
    start_response("200 OK", [*PLAIN, ("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture(scope="module")
def server() -> Any:
    with running(app, threads=4) as srv:
        yield srv


@pytest.mark.parametrize(("name", "value"), [
    ("X-Ok", "a\x00b"), ("X-Ok", "a\rb"), ("X-Ok", "a\nSet-Cookie: x=1"), ("X\x00Y", "v"), ("X Y", "v"),
    ("X:Y", "v"), ("", "v"),
])
def test_header_injection_is_a_500_and_nothing_of_it_is_sent(server: Any, caplog: pytest.LogCaptureFixture,
                                                              name: str, value: str) -> None:
    query = f"{name.encode('latin-1').hex()}={value.encode('latin-1').hex()}"
    with caplog.at_level(logging.ERROR, logger="gracehttp"):
        data = exchange(server.port, f"GET /header?{query} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert statuses(data) == [500]
    assert b"Set-Cookie" not in data
    assert b"body" not in data
    assert any("header" in r.getMessage().lower() or r.exc_info for r in caplog.records)
    assert get(server.port, "/").status == 200


@pytest.mark.parametrize("status", ["2000 OK", "99 Too Low", "600 Too High", "abc OK", "200 OK%0D%0AX: y", ""])
def test_a_bad_status_line_is_a_500(server: Any, status: str) -> None:
    data = exchange(server.port, f"GET /status?{status.replace(' ', '+')} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert statuses(data) == [500]
    assert b"X: y" not in data


@pytest.mark.parametrize("path", ["/204", "/304"])
def test_no_body_on_204_304_and_the_stream_stays_in_sync(server: Any, path: str) -> None:
    data = exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"
                                 "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    assert statuses(data) == [int(path[1:]), 200]
    assert b"must not be sent" not in data
    first, second = data.split(b"HTTP/1.1 200 OK")
    assert first.endswith(b"\r\n\r\n")  # the next response starts right after the head
    assert b"Content-Length" not in first
    assert second.endswith(b"\r\n\r\nok")


def test_no_body_on_head_and_the_stream_stays_in_sync(server: Any) -> None:
    data = exchange(server.port, b"HEAD /short HTTP/1.1\r\nHost: t\r\n\r\n"
                                 b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert statuses(data) == [200, 200]
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"Content-Length: 10" in head  # what a GET would have had
    assert rest.startswith(b"HTTP/1.1 200 OK")  # no body after it
    assert rest.endswith(b"\r\n\r\nok")


def test_more_body_than_content_length_is_cut_and_the_connection_closed(
        server: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gracehttp"):
        with connect(server.port) as sock:
            sock.sendall(b"GET /long HTTP/1.1\r\nHost: t\r\n\r\n")
            data = read_until_close(sock)  # never reused: the app's framing cannot be trusted
        assert data.endswith(b"\r\n\r\n1234")
        # Logged once the app returns, which may be just after the client saw the close: the last
        # bytes and the FIN of a lone client's closing response leave inside the app's call.
        assert wait_until(lambda: any("more than its Content-Length" in r.getMessage() for r in caplog.records), 5)


def test_less_body_than_content_length_closes_the_connection(server: Any) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /short HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = read_until_close(sock)
    assert data.endswith(b"\r\n\r\n1234")  # the client sees the short body end at the close
    assert statuses(data) == [200]  # and the pipelined request is not answered on a broken stream


def _head_fields(data: bytes) -> list[tuple[bytes, bytes]]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])]


def test_an_apps_own_date_and_server_headers_win_and_are_sent_once(server: Any) -> None:
    raw = b"GET /own-date-server HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    fields = _head_fields(exchange(server.port, raw))
    assert [v for n, v in fields if n == b"date"] == [b"Tue, 01 Jan 2030 00:00:00 GMT"]
    assert [v for n, v in fields if n == b"server"] == [b"mine/1.0"]
    # Without its own, the app's response gets exactly one of the server's Date.
    fields = _head_fields(exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    assert len([v for n, v in fields if n == b"date"]) == 1


def test_a_204_drops_the_apps_content_length_and_a_304_keeps_it(server: Any) -> None:
    """RFC 9110 section 8.6: no Content-Length in a 204; a 304's is the length the 200 would
    have had, which only the app knows. Neither has a body, and the next response follows."""
    for path, length in (("/204-length", []), ("/304-length", [b"16"])):
        data = exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"
                                     "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        assert statuses(data) == [int(path[1:4]), 200], path
        assert [v for n, v in _head_fields(data) if n == b"content-length"] == length, path
        assert b"must not be sent" not in data

