"""HTTP/1.1 behaviour over real loopback sockets."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from typing import Any

import pytest

from gracehttp import Config, GracefulServer
from tests.helpers import (
    connect,
    exchange,
    get,
    hello_app,
    read_response,
    read_until_close,
    running,
    statuses,
    wait_until,
)


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    info = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {environ['QUERY_STRING']} {len(body)}\n"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [info.encode() + body]


def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    with running(echo_app) as server, connect(server.port) as sock:
        for i in range(20):
            sock.sendall(b"GET /n/%d?x=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (i, i))
            resp = read_response(sock)
            assert resp.status == 200
            assert resp.body == b"GET /n/%d x=%d 0\n" % (i, i)
            assert resp.headers["server"] == "gracehttp"
            assert "date" in resp.headers


def test_pipelined_requests_are_answered_in_order() -> None:
    with running(echo_app) as server:
        raw = b"".join(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(5))
        raw += b"POST /last HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        data = exchange(server.port, raw)
        assert statuses(data) == [200] * 6
        order = [data.find(b"GET /p%d" % i) for i in range(5)] + [data.find(b"POST /last  3\nabc")]
        assert -1 not in order
        assert order == sorted(order)


def test_chunked_request_body_and_streamed_chunked_response() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (part for part in (b"got:", body, b"", b"!"))

    with running(app) as server, connect(server.port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n")
        resp = read_response(sock)
        assert resp.headers.get("transfer-encoding") == "chunked"
        assert resp.body == b"got:wikipedia!"


def test_http10_response_is_close_delimited_without_length() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return iter([b"a", b"b"])

    with running(app) as server:
        data = exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert b"Connection: close" in data
        assert data.endswith(b"\r\n\r\nab")


def test_http10_keep_alive_when_asked() -> None:
    with running() as server, connect(server.port) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            resp = read_response(sock)
            assert resp.status == 200
            assert resp.headers["connection"] == "keep-alive"


def test_expect_100_continue_is_sent_when_the_body_is_read() -> None:
    with running(echo_app) as server, connect(server.port) as sock:
        sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        resp = read_response(sock)
        assert resp.body == b"POST /u  4\ndata"


def test_expect_100_continue_past_max_body_bytes_is_413_and_never_invited() -> None:
    with running(hello_app, max_body_bytes=1000) as server, connect(server.port) as sock:
        sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 4000\r\nExpect: 100-continue\r\n\r\n")
        data = read_until_close(sock)
        assert data.startswith(b"HTTP/1.1 413")
        assert b"100 Continue" not in data


def test_head_sends_headers_only() -> None:
    with running() as server, connect(server.port) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = read_response(sock, method="HEAD")
        assert head.status == 200
        assert head.headers["content-length"] == "5"
        assert head.body == b""
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).body == b"hello"  # no stray body bytes after the HEAD answer


def test_file_wrapper_uses_the_file_and_sets_length(tmp_path: Any) -> None:
    payload = os.urandom(300_000)
    path = tmp_path / "blob"
    path.write_bytes(payload)
    closed = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        f = open(path, "rb")  # noqa: SIM115 - closed by the server through the wrapper
        wrapper = environ["wsgi.file_wrapper"](f, 8192)
        original = wrapper.close
        def close() -> None:
            original()
            closed.set()
        wrapper.close = close
        return wrapper

    with running(app) as server:
        resp = get(server.port)
        assert resp.body == payload
        assert resp.headers["content-length"] == str(len(payload))
        assert closed.wait(5)


def test_write_callable_and_exc_info() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("500 Oops", [("X-First", "1")])
        try:
            raise ValueError("replace the status")
        except ValueError:
            import sys
            write = start_response("201 Created", [("Content-Length", "6")], sys.exc_info())
        write(b"wri")
        return [b"tes"]

    with running(app) as server:
        resp = get(server.port)
        assert resp.status == 201
        assert resp.body == b"writes"
        assert "x-first" not in resp.headers


def test_app_error_gives_500_logged_and_server_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("kaboom")
        return hello_app(environ, start_response)

    with caplog.at_level(logging.ERROR, logger="gracehttp"), running(app) as server:
        assert get(server.port, "/boom").status == 500
        assert get(server.port, "/").status == 200
    assert any("kaboom" in (r.exc_text or "") or (r.exc_info and "kaboom" in str(r.exc_info[1]))
               for r in caplog.records)


@pytest.mark.parametrize("header", [("X-Evil", "a\r\nSet-Cookie: x=1"), ("X-Evil", "a\nb"), ("Bad Name", "v")])
def test_response_headers_with_cr_or_lf_are_refused(header: tuple[str, str]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [header])
        return [b"never"]

    with running(app) as server:
        data = exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert statuses(data) == [500]
        assert b"Set-Cookie" not in data
        assert b"never" not in data


def test_iterable_close_is_called_when_the_client_goes_away() -> None:
    closed = threading.Event()
    started = threading.Event()

    class Slow:
        def __iter__(self) -> Any:
            started.set()
            for _ in range(10_000):
                yield b"x" * 65536

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] != "/stream":
            return hello_app(environ, start_response)
        start_response("200 OK", [])
        return Slow()

    with running(app, write_timeout=5) as server:
        sock = connect(server.port)
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        assert started.wait(5)
        sock.recv(1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST
        assert closed.wait(10)
        assert get(server.port).status == 200


def test_unread_body_is_discarded_and_connection_reused() -> None:
    with running(hello_app) as server, connect(server.port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"z" * 1000)
        assert read_response(sock).status == 200
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).body == b"hello"


def test_unix_socket() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.sock")
        with running(addr=f"unix:{path}") as server:
            assert server.addresses == [f"unix:{path}"]
            assert server.port is None
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(path)
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert read_until_close(sock).endswith(b"hello")
        assert not os.path.exists(path)


def test_ipv6_and_several_listeners() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    with running(addr="[::1]:0", addrs=("127.0.0.1:0",)) as server:
        v6, v4 = server.addresses
        assert v6.startswith("[::1]:")
        assert v4.startswith("127.0.0.1:")
        port6 = int(v6.rsplit(":", 1)[1])
        with socket.create_connection(("::1", port6)) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert read_until_close(sock).endswith(b"hello")
        assert get(int(v4.rsplit(":", 1)[1])).body == b"hello"


def test_prebound_listener_and_fd_address() -> None:
    pre = socket.create_server(("127.0.0.1", 0))
    fd_sock = socket.create_server(("127.0.0.1", 0))
    fd_sock.set_inheritable(True)
    cfg = Config(app=hello_app, addr=f"fd://{fd_sock.fileno()}", listeners=(pre,))
    server = GracefulServer(cfg).run_in_background()
    try:
        assert get(pre.getsockname()[1]).body == b"hello"
        assert get(fd_sock.getsockname()[1]).body == b"hello"
        assert server.fds == [fd_sock.fileno(), pre.fileno()]
    finally:
        server.close()
        fd_sock.detach()  # the server owned and closed the descriptor


def test_port_zero_resolves_and_bind_errors_raise_in_caller() -> None:
    with running() as server:
        assert server.port
        assert server.port > 0
        assert server.addresses == [f"127.0.0.1:{server.port}"]
        assert server.server_address == ("127.0.0.1", server.port)
        clash = GracefulServer(Config(app=hello_app, addr=f"127.0.0.1:{server.port}"))
        with pytest.raises(OSError, match="in use"):
            clash.run_in_background()
        assert clash.status() == "stopped"


def test_routes_before_app() -> None:
    class Api:
        def register_routes(self, router: Any) -> None:
            router.get("/users/<int:uid>", lambda request, uid: {"id": uid})
            router.post("/echo", lambda request: request.get_data())

    server = GracefulServer(Config(app=hello_app, addr="127.0.0.1:0"), Api()).run_in_background()
    try:
        resp = get(server.port, "/users/7")
        assert resp.status == 200
        assert resp.body == b'{"id": 7}'
        assert get(server.port, "/echo", method="POST", body=b"hi").body == b"hi"
        assert get(server.port, "/echo").status == 405
        assert get(server.port, "/other").body == b"hello"
    finally:
        server.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed `sock` (end of stream); False while it stays open."""
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_past_max_connections_a_client_is_served_and_idle_connections_give_way() -> None:
    from gracehttp.parking import EVICT_IDLE_AFTER

    with running(max_connections=2) as server:
        held = [connect(server.port), connect(server.port)]
        for s in held:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s).status == 200
        # Past the limit, a client that sends its request at once is served at once.
        assert get(server.port, timeout=5).status == 200
        # A connection that sends nothing past the limit is closed after a short grace.
        with connect(server.port) as silent:
            began = time.monotonic()
            assert read_until_close(silent, 5) == b""
            assert time.monotonic() - began < 1.0
        # Once the held keep-alive connections have been idle a while, a new connection
        # takes the slot of one of them (closed cleanly, as at its idle timeout).
        time.sleep(EVICT_IDLE_AFTER + 0.1)  # how long "a while" is, not a synchronisation
        with connect(server.port) as late:
            assert wait_until(lambda: any(closed_by_server(s) for s in held), 5)
            late.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(late).status == 200
        for s in held:
            s.close()


def test_server_header_and_keep_alive_settings() -> None:
    with running(server_header="edge/1") as server:
        assert get(server.port).headers["server"] == "edge/1"
    with running(server_header=None, keep_alive=False) as server:
        data = exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert statuses(data) == [200]  # one answer, then the connection closes
        assert b"Connection: close" in data
        assert b"Server:" not in data


def test_reuse_port_lets_two_servers_share_a_port() -> None:
    with running(reuse_port=True) as first, running(addr=f"127.0.0.1:{first.port}", reuse_port=True) as second:
        assert second.port == first.port
        assert get(first.port).status == 200


@pytest.mark.parametrize("chunked", [False, True])
def test_large_upload_read_in_pieces(chunked: bool) -> None:
    payload = os.urandom(8 * 1024 * 1024)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        size = 0
        digest = hashlib.sha256()
        while True:
            block = stream.read(100_000)
            if not block:
                break
            size += len(block)
            digest.update(block)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d %s" % (size, digest.hexdigest().encode())]

    expected = b"%d %s" % (len(payload), hashlib.sha256(payload).hexdigest().encode())
    with running(app) as server, connect(server.port, timeout=30) as sock:
        if chunked:
            head = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            body = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 65536]), payload[i:i + 65536])
                            for i in range(0, len(payload), 65536)) + b"0\r\n\r\n"
        else:
            head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(payload)
            body = payload
        sock.sendall(head + body)
        assert read_response(sock).body == expected


def test_readline_with_limits_and_iteration() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        first = stream.readline(3)
        rest_of_line = stream.readline()
        lines = list(stream)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"|".join([first, rest_of_line, *lines])]

    with running(app) as server:
        resp = get(server.port, "/", method="POST", body=b"abcdef\nline2\nlast")
        assert resp.body == b"abc|def\n|line2\n|last"


def test_router_methods_and_mount() -> None:
    class Api:
        def register_routes(self, router: Any) -> None:
            router.put("/item/<name>", lambda request, name: f"put {name}")
            router.patch("/item/<name>", lambda request, name: f"patch {name}")
            router.delete("/item/<name>", lambda request, name: b"deleted")
            router.route("/both", lambda request: "both", methods=["GET", "POST"])
            router.mount("/legacy", lambda environ, start_response: (
                start_response("200 OK", [("Content-Type", "text/plain")]),
                [f"{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}".encode()])[1])

    server = GracefulServer(Config(addr="127.0.0.1:0"), Api()).run_in_background()
    try:
        assert get(server.port, "/item/x", method="PUT").body == b"put x"
        assert get(server.port, "/item/x", method="PATCH").body == b"patch x"
        assert get(server.port, "/item/x", method="DELETE").body == b"deleted"
        assert get(server.port, "/item/x").status == 405
        assert get(server.port, "/both", method="POST").body == b"both"
        assert get(server.port, "/legacy/a/b").body == b"/legacy|/a/b"
        assert get(server.port, "/nowhere").status == 404  # no app: werkzeug's 404
    finally:
        server.close()


def test_a_client_reset_is_a_quiet_close(caplog: pytest.LogCaptureFixture) -> None:
    """A client that aborts (RST) an idle keep-alive connection is no server error."""
    import struct

    with running(hello_app) as server:
        socks = []
        for _ in range(5):
            sock = connect(server.port)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock).status == 200
            socks.append(sock)
        with caplog.at_level(logging.ERROR, logger="gracehttp"):
            for sock in socks:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # linger 0: the kernel sends RST
            assert wait_until(lambda: server._engine is not None and len(server._engine.open) == 0, 5)
        assert get(server.port, "/").status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def environ_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with the environ keys named in the query, one ``key=repr(value)`` per line."""
    keys = environ["QUERY_STRING"].split(",")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("\n".join(f"{k}={environ.get(k)!r}" for k in keys)).encode()]


def test_cookie_fields_join_with_a_semicolon_and_werkzeug_reads_every_cookie() -> None:
    """Two Cookie fields: joined with "; " (RFC 6265's separator), not the "," of other
    repeated fields, which werkzeug would read as one cookie's value."""
    from werkzeug.wrappers import Request

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        cookies = Request(environ).cookies
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['HTTP_COOKIE']}|{sorted(cookies.items())}|{environ['HTTP_X_ONE']}".encode()]

    with running(app) as server:
        data = exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nCookie: a=1; b=2\r\nX-One: p\r\n"
                                     b"Cookie: c=3\r\nX-One: q\r\nConnection: close\r\n\r\n")
    assert data.endswith(b"\r\n\r\na=1; b=2; c=3|[('a', '1'), ('b', '2'), ('c', '3')]|p,q")


def test_remote_host_is_the_client_address_and_one_process_is_not_multiprocess() -> None:
    with running(environ_app) as server:
        body = get(server.port, "/?REMOTE_HOST,REMOTE_ADDR,wsgi.multiprocess,wsgi.multithread").body
    assert body.decode().splitlines() == ["REMOTE_HOST='127.0.0.1'", "REMOTE_ADDR='127.0.0.1'",
                                          "wsgi.multiprocess=False", "wsgi.multithread=True"]


def test_server_answers_use_rfc_9110_reason_phrases() -> None:
    with running(hello_app, max_body_bytes=10, max_request_line=100) as server:
        too_large = exchange(server.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n")
        too_long = exchange(server.port, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert too_large.startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert too_long.startswith(b"HTTP/1.1 414 URI Too Long\r\n")
