"""The closer holds a leader's closing answers and sends their FINs together: on real
loopback sockets, what it holds, when it flushes, and who closes each socket."""

from __future__ import annotations

import collections
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from gracehttp.closer import HOLD_MAX, HOLD_SECONDS, Closer
from gracehttp.leadership import Leadership


@contextmanager
def pairs(count: int) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """`count` (server side, client side) TCP pairs on loopback; each server side holds
    an answer sent with MSG_MORE, as a closing response is."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(count)
    made = []
    try:
        for i in range(count):
            client = socket.create_connection(lst.getsockname(), timeout=5)
            server, _ = lst.accept()
            server.send(b"answer %d" % i, socket.MSG_MORE)
            made.append((server, client))
        yield made
    finally:
        for server, client in made:
            server.close()
            client.close()
        lst.close()


def _whole(client: socket.socket) -> bytes:
    """What the client gets until EOF (a timeout fails the test: no EOF came)."""
    data = b""
    while chunk := client.recv(4096):
        data += chunk
    return data


def leading(*queues: object) -> Closer:
    """A closer whose engine has `queues` (work waiting by default), on a thread that leads."""
    lead = Leadership()
    closer = Closer(lead, *(queues or ([1],)))  # type: ignore[arg-type]
    closer.batching(lead.acquire())
    return closer


def test_only_a_leader_with_more_to_serve_holds() -> None:
    queue: collections.deque[int] = collections.deque()
    lead = Leadership()
    closer = Closer(lead, queue)
    with pairs(1) as [(server, _)]:
        assert not closer.hold(server), "not a leader: the FIN goes at once"
        turn = lead.acquire()
        closer.batching(turn)
        assert not closer.hold(server), "nothing more to serve: a lone client's FIN goes at once"
        queue.append(1)
        lead.leave(turn)  # as the watchdog demotes a stuck leader
        assert not closer.hold(server), "demoted: its FIN goes at once, not waiting for a successor"
        closer.batching(lead.acquire())
        assert closer.hold(server)
        assert closer.held == {server: False}
        assert closer.holds == 1
        closer.flush()


def test_batching_is_per_thread() -> None:
    closer = leading()
    seen: list[bool] = []
    with pairs(1) as [(server, _)]:
        other = threading.Thread(target=lambda: seen.append(closer.hold(server)))
        other.start()
        other.join(5)
        assert seen == [False], "another thread's leading is not this one's"
        assert closer.hold(server)
        closer.flush()


def test_a_released_socket_is_closed_by_the_flush_after_its_fin() -> None:
    closer = leading()
    with pairs(3) as made:
        for server, _ in made:
            assert closer.hold(server)
        assert closer.release(made[0][0])
        assert closer.release(made[2][0])
        closer.flush()
        assert closer.held == {}
        for i, (server, client) in enumerate(made):
            assert _whole(client) == b"answer %d" % i  # the answer, then EOF
            # Closed by the flush only where its connection let go of it.
            assert (server.fileno() == -1) == (i != 1)


def test_a_socket_flushed_before_it_is_released_is_left_to_its_connection() -> None:
    """A lingering connection still reads its socket after the FIN: the flush must not
    close it, and the connection's close then finds it no longer held."""
    closer = leading()
    with pairs(1) as [(server, client)]:
        assert closer.hold(server)
        closer.flush()
        assert _whole(client) == b"answer 0"
        assert server.fileno() != -1, "the flush closed a socket its connection still has"
        client.sendall(b"more")  # what a lingering connection reads and drops
        assert server.recv(16) == b"more"
        assert not closer.release(server)


def test_a_flush_is_due_at_the_count_or_the_time() -> None:
    closer = leading()
    with pairs(HOLD_MAX) as made:
        for server, _ in made[:-1]:
            closer.hold(server)
        closer._since = time.monotonic() + 60  # however slow this machine is, not old yet
        closer.flush_due()
        assert len(closer.held) == HOLD_MAX - 1, "neither many nor old: still held"
        closer.hold(made[-1][0])
        closer.flush_due()
        assert closer.held == {}, f"{HOLD_MAX} held: flushed"
        for i, (_, client) in enumerate(made):
            assert _whole(client) == b"answer %d" % i
    with pairs(1) as [(server, client)]:
        closer.hold(server)
        closer._since = time.monotonic() - HOLD_SECONDS  # as if held that long ago
        closer.flush_due()
        assert closer.held == {}
        assert _whole(client) == b"answer 0"


def test_a_client_gone_does_not_stop_the_flush() -> None:
    closer = leading()
    with pairs(2) as made:
        gone, kept = made
        gone[1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        gone[1].close()  # a reset
        for server, _ in made:
            closer.hold(server)
            closer.release(server)
        closer.flush()
        assert gone[0].fileno() == -1
        assert kept[0].fileno() == -1
        assert _whole(kept[1]) == b"answer 1"


def test_holds_and_releases_from_two_threads_lose_nothing() -> None:
    """Two leaders for a moment after a hand-off: one holds and releases while the other
    flushes (the interpreter switching threads as often as it can). Every socket ends
    shut down and closed by one of them."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    closer = leading()
    with pairs(200) as made:
        stop = threading.Event()

        def flusher() -> None:
            while not stop.is_set():
                closer.flush()

        other = threading.Thread(target=flusher)
        other.start()
        try:
            for server, _ in made:
                if closer.hold(server) and not closer.release(server):
                    server.close()  # flushed already: the connection closes it, as Transport.close does
        finally:
            stop.set()
            other.join(5)
            sys.setswitchinterval(switch)
        closer.flush()
        assert closer.held == {}
        for i, (server, client) in enumerate(made):
            assert server.fileno() == -1
            assert _whole(client) == b"answer %d" % i
