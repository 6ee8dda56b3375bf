"""A connection's exchange keeps one responder for all its requests: nothing of one
response may leak into the next (framing, status, length, a request body it held)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from tests.helpers import connect, read_response, running, wait_until


def varied_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    if path == "/chunked":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one", b"two"])
    if path == "/created":
        start_response("201 Created", [("Content-Length", "7"), ("X-Kind", "created")])
        return [b"created"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/fail":
        raise RuntimeError("the app fails before any output")
    if path == "/read":
        length = str(len(environ["wsgi.input"].read())).encode()
        start_response("200 OK", [("Content-Length", str(len(length)))])
        return [length]
    body = b"plain"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def test_one_connection_gets_each_response_framed_as_its_own() -> None:
    with running(varied_app) as server, connect(server.port) as sock:
        expected: list[tuple[str, int, bytes, str | None]] = [
            ("/plain", 200, b"plain", None), ("/chunked", 200, b"onetwo", "chunked"), ("/plain", 200, b"plain", None),
            ("/created", 201, b"created", None), ("/empty", 204, b"", None), ("/plain", 200, b"plain", None)]
        for path, status, body, encoding in expected:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
            response = read_response(sock)
            assert response.status == status, path
            assert response.body == body, path
            assert response.headers.get("transfer-encoding") == encoding, path
            assert ("x-kind" in response.headers) == (path == "/created"), path
        sock.sendall(b"HEAD /created HTTP/1.1\r\nHost: t\r\n\r\n")
        head = read_response(sock, "HEAD")
        assert (head.status, head.body, head.headers["content-length"]) == (201, b"", "7")
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).body == b"plain"
        sock.sendall(b"GET /fail HTTP/1.1\r\nHost: t\r\n\r\n")  # the server's 500 closes the connection
        assert read_response(sock).status == 500


def test_a_streamed_request_body_is_not_kept_by_the_idle_connection() -> None:
    """A body larger than max_spool_bytes streams to the app, and its responder holds it
    (to say Connection: close if it is still arriving when the response starts). Read
    whole, the connection is kept; the body must not be kept with it."""
    with running(varied_app, max_spool_bytes=1024) as server, connect(server.port) as sock:
        body = b"x" * 100_000
        sock.sendall(b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        sock.sendall(body)
        response = read_response(sock)
        assert (response.status, response.body) == (200, b"100000")
        assert "connection" not in response.headers
        port = sock.getsockname()[1]
        parked = server._engine.parking.parked
        assert wait_until(lambda: any(c.peer and c.peer[1] == port for c in tuple(parked.values())), 5)
        conn = next(c for c in tuple(parked.values()) if c.peer and c.peer[1] == port)
        responder = conn.exchange._responder
        assert responder is not None
        assert responder._closing is None


def test_a_closed_connection_is_freed_without_the_garbage_collector() -> None:
    """The exchange keeps its responder, which refers back to it: closing the connection
    breaks that, so a connection is freed when it closes, also in a process that disables
    the collector (or freezes what it has)."""
    from gracehttp.connection import Connection

    def ours(port: int) -> list[Any]:
        return [o for o in gc.get_objects() if type(o) is Connection and o.peer and o.peer[1] == port]

    gc.collect()
    gc.disable()
    try:
        with running(varied_app) as server:
            with connect(server.port) as sock:
                port = sock.getsockname()[1]
                for _ in range(3):
                    sock.sendall(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
                    assert read_response(sock).status == 200
                assert ours(port), "the connection was not found while open"
            assert wait_until(lambda: not any(c.peer and c.peer[1] == port for c in tuple(server._engine.open)), 5)
            with connect(server.port) as other:  # the serving thread's last `conn` is another one now
                other.sendall(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(other).status == 200
            assert wait_until(lambda: not ours(port), 5), "the closed connection is still alive"
    finally:
        gc.enable()
