"""Edge-triggered parking: an idle connection is parked without a system call, and no
request is lost to an edge that came at the wrong moment.

The edge comes once per arrival: while another owner holds the connection (a missed
event, re-armed by the parker), after a read that filled the buffer (the next read must
come without an edge), in a lingering close that reads a bounded amount per turn, and for
a socket a forked child still holds after the server closed its own descriptor.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import termios
from collections.abc import Callable
from typing import Any

import pytest

from gracehttp import transport
from gracehttp.connstate import LINGER_SECONDS, ConnState
from gracehttp.transport import RECV_SIZE
from tests.helpers import connect, read_response, running, small_window_client, wait_until


def body_length_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = str(len(environ["wsgi.input"].read())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _parked(server: Any, sock: socket.socket) -> Any:
    """The server's connection for `sock`, once it is parked."""
    port = sock.getsockname()[1]
    parking = server._engine.parking
    assert wait_until(lambda: any(c.peer and c.peer[1] == port for c in tuple(parking.parked.values())), 5)
    return next(c for c in tuple(parking.parked.values()) if c.peer and c.peer[1] == port)


def _answer(answers: Any) -> tuple[int, bytes]:
    """The status and body of the next response read from `answers` (a socket's file)."""
    status = int(answers.readline().split()[1])
    length = 0
    while (line := answers.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, answers.read(length)


def _unread(conn: Any) -> int:
    """Bytes waiting in the server's receive queue for `conn`."""
    return struct.unpack("i", _ioctl(conn.io.sock.fileno(), termios.FIONREAD))[0]


def _ioctl(fd: int, request: int) -> bytes:
    import fcntl

    return fcntl.ioctl(fd, request, b"\0\0\0\0")


_REAL_EPOLL = select.epoll


class CountingEpoll:
    """An epoll set that counts the calls that re-arm a descriptor."""

    def __init__(self) -> None:
        self._ep = _REAL_EPOLL()
        self.modifies = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ep, name)

    def modify(self, fd: int, events: int) -> None:
        self.modifies += 1
        self._ep.modify(fd, events)


def test_an_idle_keep_alive_connection_is_parked_without_re_arming(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of edge triggering: a keep-alive request costs no ``epoll_ctl``."""
    counting: list[CountingEpoll] = []

    def make() -> CountingEpoll:
        counting.append(CountingEpoll())
        return counting[-1]

    monkeypatch.setattr(select, "epoll", make)
    with running() as server, connect(server.port) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).status == 200
        _parked(server, sock)
        before = sum(ep.modifies for ep in counting)
        for i in range(50):
            sock.sendall(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            assert read_response(sock).status == 200
        _parked(server, sock)
        assert sum(ep.modifies for ep in counting) - before == 0


def test_an_event_that_comes_while_another_owner_holds_the_connection_is_not_lost() -> None:
    """An edge for a connection that is not parked (here the test holds it, as the
    housekeeper or a serving thread would) is recorded as missed; parking it re-arms it,
    so its request is answered. Without the record the request waits forever."""
    with running() as server, connect(server.port) as sock:
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).status == 200
        parking = server._engine.parking
        conn = _parked(server, sock)
        assert parking.unpark(conn.fd, conn) is conn  # this thread owns it now
        sock.sendall(b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_until(lambda: conn.fd in parking._missed, 5), "the leader never saw the event"
        parking.dispose(conn, ConnState.IDLE)
        sock.settimeout(5)
        assert read_response(sock).status == 200


def test_a_read_that_fills_the_buffer_is_followed_by_another() -> None:
    """A request that ends exactly where a full read ends, with the next one behind it in
    the socket: no edge will come for bytes that are already there, so the server reads
    again before it parks the connection."""
    with running(body_length_app) as server, connect(server.port) as sock:
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).status == 200
        parking = server._engine.parking
        conn = _parked(server, sock)
        assert parking.unpark(conn.fd, conn) is conn  # nobody reads while the bytes arrive
        head = b"POST /full HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
        length = RECV_SIZE - len(head % 10000)  # the digits of 10000 stand for the length's
        first = head % length + b"x" * length
        assert len(first) == RECV_SIZE
        second = b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n"
        sock.sendall(first + second)
        assert wait_until(lambda: _unread(conn) == len(first) + len(second), 5)
        parking.dispose(conn, ConnState.IDLE)  # the missed edge re-arms it: one full read
        sock.settimeout(5)
        with sock.makefile("rb") as answers:  # one reader: both answers may come in one read
            assert _answer(answers) == (200, str(length).encode())
            assert _answer(answers) == (200, b"0")


@pytest.mark.parametrize("sent", [b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n", b"GET /2 HTTP/1.1\r\nHo"])
def test_a_client_that_closes_its_side_with_its_last_bytes_is_closed_at_once(sent: bytes) -> None:
    """A keep-alive client sends a request (or part of a head) and its FIN together, as
    ``nc -N`` does. The read that takes the bytes gives less than it asked for and does
    not show the FIN, and no edge will come for it: the event said so (EPOLLRDHUP), and
    parking re-arms, so the server reads the end of stream and closes now, not at
    idle_timeout (or read_header_timeout) much later."""
    with running(idle_timeout=30, read_header_timeout=30) as server, connect(server.port) as sock:
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).status == 200
        parking = server._engine.parking
        conn = _parked(server, sock)
        assert parking.unpark(conn.fd, conn) is conn  # the bytes and the FIN both come before a read
        sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)
        assert wait_until(lambda: conn.fd in parking._missed, 5), "the leader never saw the event"
        parking.dispose(conn, ConnState.IDLE)  # re-armed: one event reports bytes and FIN at once
        sock.settimeout(10)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200" if sent.endswith(b"\r\n\r\n") else b"HTTP/1.1 400")
        assert wait_until(lambda: conn.state is ConnState.CLOSED, 5)


def test_bytes_past_urgent_data_are_read_though_no_edge_comes() -> None:
    """TCP urgent data ends a read at its mark though more bytes wait (here the next
    request), and no edge comes for them: the event said so (EPOLLPRI), and parking
    re-arms. Otherwise the request waits for idle_timeout. The urgent byte itself is not
    part of the stream (no SO_OOBINLINE), as before."""
    with running(idle_timeout=30) as server, connect(server.port) as sock:
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).status == 200
        parking = server._engine.parking
        conn = _parked(server, sock)
        assert parking.unpark(conn.fd, conn) is conn  # all of it comes before a read
        sock.send(b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n!", socket.MSG_OOB)  # "!" is the urgent byte
        sock.sendall(b"GET /3 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_until(lambda: conn.fd in parking._missed, 5), "the leader never saw the event"
        parking.dispose(conn, ConnState.IDLE)
        sock.settimeout(5)
        with sock.makefile("rb") as answers:
            assert _answer(answers) == (200, b"hello")
            assert _answer(answers) == (200, b"hello")


def test_a_lingering_close_reads_what_is_waiting_though_no_edge_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused request whose client has sent more, all of it waiting in the socket, and
    keeps its side open: a lingering turn reads a bounded amount (here one read), and no
    edge will come for bytes that are already there, so parking it re-arms it until the
    socket is read dry. Otherwise the bytes wait for the linger's deadline, and closing
    with them unread sends a reset, which destroys the answer if the client has not read
    it yet."""
    monkeypatch.setattr(transport, "LINGER_READ", RECV_SIZE)
    with running(max_body_bytes=1000) as server, connect(server.port) as sock:
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).status == 200
        parking = server._engine.parking
        conn = _parked(server, sock)
        assert parking.unpark(conn.fd, conn) is conn  # nobody reads while the bytes arrive
        conn.io.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # room for all of it
        extra = 4 * RECV_SIZE
        request = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % extra + b"x" * extra
        sock.sendall(request)
        assert wait_until(lambda: _unread(conn) == len(request), 5)
        parking.dispose(conn, ConnState.IDLE)
        assert wait_until(lambda: _unread(conn) == 0, LINGER_SECONDS / 2), "left unread until the deadline"
        sock.settimeout(5)
        data = b""
        while chunk := sock.recv(65536):  # the 413, then the end of the server's half-close
            data += chunk
        assert data.startswith(b"HTTP/1.1 413")


def test_edges_for_a_closed_connection_whose_socket_a_child_holds_cost_its_successor_nothing() -> None:
    """A child the app forked without exec keeps a copy of every socket, and with it the
    epoll registration: each time that client sends, an edge comes under the old number,
    which a new connection may have by then. The new connection must still be answered,
    request after request, while the old client keeps sending."""
    with running() as server, connect(server.port) as old:
        old.sendall(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(old).status == 200
        engine = server._engine
        conn = _parked(server, old)
        assert engine.parking.unpark(conn.fd, conn) is conn
        number = conn.fd
        copy = os.dup(number)  # the forked child's copy
        try:
            with socket.socket() as new:  # made first: the test's client must not take the number
                engine.parking.dispose(conn, ConnState.CLOSED)
                new.settimeout(5)
                new.connect(("127.0.0.1", server.port))
                new.sendall(b"GET /new HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(new).status == 200
                successor = _parked(server, new)
                if successor.fd != number:
                    pytest.skip("the new connection did not get the old one's number")
                for i in range(20):
                    old.sendall(b"GET /stale HTTP/1.1\r\nHost: t\r\n\r\n")  # to the child's copy
                    new.sendall(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
                    assert read_response(new).status == 200
        finally:
            os.close(copy)


def test_a_parked_connection_is_armed_only_by_its_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a connection is in the parked set another thread may take it (an edge comes at
    any time) and arm it for what it needs then: a parker that armed it after putting it
    there could undo that (a WRITING connection left armed for reading, or the other way
    round, until a deadline). So every arming call is made before the connection is
    parked, or under the parked set's lock. Driven through the transitions that re-arm: a
    response the client does not read at first (EPOLLOUT), then reading again, pipelining
    past a turn, a client that half-closes."""
    from gracehttp.parking import Parking

    seen: list[tuple[bool, bool]] = []
    control = Parking.control

    def watched(self: Parking, fd: int, events: int, first: bool) -> None:
        seen.append((fd in self.parked, self._lock.locked()))
        control(self, fd, events, first)

    monkeypatch.setattr(Parking, "control", watched)
    with running(big_app) as server, small_window_client(server.port) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        conn = _parked(server, sock)
        assert wait_until(lambda: conn.state is ConnState.WRITING, 5)
        sock.settimeout(10)
        assert len(read_response(sock).body) == BIG
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 40)  # past a turn: it yields
        with sock.makefile("rb") as answers:
            for _ in range(40):
                assert _answer(answers)[0] == 200
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")
    assert seen, "nothing was armed"
    assert all(not parked or locked for parked, locked in seen), seen


BIG = 4 << 20


def big_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = b"x" * (BIG if environ["PATH_INFO"] == "/big" else 5)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
