"""A leader's closing answers wait for their FINs while it has more to serve, and leave
together (`gracehttp.closer`). Over real sockets: every such answer arrives whole with
its EOF, a leader stuck in a slow app does not keep them, a lingering connection keeps
its socket, and no descriptor is left open."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import gracehttp.closer as closer_module
from gracehttp.connstate import LINGERING
from gracehttp.server import GracefulServer
from tests.helpers import GatedApp, connect, read_until_close, running, wait_until

CLOSE = b"GET /fast HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
SLOW = b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextmanager
def one_batch(server: GracefulServer, requests: list[bytes]) -> Iterator[list[socket.socket]]:
    """Clients whose requests the server takes in one accept batch, in this order: it
    accepts nothing while they connect and send, then takes them all at once (the
    first served at once, the others read and queued behind it)."""
    engine = server._engine
    assert engine is not None
    engine.hold(True)
    clients = []
    try:
        for request in requests:
            sock = connect(server.port)
            sock.sendall(request)
            clients.append(sock)
        engine.hold(False)
        yield clients
    finally:
        engine.hold(False)
        for sock in clients:
            sock.close()


def test_a_batch_of_closing_answers_arrives_whole_and_nothing_stays_open() -> None:
    app = GatedApp()
    with running(app) as server:
        engine = server._engine
        assert engine is not None
        before = _open_descriptors()
        with one_batch(server, [CLOSE] * 12) as clients:
            answers = [read_until_close(sock, timeout=5) for sock in clients]
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert answer.endswith(b"\r\n\r\nok"), answer  # whole, then EOF (read_until_close)
        # Each had others queued behind it: held, then sent together (all but the last,
        # unless a slow moment made the watchdog hand the role on, and its successor's ran
        # from the ready queue, where nothing is held).
        assert engine.closer.holds >= 1, engine.closer.holds
        assert wait_until(lambda: not engine.closer.held and _open_descriptors() <= before), \
            (engine.closer.held, _open_descriptors(), before)


@pytest.mark.parametrize("threads", [32, 1])
def test_a_leader_stuck_in_a_slow_app_does_not_keep_the_fins_it_holds(monkeypatch: pytest.MonkeyPatch,
                                                                       threads: int) -> None:
    """The leader holds the first answer's FIN (a request is queued behind it), then
    serves that request, which waits in the app. The watchdog hands the role on, and the
    next leader sends the held FIN before it polls: the first client has its answer and
    its EOF while the slow request is still in the app (held for as long as it takes:
    only the successor can send it). With one request thread the pool is exhausted and
    the successor is the reserve poller."""
    monkeypatch.setattr(closer_module, "HOLD_SECONDS", 60)
    app = GatedApp()
    with running(app, threads=threads) as server:
        engine = server._engine
        assert engine is not None
        with one_batch(server, [CLOSE, SLOW]) as (fast, slow):
            began = time.monotonic()
            answer = read_until_close(fast, timeout=5)
            waited = time.monotonic() - began
            assert wait_until(app.entered.is_set)
            assert not app.release.is_set()
            assert answer.endswith(b"\r\n\r\nok"), answer
            assert waited < 2, f"the held FIN waited {waited:.3f} s for the slow app"
            assert engine.closer.holds == 1, "the first answer's FIN was not held: nothing tested"
            app.release.set()
            assert read_until_close(slow, timeout=5).endswith(b"\r\n\r\nok")


def test_a_lingering_connection_keeps_its_socket_after_a_held_fin() -> None:
    """A closing answer to a client that sent more behind its request: the connection
    lingers (reads and drops what comes until the client closes), so the flush sends
    the FIN but must leave the socket open, and the connection closes it itself."""
    app = GatedApp()
    with running(app) as server:
        engine = server._engine
        assert engine is not None
        before = _open_descriptors()
        extra = CLOSE + b"GET /more HTTP/1.1\r\nHost: t\r\n\r\n"
        with one_batch(server, [extra, CLOSE]) as (lingering, other):
            answer = read_until_close(lingering, timeout=5)
            assert answer.count(b"HTTP/1.1 200") == 1, answer  # the second request is not served
            assert engine.closer.holds >= 1
            assert wait_until(lambda: not engine.closer.held)
            # Flushed, and still the lingering connection's: parked, its socket open.
            assert wait_until(lambda: any(conn.state is LINGERING and conn.io.sock.fileno() != -1
                                          for conn in engine.parking.parked.values()))
            lingering.sendall(b"x" * 100)  # read and dropped
            lingering.shutdown(socket.SHUT_WR)  # and then the connection closes its socket
            assert read_until_close(other, timeout=5).endswith(b"\r\n\r\nok")
        assert wait_until(lambda: _open_descriptors() <= before), (_open_descriptors(), before)
