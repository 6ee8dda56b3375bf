"""The edges of a connection's life, tried as a hostile or careless client would.

Each test names the bound it checks: a lingering close that a trickling client
cannot extend, a short response body that must close the connection, request
bodies collected within ``max_spool_bytes`` and ``read_timeout``, ``Expect:
100-continue`` without a thread per dribbler, empty lines before a request.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gracehttp.http.parser import Limits, find_head_end
from tests.helpers import connect, exchange, get, hello_app, read_response, read_until_close, running, statuses


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = environ["wsgi.input"].read()
    out = b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def not_found_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


# -- lingering close ---------------------------------------------------------


def test_a_lingering_close_ends_two_seconds_after_it_began_whatever_the_client_trickles() -> None:
    """After an error answer the server half-closes and reads until the client closes,
    for 2 s from the start: bytes the client keeps sending do not extend it."""
    with running(hello_app) as server, connect(server.port) as sock:
        sock.sendall(b"NOT A REQUEST\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(1000).startswith(b"HTTP/1.1 400")
        began = time.monotonic()
        cut = None
        while time.monotonic() - began < 6:
            try:
                sock.send(b"x")  # one byte every 100 ms: each used to restart the wait
            except OSError:
                cut = time.monotonic() - began
                break
            time.sleep(0.1)  # the client's pace, not a synchronisation
        assert cut is not None, "the server never closed a lingering connection that kept trickling"
        assert cut < 3.5


# -- short response bodies -------------------------------------------------------


def _short_body_answers(port: int) -> bytes:
    """A request and a pipelined one behind it; everything the server sends."""
    return exchange(port, b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")


def test_a_one_block_body_short_of_its_content_length_closes_the_connection() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "10")])
        return [b"123456789"]

    with running(app) as server:
        data = _short_body_answers(server.port)
    assert statuses(data) == [200]  # the second response would be read as the body's last byte
    assert b"Connection: close\r\n" in data
    assert data.endswith(b"\r\n\r\n123456789")


def test_a_file_shorter_than_its_content_length_closes_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"f" * 100)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("Content-Length", "150")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    with running(app) as server:
        data = _short_body_answers(server.port)
    assert statuses(data) == [200]
    assert b"Connection: close\r\n" in data
    assert data.endswith(b"\r\n\r\n" + b"f" * 100)


# -- request bodies: bounded collection ----------------------------------------


def test_a_body_past_max_spool_bytes_reaches_the_app_before_it_is_whole() -> None:
    """The server collects at most max_spool_bytes before calling the app: an app that
    answers without reading is called while the client is still sending."""
    with running(not_found_app, max_spool_bytes=1 << 20) as server, connect(server.port) as sock:
        sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (100 << 20))
        sock.sendall(b"x" * (2 << 20))  # 2 MiB of the 100 MiB, then the client waits
        resp = read_response(sock)
        assert resp.status == 404
        assert resp.headers["connection"] == "close"  # the rest of the body is not read


def test_the_default_spool_bound_is_16_mib() -> None:
    with running(not_found_app) as server, connect(server.port, timeout=10) as sock:
        sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (100 << 20))
        sock.sendall(b"x" * (17 << 20))
        assert read_response(sock).status == 404


def test_a_body_past_max_spool_bytes_is_read_whole_by_an_app_that_reads_it() -> None:
    payload = bytes(range(256)) * (3 * 4096)  # 3 MiB: 1 MiB collected, the rest streamed
    with running(echo_app, max_spool_bytes=1 << 20) as server:
        for headers in ({"Content-Length": str(len(payload))}, {"Transfer-Encoding": "chunked"}):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            body: Any = payload if "Content-Length" in headers else iter([payload[i:i + 70_000]
                                                                         for i in range(0, len(payload), 70_000)])
            conn.request("POST", "/u", body=body, headers=headers, encode_chunked="Content-Length" not in headers)
            resp = conn.getresponse()
            assert resp.read() == b"%d %s" % (len(payload), hashlib.sha256(payload).hexdigest().encode())
            conn.request("GET", "/again")  # the connection stays in step
            assert conn.getresponse().status == 200
            conn.close()


def test_read_timeout_cuts_a_client_that_uploads_flat_out() -> None:
    """A client that keeps the socket buffer full never leaves the server waiting; the
    body's deadline must still hold (408), counted from the head's first byte."""
    with running(echo_app, read_timeout=0.5, max_spool_bytes=1 << 40) as server, \
            connect(server.port, timeout=5) as sock:
        sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (1 << 40))
        began = time.monotonic()
        answer = b""

        def read_answer() -> None:
            nonlocal answer
            with contextlib.suppress(OSError):
                answer = sock.recv(1000)

        reader = threading.Thread(target=read_answer)
        reader.start()
        block = b"x" * (1 << 20)
        with contextlib.suppress(OSError):
            while reader.is_alive() and time.monotonic() - began < 5:
                sock.send(block)
        reader.join(5)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert time.monotonic() - began < 3


def test_expect_continue_dribblers_hold_no_request_thread() -> None:
    """Expect: 100-continue bodies are collected parked like others: two clients dribbling
    theirs to a 2-thread server leave it free to answer a third at once."""
    with running(echo_app, threads=2) as server:
        dribblers = [connect(server.port) for _ in range(2)]
        try:
            for sock in dribblers:
                sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n")
                assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
                sock.sendall(b"a")
            began = time.monotonic()
            assert get(server.port, "/third", timeout=5).status == 200
            assert time.monotonic() - began < 1.0
            for sock in dribblers:  # and the dribbled bodies still reach the app whole
                sock.sendall(b"b" * 99)
                resp = read_response(sock, "POST")
                assert resp.body == b"100 %s" % hashlib.sha256(b"a" + b"b" * 99).hexdigest().encode()
        finally:
            for sock in dribblers:
                sock.close()


def test_100_continue_is_never_written_into_a_started_response() -> None:
    """An app that starts its response with write() and then reads the body: the 100 was
    sent before the app ran, never in the middle of the chunked body."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"start:")
        return [environ["wsgi.input"].read()]

    with running(app) as server, connect(server.port) as sock:
        sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        sock.settimeout(1.0)
        first = b""
        with contextlib.suppress(TimeoutError):
            first = sock.recv(1000)
        sock.settimeout(5)
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first
        sock.sendall(b"data")
        resp = read_response(sock, "POST")
        assert resp.body == b"start:data"


# -- empty lines ---------------------------------------------------------------


def test_up_to_eight_empty_lines_before_a_request_are_ignored() -> None:
    with running(hello_app) as server:
        for n in (1, 2, 8):
            data = exchange(server.port, b"\r\n" * n + b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert statuses(data) == [200], n
        assert statuses(exchange(server.port, b"\r\n" * 9 + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")) == [400]
        # Between keep-alive requests too, in separate packets.
        with connect(server.port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock).status == 200
            sock.sendall(b"\r\n\r\n")
            sock.sendall(b"\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock).status == 200


def test_a_stray_crlf_after_a_request_does_not_hold_the_drain() -> None:
    """A keep-alive connection whose client sent one CRLF after its request is idle, not a
    begun request: the drain closes it after its short grace, not at read_header_timeout."""
    with running(hello_app, read_header_timeout=4.0) as server, connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n\r\n")
        assert read_response(sock).status == 200
        began = time.monotonic()
        report = server.shutdown()
        assert report.drained
        assert time.monotonic() - began < 2.0
        assert read_until_close(sock, 2) == b""


# -- the head scan ---------------------------------------------------------------


def test_the_head_end_is_found_scanning_only_new_bytes_at_every_split() -> None:
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"y" * 50 + b"\r\n\r\nNEXT"
    want = find_head_end(head, Limits())
    for cut in range(1, len(head)):
        first, rest = head[:cut], head[cut:]
        end = find_head_end(first, Limits())
        if end < 0:
            end = find_head_end(first + rest, Limits(), max(0, len(first) - 3))
        assert end == want, cut


def test_requests_trickled_a_byte_at_a_time_are_answered_whole() -> None:
    """A short read parks a plain connection without a second read to learn it is
    drained; each byte that arrives after must still wake it. Two pipelined requests,
    heads and a body sent one byte per segment (TCP_NODELAY, the server's turn between
    bytes), are both answered, the body whole."""
    body = b"0123456789" * 3
    raw = (b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
           + b"GET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    with running(echo_app, threads=2) as server, connect(server.port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(raw)):
            sock.sendall(raw[i:i + 1])
            time.sleep(0.002)  # the trickling client's pace: one segment per byte
        data = read_until_close(sock)
    assert statuses(data) == [200, 200]
    assert b"\r\n\r\n%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode()) in data
    assert data.endswith(b"\r\n\r\n0 " + hashlib.sha256(b"").hexdigest().encode())


# -- pipelining ------------------------------------------------------------------------


def test_a_client_pipelining_many_requests_takes_turns_with_others() -> None:
    """5,000 pipelined requests on one connection: after a turn of them it goes to the back
    of the line, so another client's request is answered long before the 5,000th."""
    n = 5000
    with running(hello_app, threads=1) as server, connect(server.port, timeout=10) as a:
        a.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * n)
        resp = get(server.port, "/b", timeout=10)
        assert resp.status == 200
        received = b""
        a.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while chunk := a.recv(1 << 20):
                received += chunk
        assert received.count(b"HTTP/1.1 200") < n, "the other client waited for all 5,000"
        a.setblocking(True)
        a.settimeout(10)
        while received.count(b"HTTP/1.1 200") < n:  # and every one is answered, in order
            chunk = a.recv(1 << 20)
            assert chunk
            received += chunk
        assert statuses(received) == [200] * n


def _answer_with_eof(port: int, request: bytes, within: float = 4.0) -> tuple[bytes, bool]:
    """The whole answer to `request`, and whether its EOF came `within` seconds (before the
    5 s timeout)."""
    with connect(port) as sock:
        sock.sendall(request)
        began = time.monotonic()
        answer = read_until_close(sock, timeout=5)
        return answer, time.monotonic() - began < within


def test_a_closing_response_reaches_its_client_whole_before_the_apps_close_runs() -> None:
    """A response that closes the connection goes out with its FIN (one segment). When the
    app's iterable has a ``close()`` (user code: a framework's teardown), the client must
    not wait for it: the connection half-closes with the bytes, before ``close()`` ends (a
    lone client: nothing is queued behind it, so its FIN is not held, `gracehttp.closer`).
    The same for a streamed body with a Content-Length (what Flask sends), from its last block."""
    release = threading.Event()
    closed = threading.Event()

    class Body(list[bytes]):
        def close(self) -> None:
            release.wait(10)
            closed.set()

    def listed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body([b"wholeagain"])

    def streamed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "10")])
        try:
            yield b"whole"
            yield b"again"
        finally:
            release.wait(10)
            closed.set()

    for app in (listed, streamed):
        release.clear()
        closed.clear()
        with running(app) as server:
            try:
                answer, eof = _answer_with_eof(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                ended = eof and not closed.is_set()  # EOF while the app's close() still waited
            finally:
                release.set()
            assert answer.startswith(b"HTTP/1.1 200")
            assert answer.endswith(b"\r\n\r\nwholeagain"), answer
            assert ended, f"the client waited for the app's close() ({app.__name__})"
            assert closed.wait(5)
    # Without a close(), the bytes wait for the close that follows at once: whole, then EOF.
    with running(hello_app) as server:
        for request in (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"):
            answer, eof = _answer_with_eof(server.port, request)
            assert eof, "no EOF: the response waited for a close that never came"
            assert answer.startswith(b"HTTP/1.")
            assert b"Connection: close" in answer
            assert answer.endswith(b"\r\n\r\nhello"), answer


def test_a_closing_response_survives_client_bytes_sent_during_the_app() -> None:
    """The client sends more (a stray CRLF, or a pipelined request the drain will not
    serve) while the app runs a request whose answer closes the connection. The close
    then resets the connection, which must not take the answer with it: its bytes and
    FIN are sent before the close."""
    entered, extra_sent = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        entered.set()
        extra_sent.wait(5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"answered"]

    with running(app) as server:
        for extra in (b"\r\n", b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n"):
            entered.clear()
            extra_sent.clear()
            with connect(server.port) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert entered.wait(5)
                sock.sendall(extra)
                time.sleep(0.05)  # pacing: the extra bytes reach the server's socket before the answer
                extra_sent.set()
                answer = read_until_close(sock, timeout=5)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert answer.endswith(b"\r\n\r\nanswered"), answer


# The child only sleeps and exits: none of the locks another thread might hold is touched.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_closing_response_ends_at_once_though_a_forked_child_holds_the_socket() -> None:
    """An app that forks without exec leaves the child a copy of the connection, so closing
    the server's descriptor sends nothing: the half-close after the last bytes still does."""
    children: list[int] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        pid = os.fork()
        if pid == 0:  # the child: holds the inherited socket for 2 s, runs nothing else
            time.sleep(2)
            os._exit(0)
        children.append(pid)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"forked"]

    try:
        with running(app) as server:
            answer, eof = _answer_with_eof(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                                           within=1.5)
            assert answer.endswith(b"\r\n\r\nforked"), answer
            assert eof, "the EOF waited for the child to exit"
    finally:
        for pid in children:
            os.waitpid(pid, 0)
