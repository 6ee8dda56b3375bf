"""With every request thread inside the app, someone still polls: probes are answered,
connections accepted, bodies collected, and complete requests wait their turn."""

from __future__ import annotations

import hashlib
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gracehttp import GracefulServer
from gracehttp.engine import INITIAL_THREADS
from gracehttp.parking import EVICT_IDLE_AFTER
from tests.helpers import GatedApp, connect, get, hello_app, read_response, running, small_window_client, wait_until


class BusyApp(GatedApp):
    """`GatedApp` that also echoes a body's hash and counts the requests it began."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            self.started += 1
        if environ["REQUEST_METHOD"] == "POST":
            body = environ["wsgi.input"].read()
            out = hashlib.sha256(body).hexdigest().encode()
            start_response("200 OK", [("Content-Length", str(len(out)))])
            return [out]
        return super().__call__(environ, start_response)


@contextmanager
def busy_pool(threads: int = 2) -> Iterator[tuple[GracefulServer, BusyApp]]:
    """A server whose `threads` request threads are all held in the app."""
    app = BusyApp()
    with running(app, threads=threads) as server:
        holders = [threading.Thread(target=get, args=(server.port, "/slow"), kwargs={"timeout": 15})
                   for _ in range(threads)]
        for t in holders:
            t.start()
        try:
            assert wait_until(lambda: app.started == threads), "the pool never filled"
            yield server, app
        finally:
            app.release.set()
            for t in holders:
                t.join(15)


def test_probes_on_the_main_listener_are_answered_while_every_thread_is_in_the_app() -> None:
    with busy_pool() as (server, _app):
        for path in ("/livez", "/readyz", "/health", "/ready"):
            began = time.monotonic()
            resp = get(server.port, path, timeout=2)
            assert resp.status == 200, path
            assert time.monotonic() - began < 0.5, path
        with connect(server.port) as sock:  # keep-alive probes too
            for _ in range(5):
                sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(sock).body == b"ok"


def test_requests_that_arrive_while_the_pool_is_busy_are_served_when_a_thread_frees() -> None:
    with busy_pool() as (server, app):
        results: list[int] = []
        payload = b"p" * 300_000

        def client(i: int) -> None:
            if i % 2:
                resp = get(server.port, "/q", method="POST", body=payload, timeout=15)
                assert resp.body == hashlib.sha256(payload).hexdigest().encode()
            else:
                resp = get(server.port, f"/q{i}", timeout=15)
            results.append(resp.status)

        clients = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in clients:
            t.start()
        # Their heads and bodies are read while the pool is busy, but the app is not
        # called for them until a thread is free.
        assert not wait_until(lambda: app.started > 2, timeout=0.5)
        assert get(server.port, "/readyz", timeout=2).status == 200
        app.release.set()
        for t in clients:
            t.join(15)
        assert results == [200] * 6


BIG = 4 << 20


def big_app_with(path: Path) -> Callable[..., Any]:
    """/big: 4 MiB as a list of blocks; /file: 4 MiB from the file at `path` (written
    here: a paced file, see `Transport.pace`); else hello."""
    path.write_bytes(b"f" * BIG)

    def big_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ["PATH_INFO"] == "/big":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return [b"b" * (BIG // 4)] * 4
        if environ["PATH_INFO"] == "/file":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return environ["wsgi.file_wrapper"](open(path, "rb"))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    return big_app


def test_clients_that_never_read_a_complete_response_hold_no_request_thread(tmp_path: Path) -> None:
    """Four clients ask a 4-thread server for 4 MiB each and read none of it; the rest
    is sent from the parked connections, so others are served at once, and a reader
    that finally reads gets every byte, in step for its next request."""
    with running(big_app_with(tmp_path / "big"), threads=4) as server:
        stalled = [small_window_client(server.port) for _ in range(4)]
        try:
            for i, sock in enumerate(stalled):
                sock.sendall(b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n" % (b"big" if i % 2 else b"file"))
            began = time.monotonic()
            assert get(server.port, "/hello", timeout=5).body == b"ok"
            assert get(server.port, "/readyz", timeout=5).status == 200
            assert time.monotonic() - began < 1.0
            for i, sock in enumerate(stalled):
                resp = read_response(sock)
                assert resp.body == (b"b" if i % 2 else b"f") * BIG
                sock.sendall(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(sock).body == b"ok"
        finally:
            for sock in stalled:
                sock.close()


@pytest.mark.parametrize("path", ["/big", "/file"])
def test_a_parked_response_the_client_never_reads_ends_at_write_timeout(tmp_path: Path, path: str) -> None:
    app = big_app_with(tmp_path / "big")
    with running(app, threads=2, write_timeout=1.0) as server, small_window_client(server.port) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        engine = server._engine
        assert engine is not None
        assert wait_until(lambda: len(engine.open) == 1, 2)
        began = time.monotonic()
        assert wait_until(lambda: len(engine.open) == 0, 5), "the stalled response was never given up"
        assert time.monotonic() - began < 2.5


def test_a_connection_is_counted_in_flight_from_before_its_accept(monkeypatch: Any) -> None:
    """The drain ends when nothing is counted in flight; a connection the kernel has handed
    over but the engine has not counted yet would be invisible to it. So the engine counts
    first and accepts second: at every accept, one more is already counted busy."""
    from gracehttp.listeners import Listener

    seen: list[int] = []
    real = Listener.accept

    def accept(self: Listener) -> Any:
        result = real(self)  # raises BlockingIOError once the queue is empty
        seen.append(server.inflight_busy())
        return result

    monkeypatch.setattr(Listener, "accept", accept)
    with running(hello_app) as server:
        server.inflight_busy = lambda: server._inflight.busy  # type: ignore[attr-defined]
        for _ in range(5):
            assert get(server.port, timeout=5).status == 200
    assert seen
    assert all(busy >= 1 for busy in seen), seen


def test_requests_queued_for_a_thread_are_answered_through_the_drain() -> None:
    """SIGTERM while complete requests wait for a free thread: the drain waits for them,
    and each is answered (with Connection: close), none dropped."""
    with busy_pool() as (server, app):
        results: list[tuple[int, str]] = []

        def client(i: int) -> None:
            resp = get(server.port, f"/q{i}", timeout=15)
            results.append((resp.status, resp.headers.get("connection", "")))

        clients = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for t in clients:
            t.start()
        engine = server._engine
        assert engine is not None
        assert wait_until(lambda: len(engine.parking.ready) == 3, 5), "the requests were not queued"
        stopper = threading.Thread(target=server.shutdown)
        stopper.start()
        assert wait_until(lambda: server.is_shutting_down, 5)
        app.release.set()
        for t in clients:
            t.join(15)
        stopper.join(15)
        assert results == [(200, "close")] * 3
        assert server.shutdown().drained


@pytest.mark.parametrize("path", ["/big", "/file"])
def test_a_response_still_being_sent_at_sigterm_is_sent_whole(tmp_path: Path, path: str) -> None:
    """A client reading a 4 MiB answer slowly when the drain begins gets all of it: the drain
    waits for a connection that is writing, within drain_timeout."""
    app = big_app_with(tmp_path / "big")
    with running(app, threads=2, drain_timeout=10) as server, small_window_client(server.port) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        engine = server._engine
        assert engine is not None
        assert wait_until(lambda: any(c.state.name == "WRITING" for c in tuple(engine.parking.parked.values())), 5)
        stopper = threading.Thread(target=server.shutdown)
        stopper.start()
        assert wait_until(lambda: server.is_shutting_down, 5)
        resp = read_response(sock)
        assert resp.body == (b"b" if path == "/big" else b"f") * BIG
        stopper.join(15)
        assert server.shutdown().drained


def _request_threads(server: GracefulServer) -> list[str]:
    """The names of the main listener's request threads (the admin's are named apart)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("gracehttp-request-")]


def test_the_pool_starts_small_and_grows_to_threads_as_requests_wait_in_the_app() -> None:
    """Fast requests are all served by the leader, so only a few request threads start
    with the server; every request that waits in the app brings one more, up to
    `threads`, and no further."""
    with running(threads=12) as server:
        assert len(_request_threads(server)) == INITIAL_THREADS
    app = BusyApp()
    with running(app, threads=12) as server:
        assert len(_request_threads(server)) == INITIAL_THREADS
        clients = [threading.Thread(target=get, args=(server.port, "/slow"), kwargs={"timeout": 20})
                   for _ in range(30)]  # bounded: 30 requests, each waiting for the release
        for t in clients:
            t.start()
        try:
            # Twelve in the app at once: the pool grew to its size (the rest queue).
            assert wait_until(lambda: app.started == 12, 10), app.started
            assert get(server.port, "/readyz", timeout=2).status == 200  # still answered
        finally:
            app.release.set()
            for t in clients:
                t.join(20)
        assert app.started == 30
        assert len(_request_threads(server)) == 12  # never past `threads`


def test_a_pool_that_cannot_start_a_thread_stays_as_it_is_and_still_polls(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Past a container's pids limit ``Thread.start`` raises: the watchdog and the reserve
    poller, which start threads as the pool grows, go on; the pool keeps its threads,
    says so once, and queued requests are served as threads come free."""

    class NoMoreRequestThreads(threading.Thread):
        def start(self) -> None:
            if self.name.startswith("gracehttp-request-") and int(self.name.rsplit("-", 1)[1]) >= INITIAL_THREADS:
                raise RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(threading, "Thread", NoMoreRequestThreads)
    app = BusyApp()
    with running(app, threads=8) as server:
        clients = [threading.Thread(target=get, args=(server.port, "/slow"), kwargs={"timeout": 20})
                   for _ in range(INITIAL_THREADS + 2)]
        for t in clients:
            t.start()
        try:
            assert wait_until(lambda: app.started == INITIAL_THREADS, 10), app.started
            assert wait_until(lambda: any("cannot start another request thread" in r.getMessage()
                                          for r in caplog.records), 10)
            assert get(server.port, "/readyz", timeout=2).status == 200  # the reserve still polls
        finally:
            app.release.set()
            for t in clients:
                t.join(20)
        assert app.started == INITIAL_THREADS + 2  # the queued two, once threads came free
        assert len(_request_threads(server)) == INITIAL_THREADS
    assert sum("cannot start another request thread" in r.getMessage() for r in caplog.records) == 1


def test_a_burst_of_slow_requests_gets_its_threads_at_once() -> None:
    """Sixteen slow requests connect together: the batch's requests are read and queued at
    once, with no event to come for them, so the pool must start a thread for each queued
    one at once, not one per poll of the reserve (100 ms each: the last would wait 1.2 s)."""
    app = BusyApp()
    with running(app, threads=16) as server:
        clients = [threading.Thread(target=get, args=(server.port, "/slow"), kwargs={"timeout": 20})
                   for _ in range(16)]
        began = time.monotonic()
        for t in clients:
            t.start()
        try:
            assert wait_until(lambda: app.started == 16, 10), app.started
            took = time.monotonic() - began
        finally:
            app.release.set()
            for t in clients:
                t.join(20)
        assert took < 0.6, f"16 requests in the app only after {took:.2f} s"


def slow_path_app() -> tuple[Callable[..., list[bytes]], threading.Event, threading.Event]:
    """An app answering "ok" at once, except ``/slow``, which sets `entered` and waits for `gate`."""
    gate = threading.Event()
    entered = threading.Event()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            entered.set()
            gate.wait(10)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    return app, gate, entered


def test_events_polled_together_are_served_while_the_first_of_them_is_stuck_in_the_app() -> None:
    """A poll returns several ready connections; the leader serves the first and keeps
    the rest in the engine's pending queue. If the first is slow, its successor takes
    the rest: they are not held behind it."""
    app, gate, entered = slow_path_app()

    with running(app, threads=4) as server:
        socks = [connect(server.port, timeout=10) for _ in range(8)]
        try:
            for sock in socks:  # each kept alive and parked, so the rounds' events come together
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(sock).status == 200
            for _ in range(5):
                gate.clear()
                entered.clear()
                socks[0].sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
                for sock in socks[1:]:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                for sock in socks[1:]:
                    # Answered while /slow still waits for the gate, which stays shut until
                    # they are all in: held behind it, they would time out here.
                    sock.settimeout(5)
                    assert read_response(sock).status == 200
                assert wait_until(entered.is_set)
                gate.set()
                assert read_response(socks[0]).status == 200
        finally:
            gate.set()
            for sock in socks:
                sock.close()


def test_a_batch_polled_together_is_answered_through_the_drain_begun_while_its_first_is_in_the_app() -> None:
    """SIGTERM while the first of a batch of requests polled together is held in the app:
    every request of the batch is answered, none dropped (those the next leader took from
    the engine's pending queue may be answered before the drain begins), the held one
    with Connection: close, and the drain ends with nothing left."""
    app, gate, entered = slow_path_app()

    with running(app, threads=4, drain_timeout=10) as server:
        socks = [connect(server.port, timeout=10) for _ in range(8)]
        stopper = threading.Thread(target=server.shutdown)
        try:
            for sock in socks:  # kept alive and parked, so their next events come together
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(sock).status == 200
            socks[0].sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            for sock in socks[1:]:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert wait_until(entered.is_set)
            stopper.start()
            assert wait_until(lambda: server.is_shutting_down, 5)
            gate.set()
            answers = [read_response(sock) for sock in socks]
            assert [a.status for a in answers] == [200] * 8
            assert answers[0].headers.get("connection") == "close"
            stopper.join(15)
            assert server.shutdown().drained
        finally:
            gate.set()
            for sock in socks:
                sock.close()


class UnawareDemotion:
    """An app whose ``/race`` request waits until the watchdog has demoted the thread
    running it, and whose next `Leadership.end` then answers as if it had looked just
    before the watchdog acted: the old leader goes on polling beside its successor for a
    while (a moment `gracehttp.leadership` allows). ``/slow`` takes a second."""

    def __init__(self) -> None:
        self._racing = threading.local()
        self._engine: Any = None
        #: The thread that ran ``/race``: the one leading unawares.
        self.racer_thread = ""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] == "/race":
            lead = self._engine.leadership
            holder = lead._holder
            wait_until(lambda: lead._holder is not holder, timeout=2, interval=0.001)  # demoted
            time.sleep(0.05)  # the successor is polling now
            self._racing.on = True
            self.racer_thread = threading.current_thread().name
        elif environ["PATH_INFO"] == "/slow":
            time.sleep(1.0)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    def install(self, server: GracefulServer) -> None:
        self._engine = server._engine
        lead = self._engine.leadership
        real_end = lead.end

        def end(turn: Any) -> bool:
            if getattr(self._racing, "on", False):
                self._racing.on = False
                turn.serving = False
                return True
            return bool(real_end(turn))

        lead.end = end


def test_events_left_queued_by_a_leader_that_stops_leading_wake_the_thread_polling_meanwhile() -> None:
    """Right after a hand-off two threads may lead for a moment (the old leader finished
    just as it was demoted) and both poll. If the old one's poll returns several events
    and it then stops leading, the others wait in the engine's queue: the thread still
    waiting in its poll must be woken for them, not by some later event."""
    app = UnawareDemotion()
    with running(app, threads=4, idle_timeout=60) as server:
        app.install(server)
        for _ in range(6):
            socks = [connect(server.port, timeout=10) for _ in range(8)]
            try:
                for sock in socks:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                    assert read_response(sock).status == 200
                with connect(server.port, timeout=10) as racer:
                    racer.sendall(b"GET /race HTTP/1.1\r\nHost: t\r\n\r\n")
                    assert read_response(racer).status == 200
                time.sleep(0.05)  # both threads in their polls (no event to synchronise on)
                for sock in socks:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                for sock in socks:
                    sock.settimeout(3)
                    assert read_response(sock).status == 200
            finally:
                for sock in socks:
                    sock.close()


def test_an_idle_connection_whose_next_request_has_come_is_not_evicted() -> None:
    """Past max_connections an idle keep-alive connection may give its slot to a new one;
    not one whose next request is in (its event may be waiting behind others in the
    engine's batch): closing it would lose that request."""
    with running(hello_app) as server, connect(server.port) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(client).status == 200
        port = client.getsockname()[1]
        parking = server._engine.parking
        assert wait_until(lambda: any(c.peer and c.peer[1] == port for c in tuple(parking.parked.values())))
        conn = next(c for c in tuple(parking.parked.values()) if c.peer and c.peer[1] == port)
        time.sleep(EVICT_IDLE_AFTER + 0.1)  # idle long enough to be a candidate
        server._engine.ep.modify(conn.fd, 0)  # its event not reported yet, as if queued
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_until(conn.has_input)
        assert parking.evict_stalled() is False
        server._engine.ep.modify(conn.fd, conn.armed)  # the queued event comes
        client.settimeout(5)
        assert read_response(client).status == 200  # parked again, and its request served


def test_a_batch_polled_by_a_leader_demoted_unawares_is_not_held_behind_its_slow_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, but the old leader's batch begins with a slow request: it must wake the
    real leader for the rest as soon as it queues them, not once the slow one is done.
    The epoll object is wrapped only to choose which of the two pollers gets the burst."""
    real_epoll = select.epoll
    hold, burst_sent = threading.Event(), threading.Event()
    stale: dict[str, str] = {}

    class ChoosingEpoll:
        def __init__(self) -> None:
            self._ep = real_epoll()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._ep, name)

        def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
            deadline = None if timeout < 0 else time.monotonic() + timeout
            while True:
                if hold.is_set():
                    if threading.current_thread().name != stale.get("name"):
                        time.sleep(0.001)  # the real leader sits this one out
                        continue
                    burst_sent.wait(5)
                    time.sleep(0.005)
                    events = self._ep.poll(0.001, maxevents)
                    if events:
                        hold.clear()
                        return events
                    continue
                events = self._ep.poll(0.001, maxevents)
                if events or (deadline is not None and time.monotonic() >= deadline):
                    return events

    monkeypatch.setattr(select, "epoll", ChoosingEpoll)
    app = UnawareDemotion()
    with running(app, threads=4, idle_timeout=60) as server:
        app.install(server)
        stale["name"] = ""
        socks = [connect(server.port, timeout=10) for _ in range(8)]
        racer = connect(server.port, timeout=10)
        try:
            for sock in socks:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(sock).status == 200
            racer.sendall(b"GET /race HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(racer).status == 200
            stale["name"] = app.racer_thread
            time.sleep(0.05)  # both threads in their polls
            hold.set()
            time.sleep(0.01)
            began = time.monotonic()
            socks[0].sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            for sock in socks[1:]:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            burst_sent.set()
            for sock in socks[1:]:
                sock.settimeout(5)
                assert read_response(sock).status == 200
            assert time.monotonic() - began < 0.5  # not behind /slow's second
            socks[0].settimeout(5)
            assert read_response(socks[0]).status == 200
        finally:
            hold.clear()
            burst_sent.set()
            for sock in (*socks, racer):
                sock.close()
