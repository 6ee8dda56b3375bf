"""The parser's and writer's caches of lines and pairs seen before, against a client that
makes every line new: over a real socket, each kept cache stays at its bound, and requests
are still parsed, refused and answered as before."""

from __future__ import annotations

from typing import Any

from gracehttp.http import parser, writer
from tests.helpers import connect, read_response, running


def echo_header_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    # An app echoing a client's value into its headers, as CORS code echoes Origin.
    start_response("200 OK", [("Content-Length", "2"), ("X-Echo", environ.get("HTTP_X_R", "-"))])
    return [b"ok"]


def test_a_client_making_every_line_new_fills_each_cache_only_to_its_bound() -> None:
    with running(echo_header_app) as server:
        sock = connect(server.port)
        with sock:
            for i in range(1500):  # more than every bound, one keep-alive connection, flat out
                sock.sendall(f"GET /p{i}?q={i} HTTP/1.1\r\nHost: t\r\nX-R: {i:x}{'v' * 100}\r\n\r\n".encode())
                resp = read_response(sock)
                assert resp.status == 200
                assert resp.headers["x-echo"].startswith(f"{i:x}v")
            # Still strict afterwards: a bad line is refused though its neighbours are cached.
            sock.sendall(b"GET /p1?q=1 HTTP/1.1\r\nHost: t\r\nX R: 1\r\n\r\n")
            assert read_response(sock).status == 400
    assert len(parser._REQUEST_LINES) <= parser._LINES_MAX
    assert len(parser._FIELDS) <= parser._LINES_MAX
    assert len(writer._CHECKED) <= writer._CHECKED_MAX


def test_an_app_changing_its_environ_does_not_change_the_next_request_with_the_same_head() -> None:
    """The head and its environ keys are kept and shared between requests sending the same
    bytes; each request still gets an environ of its own."""
    seen: list[tuple[str, str, str]] = []

    def meddling_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append((environ["PATH_INFO"], environ["QUERY_STRING"], environ.get("HTTP_X_R", "")))
        environ["PATH_INFO"] = "/meddled"
        environ["HTTP_X_R"] = "meddled"
        environ.pop("QUERY_STRING")
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with running(meddling_app) as server, connect(server.port) as sock:
        for _ in range(300):
            sock.sendall(b"GET /same?q=1 HTTP/1.1\r\nHost: t\r\nX-R: r\r\n\r\n")
            assert read_response(sock).status == 200
    assert seen == [("/same", "q=1", "r")] * 300


def test_heads_taking_turns_on_one_connection_each_get_their_own_environ() -> None:
    """A connection keeps the environ of its last head for the next request with that head:
    a head that differs (a new cookie, another path) gets its own, and a meddling app
    changes neither, nor the keys that come from the connection."""
    seen: list[tuple[str, str, str, str]] = []

    def meddling_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append((environ["PATH_INFO"], environ.get("HTTP_COOKIE", ""), environ["REMOTE_ADDR"],
                     environ["REMOTE_PORT"]))
        environ["REMOTE_ADDR"] = environ["REMOTE_PORT"] = environ["PATH_INFO"] = "meddled"
        environ["HTTP_COOKIE"] = "meddled"
        environ.clear()
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    heads = [b"GET /a HTTP/1.1\r\nHost: t\r\nCookie: n=1\r\n\r\n", b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n",
             b"GET /a HTTP/1.1\r\nHost: t\r\nCookie: n=2\r\n\r\n"]
    with running(meddling_app) as server, connect(server.port) as sock:
        port = str(sock.getsockname()[1])
        for i in range(30):
            sock.sendall(heads[i % 3] if i < 15 else heads[(i // 2) % 3])  # alternating, then in pairs
            assert read_response(sock).status == 200
    expected = {heads[0]: ("/a", "n=1"), heads[1]: ("/b", ""), heads[2]: ("/a", "n=2")}
    sent = [heads[i % 3] if i < 15 else heads[(i // 2) % 3] for i in range(30)]
    assert seen == [(*expected[h], "127.0.0.1", port) for h in sent]


def test_a_trusted_proxys_headers_apply_to_every_request_of_its_connection() -> None:
    """The same head with X-Forwarded-For, again and again on one connection from a trusted
    proxy: each request gets the forwarded client, whatever the app did to the last one."""
    seen: list[tuple[str, str, Any]] = []

    def meddling_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        orig = environ["gracehttp.proxy.orig"]
        seen.append((environ["REMOTE_ADDR"], environ["wsgi.url_scheme"], dict(orig)))
        orig["REMOTE_ADDR"] = "meddled"
        environ["REMOTE_ADDR"] = environ["wsgi.url_scheme"] = "meddled"
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n"
    with running(meddling_app) as server, connect(server.port) as sock:  # 127.0.0.1: trusted by default
        for _ in range(20):
            sock.sendall(head)
            assert read_response(sock).status == 200
    orig = {"REMOTE_ADDR": "127.0.0.1", "REMOTE_HOST": "127.0.0.1", "wsgi.url_scheme": "http"}
    assert seen == [("203.0.113.9", "https", orig)] * 20
