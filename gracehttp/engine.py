"""The I/O engine: request threads that wait on one epoll set, accept, and serve.

Upper layer: imports `connection` and `inflight`.

Theory of operation
-------------------
Threads: `threads` request threads sharing one epoll set. One of them at a
time, the leader (see `gracehttp.leadership`), polls with ``maxevents=1`` and
serves what it gets itself, so the hot path has no hand-off between threads;
the others wait to lead, and take over when a watchdog sees the leader stuck
on one connection. One housekeeping thread expires deadlines.

Every descriptor is armed with EPOLLONESHOT, so exactly one thread gets each
event and nothing fires again until that thread re-arms it. A listener event
accepts one connection, re-arms the listener (unless ``max_connections`` is
reached) and serves the new connection directly. A connection that has nothing
more to read is *parked*: put in `parked` (fd -> connection) and re-armed.

Ownership: a connection belongs either to one thread or to `parked`. Whoever
`_unpark` returns it to owns it (an epoll event's thread, the housekeeper
expiring it, or the drain closing idle connections); the others get None and
leave it alone. Taking is compare-and-take under `_parked_lock`: the housekeeper
and the drain work from a snapshot, and a connection in it may have been closed
and its descriptor number reused by a new connection since, which they must not
take (nor take and put back: a put-back could overwrite a connection parked
under that number meanwhile, which would then be lost). An owner always ends with
`_dispose`, which parks or closes the connection and tells the in-flight
counters, so the drain sees every begun request. A parker inserts into `parked`
*before* re-arming, and re-checks `closing` *after*, so neither an event nor the
drain's sweep can miss a connection.

Locks: `_lock` guards the connection count, the listener set and accept-pausing;
`_parked_lock` every change to `parked`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time

from gracehttp.connection import Connection
from gracehttp.leadership import Leadership
from gracehttp.site import Site
from gracehttp.transport import CLOSE, LINGER, PARK_HEAD, PARK_IDLE

_ONESHOT_IN = select.EPOLLIN | select.EPOLLONESHOT
#: A lingering close waits at most this long for the client to close its side.
LINGER_SECONDS = 2.0
#: In the drain, an idle keep-alive connection used less than this long ago gets this
#: long (from its last response) to send one more request before it is closed.
DRAIN_IDLE_GRACE = 0.5


class Listener:
    __slots__ = ("fd", "server_addr", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        if sock.family == socket.AF_UNIX:
            self.server_addr = ("localhost", "")
        else:
            host, port = sock.getsockname()[:2]
            self.server_addr = (str(host), str(port))


class Engine:
    def __init__(self, site: Site, sockets: list[socket.socket], threads: int, max_connections: int,
                 logger: logging.Logger, name: str = "gracehttp") -> None:
        self.site = site
        self.logger = logger
        self.max_connections = max_connections
        self.ep = select.epoll()
        self.parked: dict[int, Connection] = {}
        self._parked_lock = threading.Lock()
        self.open: set[Connection] = set()
        self.listeners: dict[int, Listener] = {}
        self._lock = threading.Lock()
        self._paused = False
        self._stopped = False
        self._wake_r, self._wake_w = os.pipe()
        self._tick_event = threading.Event()
        self.leadership = Leadership()
        self._threads: list[threading.Thread] = []
        self._n_threads = threads
        self._name = name
        for sock in sockets:
            sock.setblocking(False)
            lst = Listener(sock)
            self.listeners[lst.fd] = lst
        self.ep.register(self._wake_r, select.EPOLLIN)  # level-triggered: wakes every thread

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        for lst in self.listeners.values():
            self.ep.register(lst.fd, _ONESHOT_IN)
        for i in range(self._n_threads):
            t = threading.Thread(target=self._loop, name=f"{self._name}-request-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self.leadership.watch, name=f"{self._name}-watchdog", daemon=True)
        t.start()
        self._threads.append(t)
        t = threading.Thread(target=self._housekeep, name=f"{self._name}-housekeeper", daemon=True)
        t.start()
        self._threads.append(t)

    def stop_accepting(self) -> None:
        """Close the listeners after taking every connection already in the accept queue.

        The taken connections are parked as begun requests, which the drain waits
        for, so a client whose connect() completed before this call gets its
        answer, not a reset.
        """
        with self._lock:
            listeners = list(self.listeners.values())
            self.listeners.clear()
        for lst in listeners:
            with contextlib.suppress(OSError):
                self.ep.unregister(lst.fd)
            while True:
                try:
                    sock, peer = lst.sock.accept()
                except OSError:
                    break
                conn = self._adopt(sock, peer, lst)
                if conn is not None:
                    self._dispose(conn, PARK_HEAD)
            lst.sock.close()

    def close_idle(self) -> None:
        """Begin the drain's connection sweep: idle keep-alive connections close cleanly."""
        self.site.closing = True
        for conn in tuple(self.parked.values()):
            if conn.mode == PARK_IDLE:
                self._sweep(conn)

    def _sweep(self, conn: Connection) -> None:
        if self._unpark(conn.fd, conn) is None:
            return
        if conn.mode != PARK_IDLE:
            # Swept already: the drain's sweep and a thread parking the connection just
            # as the drain began can both come here. Its grace or linger stands (its
            # deadline is not an idle deadline, so it must not be judged again).
            self._dispose(conn, conn.mode, conn.deadline)
            return
        now = time.monotonic()
        idle_since = conn.deadline - self.site.idle_timeout
        if conn.has_input():
            # A request is arriving: it becomes a begun request the drain waits for,
            # and is answered with Connection: close.
            self._dispose(conn, PARK_HEAD, now + self.site.read_header_timeout)
        elif now - idle_since < DRAIN_IDLE_GRACE:
            # Its client was busy a moment ago and its next request may be on the wire:
            # closing now would lose it (the keep-alive race of RFC 9112 section 9.6).
            # Wait a little, as a begun request; one that comes is answered with
            # Connection: close, and a quiet connection then closes.
            self._dispose(conn, PARK_HEAD, idle_since + DRAIN_IDLE_GRACE)
        else:
            self._dispose(conn, LINGER)

    def close_all(self) -> None:
        """Forcibly close every connection, busy ones included (their threads see errors)."""
        self.site.closing = True
        for conn in tuple(self.open):
            if self._unpark(conn.fd, conn) is not None:
                self._dispose(conn, CLOSE)
            else:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)

    def stop(self, deadline: float) -> list[str]:
        """Stop the threads; return the names of those still busy at `deadline`."""
        self._stopped = True
        with self._lock:
            listeners = list(self.listeners.values())
            self.listeners.clear()
        for lst in listeners:
            lst.sock.close()
        os.write(self._wake_w, b"x")
        self._tick_event.set()
        self.leadership.stop()
        stuck = []
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                stuck.append(t.name)
        for conn in tuple(self.parked.values()):
            if self._unpark(conn.fd, conn) is not None:
                self._dispose(conn, CLOSE)
        if not stuck:
            self.ep.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return stuck

    # -- request threads ---------------------------------------------------------

    def _loop(self) -> None:
        poll = self.ep.poll
        unpark = self._unpark
        listeners = self.listeners
        wake = self._wake_r
        lead = self.leadership
        while True:
            gen = lead.acquire()
            while True:  # the leader: poll, then serve what came in on this thread
                try:
                    events = poll(-1, 1)
                except InterruptedError:
                    continue
                except (OSError, ValueError):
                    lead.leave(gen)
                    return  # epoll closed
                if not events:
                    continue
                fd = events[0][0]
                if fd == wake:
                    lead.leave(gen)  # the next thread wakes, sees the pipe too, and leaves
                    return
                lead.begin()
                lst = listeners.get(fd)
                if lst is not None:
                    self._accept(lst)
                else:
                    conn = unpark(fd)
                    if conn is not None:
                        self._serve(conn)
                if not lead.end(gen):
                    break  # the watchdog passed the role on while we served: follow

    def _accept(self, lst: Listener) -> None:
        try:
            sock, peer = lst.sock.accept()
        except (BlockingIOError, InterruptedError):
            self._rearm_listener(lst)
            return
        except OSError as exc:
            # EMFILE/ENFILE/ENOBUFS: back off briefly instead of spinning on the listener.
            self.logger.warning("accept failed: %s", exc)
            self._tick_event.wait(0.05)
            self._rearm_listener(lst)
            return
        conn = self._adopt(sock, peer, lst)
        self._rearm_listener(lst)  # after counting the new connection against max_connections
        if conn is not None:
            self._serve(conn)

    def _adopt(self, sock: socket.socket, peer: object, lst: Listener) -> Connection | None:
        """Wrap an accepted socket; the caller owns it (counted busy) until `_dispose`."""
        try:
            conn = Connection(sock, self.site, lst.server_addr, peer)
        except OSError:
            sock.close()
            return None
        self.site.inflight.claim(False)
        with self._lock:
            self.open.add(conn)
        return conn

    def _rearm_listener(self, lst: Listener) -> None:
        with self._lock:
            if lst.fd not in self.listeners:
                return
            if len(self.open) >= self.max_connections:
                self._paused = True
                return
            with contextlib.suppress(OSError):
                self.ep.modify(lst.fd, _ONESHOT_IN)

    def _unpark(self, fd: int, expect: Connection | None = None) -> Connection | None:
        """Take a parked connection for this thread; None if another owner got it first,
        or if what is parked under `fd` is not `expect` (its descriptor was reused)."""
        with self._parked_lock:
            conn = self.parked.get(fd)
            if conn is None or (expect is not None and conn is not expect):
                return None
            del self.parked[fd]
        self.site.inflight.claim(conn.mode == PARK_HEAD)
        return conn

    def _serve(self, conn: Connection) -> None:
        action = CLOSE
        try:
            action = conn.serve()
        except BaseException:
            self.logger.exception("unexpected error serving a connection")
        finally:
            self._dispose(conn, action)

    def _dispose(self, conn: Connection, action: int, deadline: float | None = None) -> None:
        """Park or close an owned connection, then release it to the in-flight counters."""
        parked_head = False
        try:
            if action == PARK_IDLE:
                self._park(conn, PARK_IDLE, time.monotonic() + self.site.idle_timeout)
            elif action == PARK_HEAD:
                if deadline is None:
                    started = conn.head_started or conn.deadline - self.site.read_header_timeout
                    deadline = started + (self.site.read_timeout if conn.body_wait else self.site.read_header_timeout)
                parked_head = self._park(conn, PARK_HEAD, deadline)
            elif action == LINGER:
                if conn.mode != LINGER:
                    conn.begin_linger()
                    deadline = deadline or time.monotonic() + LINGER_SECONDS
                # A lingering connection that read some bytes keeps the deadline it got
                # when the linger began: a client trickling bytes cannot extend it.
                self._park(conn, LINGER, deadline or conn.deadline)
            else:
                self._close(conn)
        finally:
            self.site.inflight.release(parked_head)

    def _park(self, conn: Connection, mode: int, deadline: float) -> bool:
        """Put an owned connection in the parked set and arm it; False if it was closed."""
        if self._stopped:
            self._close(conn)
            return False
        conn.mode = mode
        conn.deadline = deadline
        fd = conn.fd
        with self._parked_lock:
            self.parked[fd] = conn
        try:
            self._arm(conn)
        except OSError:
            with self._parked_lock:
                ours = self.parked.get(fd) is conn
                if ours:
                    del self.parked[fd]
            if ours:
                self._close(conn)
                return False
            return True  # an event's thread already owns it
        if mode == PARK_IDLE and self.site.closing:
            self._sweep(conn)  # the drain's sweep may have run just before we parked
        return True

    def _arm(self, conn: Connection) -> None:
        """Arm the connection's descriptor for one event, registering it the first time.

        `registered` is only a hint of which call to make: once the connection is in
        `parked`, another thread may take it before this one has armed it (one woken
        by a stale event for a closed connection that had the same descriptor number)
        and park it in turn, so two parkers can race on the first registration. Both
        must end with the descriptor armed: "not registered" and "already registered"
        are answered with the other call, never with closing the connection.
        """
        fd = conn.fd
        first = not conn.registered
        conn.registered = True
        try:
            if first:
                self.ep.register(fd, _ONESHOT_IN)
            else:
                self.ep.modify(fd, _ONESHOT_IN)
        except FileExistsError:
            self.ep.modify(fd, _ONESHOT_IN)
        except FileNotFoundError:
            try:
                self.ep.register(fd, _ONESHOT_IN)
            except FileExistsError:  # the other parker registered it meanwhile
                self.ep.modify(fd, _ONESHOT_IN)

    def _close(self, conn: Connection) -> None:
        if conn.registered:
            with contextlib.suppress(OSError, ValueError):
                self.ep.unregister(conn.fd)
        conn.close()
        with self._lock:
            self.open.discard(conn)
            resume = self._paused and len(self.open) < self.max_connections
            if resume:
                self._paused = False
                for lst in self.listeners.values():
                    with contextlib.suppress(OSError):
                        self.ep.modify(lst.fd, _ONESHOT_IN)

    # -- housekeeping ------------------------------------------------------------

    def _tick(self) -> float:
        site = self.site
        shortest = min(site.read_header_timeout, site.idle_timeout, LINGER_SECONDS, DRAIN_IDLE_GRACE)
        return max(0.01, min(0.5, shortest / 4))

    def _housekeep(self) -> None:
        tick = self._tick()
        while not self._stopped:
            self._tick_event.wait(tick)
            now = time.monotonic()
            for conn in tuple(self.parked.values()):
                if conn.deadline <= now and self._unpark(conn.fd, conn) is not None:
                    between = conn.mode == PARK_HEAD and conn.requests and not conn.body_wait and not conn.buf
                    if between and conn.has_input():
                        # The drain's grace ran out just as the client's next request came:
                        # give it its own header deadline, and a thread serves it.
                        self._dispose(conn, PARK_HEAD, now + self.site.read_header_timeout)
                    else:
                        self._dispose(conn, conn.expire())

    @property
    def open_count(self) -> int:
        return len(self.open)
