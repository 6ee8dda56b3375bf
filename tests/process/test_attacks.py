"""Resource limits under attack (issue 7), against a server in its own process so its
threads and descriptors can be counted: after each attack they are back to their idle
values and a normal request is served."""

from __future__ import annotations

import os
import resource
import socket
import time
from typing import Any

import pytest

from gracehttp.acceptor import OVERFLOW_MAX
from gracehttp.engine import INITIAL_THREADS
from tests.helpers import fd_table, get, read_until_close, statuses, wait_until


def counts(pid: int) -> tuple[int, int]:
    """(open descriptors, threads) of a process."""
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def settled(pid: int) -> tuple[int, int]:
    """The counts once start-up is over (the signal thread and its wakeup pipe come after the
    first log line): the same three readings in a row."""
    readings = [counts(pid)]
    assert wait_until(lambda: readings.append(counts(pid)) or readings[-3:] == [readings[-1]] * 3, 10,
                      interval=0.1)
    return readings[-1]


def back_to_idle(srv: Any, idle: tuple[int, int], threads: int) -> None:
    """Descriptors back to their idle count; threads too, but for the request threads the
    attack made the pool start (it starts `INITIAL_THREADS` and grows, up to `threads`)."""
    grown = threads - min(threads, INITIAL_THREADS)

    def settled_back() -> bool:
        fds, now = counts(srv.proc.pid)
        return fds == idle[0] and idle[1] <= now <= idle[1] + grown

    assert wait_until(settled_back, 15), (counts(srv.proc.pid), idle, grown)
    assert get(srv.port, "/").status == 200


def test_two_thousand_connections_at_once_beyond_max_connections(start_server: Any) -> None:
    """Past max_connections a new connection is admitted for OVERFLOW_GRACE: one that
    sends its request at once, as real clients do, is served; none is reset or lost."""
    srv = start_server(threads=8, max_connections=500, backlog=4096, metrics=False)
    idle = settled(srv.proc.pid)  # started, no connection yet
    socks: list[socket.socket] = []
    try:
        for _ in range(2000):  # bounded: 2,000 connects, each with a 30 s timeout
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            socks.append(sock)
        answers = [statuses(read_until_close(sock, timeout=30)) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert answers == [[200]] * 2000
    assert not any("accept failed" in line for line in srv.stderr)
    back_to_idle(srv, idle, threads=8)


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2048,
                    reason="needs a soft RLIMIT_NOFILE of 2,048 for the server and the clients")
def test_a_flood_of_connections_never_waits_for_the_descriptor_table_to_grow(start_server: Any) -> None:
    """The kernel grows a process's descriptor table by doubling, on the accept that needs
    a slot past its end, and in a threaded process each growth waits an RCU grace period
    (10-35 ms measured, holding up every connection and probe behind that accept). The
    server grows it at start for every connection it may hold (max_connections and the
    overflow past it), so a flood of 1,000 connections finds it big enough."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    srv = start_server(threads=4, max_connections=500, backlog=4096, metrics=False)
    pid = srv.proc.pid
    size = fd_table(pid)
    assert size >= min(soft, 500 + OVERFLOW_MAX)
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(1000)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answers = [statuses(read_until_close(sock, timeout=30)) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert answers == [[200]] * 1000
    assert fd_table(pid) == size


def test_connections_that_send_nothing_past_max_connections_cannot_lock_out_a_probe(start_server: Any) -> None:
    """2,000 connections that send nothing, four times max_connections: past the limit each
    gets OVERFLOW_GRACE, and once they have waited a while they give their slots to new
    ones, so a health probe and a request still get through, quickly."""
    srv = start_server(threads=8, max_connections=500, backlog=4096, metrics=False)
    idle = settled(srv.proc.pid)
    socks = []
    try:
        for _ in range(2000):
            socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=30))
        for path in ("/readyz", "/"):
            began = time.monotonic()
            assert get(srv.port, path, timeout=5).status == 200, path
            assert time.monotonic() - began < 1.0, path
        # The ones past the limit were closed at the end of their grace (a FIN: no answer).
        assert wait_until(lambda: counts(srv.proc.pid)[0] <= idle[0] + 500 + 2, 10), counts(srv.proc.pid)
    finally:
        for sock in socks:
            sock.close()
    back_to_idle(srv, idle, threads=8)


def test_clients_that_vanish_mid_request_and_mid_response_free_everything(start_server: Any) -> None:
    srv = start_server(threads=4, metrics=False)
    idle = settled(srv.proc.pid)  # started, no connection yet
    for _ in range(50):
        # Mid-request: half a head, then gone.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
        # Mid-response: ask for a slow answer and leave while the app runs.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(b"GET /slow?t=0.05 HTTP/1.1\r\nHost: t\r\n\r\n")
    back_to_idle(srv, idle, threads=4)
    assert not any("Traceback" in line for line in srv.stderr), "".join(srv.stderr)[-3000:]


def test_slow_senders_and_a_client_that_never_reads_are_cut_at_their_timeouts(start_server: Any) -> None:
    # Slow heads and slow (small) bodies are parked and hold no thread; a client that never
    # reads holds one until write_timeout. With 8 threads, 4 such readers and 10 slow bodies
    # that would each hold a thread for read_timeout (6 s), a request is still served meanwhile.
    srv = start_server(threads=8, read_header_timeout=1.0, read_timeout=6.0, write_timeout=1.0, metrics=False)
    idle = settled(srv.proc.pid)
    slow_heads = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(20)]
    for sock in slow_heads:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")  # and then nothing
    slow_bodies = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(10)]
    for sock in slow_bodies:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"y" * 10)
    readers = []
    for _ in range(4):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", srv.port))
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")  # and never read
        readers.append(sock)
    assert get(srv.port, "/", timeout=5).status == 200  # served meanwhile
    for sock in slow_heads:
        assert statuses(read_until_close(sock, timeout=10)) == [408]
        sock.close()
    for sock in slow_bodies:
        assert statuses(read_until_close(sock, timeout=10)) == [408]
        sock.close()
    assert wait_until(lambda: counts(srv.proc.pid)[0] <= idle[0] + len(readers), 10)  # readers' cut
    for sock in readers:
        sock.close()
    back_to_idle(srv, idle, threads=8)
