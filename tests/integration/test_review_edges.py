"""Edges a review of the connection core found, each tried against a real server: a file
response's duplicated descriptor when the client is gone, a closing answer that must not
wait for a body nobody reads, a first head's deadline, the drain's grace, a TLS client
sending garbage records, and bodies past max_connections."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import connect, get, hello_app, read_response, read_until_close, running, wait_until


def open_descriptors_of(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


def test_a_file_response_to_a_client_gone_leaves_no_descriptor_open(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1_000_000)
    entered = threading.Semaphore(0)
    go_on = threading.Event()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        entered.release()
        go_on.wait(5)  # the client resets meanwhile
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    with running(app, threads=4) as server:
        for _ in range(4):
            sock = connect(server.port)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert entered.acquire(timeout=5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset: the response's first send fails
        go_on.set()
        assert wait_until(lambda: server._engine is not None and len(server._engine.open) == 0, 5)
        assert wait_until(lambda: open_descriptors_of(path) == 0, 5), open_descriptors_of(path)


def test_a_closing_answer_does_not_hold_a_thread_for_the_unread_body() -> None:
    """An app answers without reading a body still arriving: the answer says Connection:
    close, and the thread is free at once (the rest is dropped by the parked linger)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("404 Not Found", [("Content-Length", "0")])
        return []

    with running(app, threads=1, max_spool_bytes=100_000, read_timeout=5) as server, \
            connect(server.port) as uploader:
        uploader.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 150000\r\n\r\n" + b"x" * 100_001)
        assert read_response(uploader, "POST").status == 404
        began = time.monotonic()
        assert get(server.port, timeout=5).status == 404  # the one thread is free
        assert time.monotonic() - began < 1.0


def test_a_new_connections_first_head_is_due_at_accept_plus_read_header_timeout() -> None:
    with running(hello_app, read_header_timeout=1.0) as server, connect(server.port) as sock:
        began = time.monotonic()
        time.sleep(0.6)  # the client's pace: its first byte comes late
        sock.sendall(b"G")
        data = read_until_close(sock, 5)
        assert data.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - began < 1.6  # not 0.6 + 1.0 from the first byte


def test_bytes_that_make_no_request_do_not_extend_the_drains_grace() -> None:
    """A keep-alive client that sends an empty line every 0.4 s after its request cannot
    hold the drain: its connection closes at the end of the grace, as a quiet one does."""
    with running(hello_app, drain_timeout=6) as server, connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).status == 200
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.4):
                try:
                    sock.send(b"\r\n")
                except OSError:
                    return

        t = threading.Thread(target=trickle)
        t.start()
        try:
            began = time.monotonic()
            report = server.shutdown()
            assert report.drained
            assert time.monotonic() - began < 2.0
        finally:
            stop.set()
            t.join(5)


def test_garbage_tls_records_end_the_connection_without_a_traceback(
        cert: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    crt, key = cert
    ctx = ssl.create_default_context(cafile=crt)
    with caplog.at_level(logging.ERROR, logger="gracehttp"), running(certfile=crt, keyfile=key) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            socket.socket.send(tls, b"\x17\x03\x03\x00\x20" + os.urandom(32))  # a forged record
            assert wait_until(lambda: server._engine is not None and len(server._engine.open) == 0, 5)
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=5),
                             server_hostname="127.0.0.1") as ok:
            ok.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert read_until_close(ok).endswith(b"hello")  # type: ignore[arg-type]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_past_max_connections_a_body_still_to_come_gets_503_and_nothing_waits() -> None:
    with running(hello_app, max_connections=2) as server:
        held = [connect(server.port) for _ in range(2)]
        try:
            for sock in held:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(sock).status == 200
            with connect(server.port) as late:
                late.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nabc")
                data = read_until_close(late, 5)
                assert data.startswith(b"HTTP/1.1 503")
                assert b"Retry-After: 1" in data
            # A request with nothing more to come is served, and its connection closed after.
            resp = get(server.port, timeout=5)
            assert resp.status == 200
            assert resp.headers["connection"] == "close"
        finally:
            for sock in held:
                sock.close()
