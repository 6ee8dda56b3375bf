"""Accepting in a flood: a batch takes what the kernel has queued, and what it accepted
goes before the next batch, so a health probe is not held back by the connections that
keep arriving behind it."""

from __future__ import annotations

import logging
import os
import resource
import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest

import gracehttp.engine as engine_module
from gracehttp.acceptor import Acceptor
from gracehttp.config import Config
from gracehttp.engine import Engine
from gracehttp.inflight import InFlight
from gracehttp.listeners import ACCEPT_BATCH, Listener, reserve_descriptors
from gracehttp.sites import main_engine
from gracehttp.state import Lifecycle, State
from tests.helpers import fd_table, hello_app, read_response, wait_until


def _queue(port: int, count: int) -> list[socket.socket]:
    """`count` connections whose handshakes completed: in the listener's accept queue."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


def _close(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


@contextmanager
def engine_on_listener(**fields: object) -> Iterator[tuple[Engine, Listener, int]]:
    """An engine that is not started: the test drives its accepting and polling itself."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    port = sock.getsockname()[1]
    cfg = Config(addr="127.0.0.1:0", app=hello_app, **fields)  # type: ignore[arg-type]
    lifecycle = Lifecycle()
    lifecycle.to(State.STARTING)
    lifecycle.to(State.READY)
    engine = main_engine(cfg, hello_app, lifecycle, InFlight(), logging.getLogger("test-accept"), None, None,
                         [sock])
    (lst,) = engine.listeners.values()
    engine.ep.register(lst.fd, select.EPOLLIN | select.EPOLLONESHOT)
    try:
        yield engine, lst, port
    finally:
        engine.parking.close_all()
        engine.ep.close()
        sock.close()


def test_a_listener_reports_its_accept_queue() -> None:
    with engine_on_listener() as (_, lst, port):
        assert lst.queued() == 0
        clients = _queue(port, 5)
        try:
            assert lst.queued() == 5
            lst.accept()[0].close()
            assert lst.queued() == 4
        finally:
            _close(clients)


def test_a_unix_listener_cannot_tell_and_takes_a_full_batch(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "s.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen(8)
    try:
        assert Listener(sock, b"", b"").queued() == ACCEPT_BATCH
    finally:
        sock.close()


def test_a_batch_takes_what_was_queued_and_a_probe_in_it_goes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe connects behind 20 idle connections and sends its request; 30 more
    connect after the listener event's batch was sized (`queued` says 21, as when they
    arrive while the batch is taken). The batch takes 21, not 51, and the probe is answered
    before the listener is armed again: the batch is served (or parked) first, so a probe
    is not held back behind every connection still arriving."""
    with engine_on_listener() as (engine, lst, port):
        idle = _queue(port, 20)
        probe = socket.create_connection(("127.0.0.1", port), timeout=5)
        probe.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
        later = _queue(port, 30)
        try:
            assert lst.queued() == 51
            monkeypatch.setattr(Listener, "queued", lambda self: 21)
            assert engine.ep.poll(1, 1)[0][0] == lst.fd
            rearmed: list[int] = []
            monkeypatch.setattr(engine.acceptor, "rearm", lambda listener: rearmed.append(len(engine.open)) or
                                Acceptor.rearm(engine.acceptor, listener))
            engine._accept(lst, run_app=False)
            monkeypatch.undo()
            assert len(engine.open) == 21
            assert lst.queued() == 30
            response = read_response(probe)  # answered within the batch
            assert response.status == 200
            assert response.body == b"ok"
            assert rearmed == [21]  # once, after the batch
            assert engine.ep.poll(1, 1)[0][0] == lst.fd  # then the rest, in the next batch
        finally:
            _close(idle + later + [probe])


def test_a_batch_reads_so_many_requests_at_once_and_parks_the_rest_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past `READ_AT_ONCE` the thread that took the batch parks the rest unread, and their
    requests come back as events in the order they arrived."""
    with engine_on_listener() as (engine, lst, port):
        clients = _queue(port, 6)
        try:
            for client in clients:  # on loopback, in the server's socket when sendall returns
                client.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert engine.ep.poll(1, 1)[0][0] == lst.fd
            monkeypatch.setattr(engine_module, "READ_AT_ONCE", 1)  # the first and one more, then park
            engine._accept(lst, run_app=False)
            monkeypatch.undo()
            assert read_response(clients[0]).status == 200
            assert read_response(clients[1]).status == 200  # probes: answered, not queued
            ports = []
            for _ in range(4):
                events = engine.ep.poll(1, 1)
                assert events
                conn = engine.parking.unpark(events[0][0])
                assert conn is not None
                ports.append(conn.peer[1])
                engine._serve(conn, run_app=False)
            assert ports == [c.getsockname()[1] for c in clients[2:]]
            for client in clients[2:]:
                assert read_response(client).status == 200
        finally:
            _close(clients)


@pytest.mark.parametrize("count", [3, 40])
def test_every_connection_of_a_batch_is_counted_then_given_back(count: int) -> None:
    """Claimed as a batch before the first accept, released as a batch when parked: what
    the drain waits for ends at the parked heads, one per connection, none left busy."""
    with engine_on_listener() as (engine, lst, port):
        clients = _queue(port, count)
        try:
            engine._accept(lst, run_app=False)
            inflight = engine.site.inflight
            assert len(engine.open) == count
            assert inflight.busy == 0
            assert inflight.heads == count
        finally:
            _close(clients)
        with suppress(OSError):
            engine.parking.close_all()


def test_past_the_limit_a_batch_still_takes_up_to_the_overflow_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overflow connections that send a request count as ordinary ones, so the open count
    can stay past max_connections; new connections are still admitted as overflow, up to
    OVERFLOW_MAX of them (4 here), not one per listener event."""
    import gracehttp.acceptor

    monkeypatch.setattr(gracehttp.acceptor, "OVERFLOW_MAX", 4)
    with engine_on_listener(max_connections=1) as (engine, lst, port):
        first = _queue(port, 4)
        later: list[socket.socket] = []
        try:
            for s in first:
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert wait_until(lambda: lst.queued() == 4)
            engine._accept(lst, run_app=False)
            while (events := engine.ep.poll(0.2, 1)) and events[0][0] != lst.fd:
                conn = engine.parking.unpark(events[0][0])
                if conn is not None:
                    engine._serve(conn, run_app=False)  # a request: promoted, queued for a thread
            assert len(engine.open) == 4
            assert engine.acceptor.overflow == 0  # all promoted: 3 past max_connections=1
            later = _queue(port, 10)
            assert wait_until(lambda: lst.queued() == 10)
            engine._accept(lst, run_app=False)
            assert len(engine.open) == 8  # 4 more, as overflow
        finally:
            _close(first + later)


def test_reserving_descriptors_grows_the_table_once_and_touches_nothing_open() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    size = fd_table(os.getpid())
    want = min(soft, size * 4)
    if want <= size:
        pytest.skip(f"the soft RLIMIT_NOFILE ({soft}) leaves no room to grow a table of {size}")
    assert reserve_descriptors(want) == want
    assert fd_table(os.getpid()) >= want
    assert reserve_descriptors(soft * 2) == soft  # never past the limit, and no error
    # Something open in the very slot asked for is left alone.
    r, w = os.pipe()
    high = os.dup2(w, want - 1)
    try:
        assert reserve_descriptors(want) == want
        os.write(high, b"x")
        assert os.read(r, 1) == b"x"
    finally:
        for fd in (r, w, high):
            os.close(fd)

