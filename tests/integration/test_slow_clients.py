"""A thousand idle or slow connections do not stop normal requests (no thread is pinned)."""

from __future__ import annotations

import resource
import socket
import time

import pytest

from tests.helpers import connect, get, read_response, running, wait_until

N = 500


@pytest.fixture(autouse=True)
def enough_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * N + 200
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} file descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def test_slow_and_idle_connections_do_not_block_normal_requests() -> None:
    with running(threads=8, read_header_timeout=2.0, idle_timeout=60.0) as server:
        slow: list[socket.socket] = []
        idle: list[socket.socket] = []
        try:
            for _ in range(N):
                s = connect(server.port, timeout=10)
                s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Partial: ")  # never finished
                slow.append(s)
            for _ in range(N):
                s = connect(server.port, timeout=10)
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(s).status == 200  # now idle on keep-alive
                idle.append(s)
            opened = time.monotonic()
            # With 1,000 connections held, a fresh request is answered at once.
            for _ in range(20):
                t0 = time.monotonic()
                assert get(server.port).status == 200
                assert time.monotonic() - t0 < 1.0
            # The slow ones are answered 408 and closed after read_header_timeout ...
            for s in slow:
                data = s.recv(4096)
                assert data.startswith(b"HTTP/1.1 408"), data[:40]
            assert time.monotonic() - opened < 6.0
            # ... while the idle keep-alive connections are still usable.
            for s in idle[:50]:
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(s).status == 200
        finally:
            for s in slow + idle:
                s.close()
        assert wait_until(lambda: server._engine is not None and len(server._engine.open) == 0, 5)
