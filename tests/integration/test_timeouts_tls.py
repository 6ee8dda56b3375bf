"""Timeouts (idle, read, write) and TLS, over real sockets."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any

import pytest

from tests.helpers import connect, get, read_response, read_until_close, running, statuses


def test_idle_keep_alive_connection_is_closed_after_idle_timeout() -> None:
    with running(idle_timeout=0.5) as server, connect(server.port, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).status == 200
        started = time.monotonic()
        assert sock.recv(10) == b""  # clean close, no answer
        assert 0.4 <= time.monotonic() - started < 3


def test_body_slower_than_read_timeout_gets_408() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with running(app, read_timeout=0.6) as server, connect(server.port, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        started = time.monotonic()
        data = read_until_close(sock)
        assert statuses(data) == [408]
        assert 0.5 <= time.monotonic() - started < 3


def test_client_that_stops_reading_is_cut_after_write_timeout() -> None:
    done = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] != "/big":
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]
        start_response("200 OK", [])

        def body() -> Any:
            try:
                for _ in range(100_000):
                    yield b"x" * 65536
            finally:
                done.set()
        return body()

    with running(app, write_timeout=0.5, threads=2) as server:
        sock = connect(server.port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        assert done.wait(10)  # the server gave up and closed the app's iterable
        assert get(server.port).status == 200  # and the thread is free again
        sock.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_keep_alive_and_chunked(cert: tuple[str, str]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([environ["wsgi.url_scheme"].encode(), b":", body])

    crt, key = cert
    ctx = ssl.create_default_context(cafile=crt)
    with running(app, certfile=crt, keyfile=key) as server:
        assert server.is_https
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
            for i in range(3):
                sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\n%d" % i)
                resp = read_response(sock)  # type: ignore[arg-type]
                assert resp.body == b"https:%d" % i
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname = False
        old.verify_mode = ssl.CERT_NONE
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw_old, \
                pytest.raises(ssl.SSLError):  # TLS 1.1 is refused
            old.wrap_socket(raw_old)


def test_plain_http_on_a_tls_port_does_not_hurt_the_server(cert: tuple[str, str]) -> None:
    crt, key = cert
    ctx = ssl.create_default_context(cafile=crt)
    with running(certfile=crt, keyfile=key) as server:
        with connect(server.port) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert b"200 OK" not in read_until_close(plain, timeout=5)
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert read_until_close(sock).endswith(b"hello")  # type: ignore[arg-type]


def test_silent_tls_clients_pin_no_thread_and_close_at_the_header_timeout(cert: tuple[str, str]) -> None:
    """20 clients that connect to the TLS port and send nothing (or half a ClientHello)
    to a server with 2 threads: real clients are still served while they wait, and they
    are closed cleanly at read_header_timeout."""
    crt, key = cert
    ctx = ssl.create_default_context(cafile=crt)

    def real_request() -> bytes:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return read_until_close(tls)  # type: ignore[arg-type]

    with running(certfile=crt, keyfile=key, threads=2, read_header_timeout=3.0) as server:
        silent = [connect(server.port) for _ in range(20)]
        for sock in silent[::2]:
            sock.sendall(b"\x16\x03\x01\x02\x00")  # a TLS record header, then nothing
        assert [real_request().endswith(b"hello") for _ in range(3)] == [True] * 3
        for sock in silent:  # served while every silent client was still connected
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
            sock.setblocking(True)
        for sock in silent:
            assert read_until_close(sock, timeout=10) == b""  # then closed by the server, cleanly
            sock.close()
        assert real_request().endswith(b"hello")


def test_a_ready_ssl_context_is_served_as_given(cert: tuple[str, str]) -> None:
    """ssl_context: the caller's own context (here TLS 1.3 only), used as it is."""
    crt, key = cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    server_ctx.load_cert_chain(crt, key)
    client = ssl.create_default_context(cafile=crt)
    with running(ssl_context=server_ctx) as server:
        assert server.is_https
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with client.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            assert sock.version() == "TLSv1.3"
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert read_until_close(sock).endswith(b"hello")  # type: ignore[arg-type]
        tls12_only = ssl.create_default_context(cafile=crt)
        tls12_only.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw2, \
                pytest.raises(ssl.SSLError):
            tls12_only.wrap_socket(raw2, server_hostname="127.0.0.1")
