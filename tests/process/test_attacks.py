"""Resource limits under attack (issue 7), against a server in its own process so its
threads and descriptors can be counted: after each attack they are back to their idle
values and a normal request is served."""

from __future__ import annotations

import os
import socket
from typing import Any

from tests.helpers import get, read_until_close, statuses, wait_until


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


def back_to_idle(srv: Any, idle: tuple[int, int]) -> None:
    assert wait_until(lambda: counts(srv.proc.pid) == idle, 15), (counts(srv.proc.pid), idle)
    assert get(srv.port, "/").status == 200


def test_two_thousand_connections_at_once_beyond_max_connections(start_server: Any) -> None:
    srv = start_server(threads=8, max_connections=500, backlog=4096, metrics=False)
    idle = settled(srv.proc.pid)  # started, no connection yet
    socks: list[socket.socket] = []
    try:
        for _ in range(2000):  # bounded: 2,000 connects, each with a 30 s timeout
            socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=30))
        # All 2,000 are connected (the kernel's queue holds them); the server took 500 and paused.
        assert wait_until(lambda: counts(srv.proc.pid)[0] >= idle[0] + 500, 10)
        assert counts(srv.proc.pid)[0] <= idle[0] + 500 + 2
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answers = [statuses(read_until_close(sock, timeout=30)) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert answers == [[200]] * 2000  # accepting paused at 500 and resumed: nobody lost, nothing crashed
    assert not any("accept failed" in line for line in srv.stderr)
    back_to_idle(srv, idle)


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
    back_to_idle(srv, idle)
    assert not any("Traceback" in line for line in srv.stderr), "".join(srv.stderr)[-3000:]
