"""The I/O engine: request threads that wait on one epoll set, accept, and serve.

Upper layer: imports `connection`, `parking` and `leadership`.

Theory of operation
-------------------
Threads: `threads` request threads sharing one epoll set. One of them at a
time, the leader (see `gracehttp.leadership`), polls with ``maxevents=1`` and
serves what it gets itself, so the hot path has no hand-off between threads;
the others wait to lead, and take over when a watchdog sees the leader stuck
on one connection. When every request thread is inside the app, the *reserve*
poller leads: it runs no app, so it is always free to accept, answer health
probes, collect heads and bodies and queue complete requests (`Parking.ready`),
which request threads take, oldest first, before they poll again. One
housekeeping thread expires deadlines.

A listener event accepts every connection queued when it is served (up to
`ACCEPT_BATCH`), parks them, re-arms the listener and serves the first on this
thread (see `Engine._accept` for why in that order). A
connection that has nothing more to do now is parked (`gracehttp.parking`,
which states the ownership rules).

Invariants:
- a connection is owned by exactly one of: a thread, the parked set, the ready
  queue; only its owner changes it, through `Connection.enter` (the state table
  in `gracehttp.connstate`);
- every connection the kernel handed over is counted by the in-flight counters
  from before ``accept`` until it is closed or parked idle, so the drain cannot
  miss it;
- while the engine runs, some thread polls: the leader, or the reserve;
- every parked connection has a deadline, which the housekeeper enforces.

Locks: `_lock` guards the connection count, the listener set and accept-pausing;
the parked set has its own (`Parking`).
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
from gracehttp.connstate import ConnState
from gracehttp.leadership import Leadership
from gracehttp.listeners import ACCEPT_BATCH, Listener, reserve_descriptors
from gracehttp.parking import Parking
from gracehttp.site import Site

_ONESHOT_IN = select.EPOLLIN | select.EPOLLONESHOT
#: Overflow connections (admitted past max_connections, see `Engine._admit_past_limit`)
#: open at once, past which accepting pauses. Each lives at most OVERFLOW_GRACE unless
#: it sends a request, so this bounds descriptors, not time: a flood of connections that
#: send nothing is drained from the kernel's queue at this many per grace period.
OVERFLOW_MAX = 4096
_SPARE_DESCRIPTORS = 256


class Engine:
    def __init__(self, site: Site, sockets: list[socket.socket], threads: int, max_connections: int,
                 logger: logging.Logger, name: str = "gracehttp") -> None:
        self.site = site
        self.logger = logger
        self.max_connections = max_connections
        self.ep = select.epoll()
        self.parking = Parking(site, self.ep, self._closed)
        self.open: set[Connection] = set()
        self.listeners: dict[int, Listener] = {}
        self._lock = threading.Lock()
        self._paused = False
        self._stopped = False
        #: Open connections admitted past max_connections (see `_admit_past_limit`).
        self._overflow = 0
        self._wake_r, self._wake_w = os.pipe()
        #: Written by a request thread that wants the role back from the reserve.
        self._want_r, self._want_w = os.pipe()
        os.set_blocking(self._want_r, False)
        os.set_blocking(self._want_w, False)
        self._tick_event = threading.Event()
        self.leadership = Leadership()
        self.leadership.on_wanted = self._wanted
        site.promote = self._promote
        self._threads: list[threading.Thread] = []
        self.threads = threads
        self._held: dict[int, Listener] | None = {}  # set aside by `hold`; None once accepting stopped
        self._name = name
        for sock in sockets:
            sock.setblocking(False)
            lst = Listener(sock, site.rcvtimeo, site.sndtimeo)
            self.listeners[lst.fd] = lst
        # Every connection it may hold at once, and some for files and the app's own use.
        reserve_descriptors(max_connections + OVERFLOW_MAX + _SPARE_DESCRIPTORS)
        self.ep.register(self._wake_r, select.EPOLLIN)  # level-triggered: wakes every thread
        self.ep.register(self._want_r, 0)  # armed by the reserve poller while it leads

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        for lst in self.listeners.values():
            self.ep.register(lst.fd, _ONESHOT_IN)
        targets = [(f"request-{i}", self._loop) for i in range(self.threads)]
        targets += [("reserve", self._reserve_loop), ("watchdog", self.leadership.watch),
                    ("housekeeper", self._housekeep)]
        for name, target in targets:
            t = threading.Thread(target=target, name=f"{self._name}-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop_accepting(self, final: bool = False) -> None:
        """Close the listeners after taking every connection already in the accept queue.

        The taken connections are parked as begun requests, which the drain waits
        for, so a client whose connect() completed before this call gets its
        answer, not a reset. `final`: no other process keeps these listeners (not a
        hand-over to a new generation or worker), so new connections are shut out
        first (`Listener.refuse_new`): none can land in the queue after the last
        accept, where closing would reset it.
        """
        with self._lock:
            listeners = list(self.listeners.values())
            self.listeners.clear()
            self._held = None  # held ones stay set aside: their queue is the other workers'
        for lst in listeners:
            with contextlib.suppress(OSError):
                self.ep.unregister(lst.fd)
            if final:
                lst.refuse_new()
            while taken := self._take(lst, ACCEPT_BATCH):
                self.parking.park_fresh(taken)
            lst.sock.close()

    def hold(self, held: bool) -> None:
        """Take no new connections (or take them again), the sockets left open: a worker
        whose every request thread is stuck leaves new clients to the other workers."""
        with self._lock:
            if self._held is None:
                return
            src, dst = (self.listeners, self._held) if held else (self._held, self.listeners)
            for fd in list(src):
                dst[fd] = src.pop(fd)
                with contextlib.suppress(OSError):
                    self.ep.modify(fd, 0 if held else _ONESHOT_IN)

    def close_idle(self) -> None:
        """Begin the drain's connection sweep: idle keep-alive connections close cleanly."""
        self.parking.close_idle()

    def close_all(self) -> None:
        """Forcibly close every connection, busy ones included (their threads see errors)."""
        self.site.closing = True
        self.parking.close_all()
        for conn in tuple(self.open):
            with contextlib.suppress(OSError):
                conn.io.sock.shutdown(socket.SHUT_RDWR)

    def stop(self, deadline: float) -> list[str]:
        """Stop the threads; return the names of those still busy at `deadline`."""
        self._stopped = True
        self.parking.stopped = True
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
        self.parking.close_all()
        if not stuck:
            self.ep.close()
            for fd in (self._wake_r, self._wake_w, self._want_r, self._want_w):
                os.close(fd)
        return stuck

    # -- request threads ---------------------------------------------------------

    def _loop(self) -> None:
        poll = self.ep.poll
        parking = self.parking
        unpark = parking.unpark
        ready = parking.ready
        listeners = self.listeners
        wake = self._wake_r
        lead = self.leadership
        while True:
            self._serve_ready()  # what the reserve queued while this thread was busy
            turn = lead.acquire()
            while True:  # the leader: poll, then serve what came in on this thread
                if ready:
                    conn = parking.pop_ready()
                    if conn is not None:
                        lead.begin(turn)
                        self._serve(conn)
                        if not lead.end(turn):
                            break
                        continue
                try:
                    events = poll(-1, 1)
                except InterruptedError:
                    continue
                except (OSError, ValueError):
                    lead.leave(turn)
                    return  # epoll closed
                if not events:
                    continue
                fd = events[0][0]
                if fd == wake:
                    lead.leave(turn)  # the next thread wakes, sees the pipe too, and leaves
                    return
                lead.begin(turn)
                lst = listeners.get(fd)
                if lst is not None:
                    self._accept(lst)
                else:
                    conn = unpark(fd)
                    if conn is not None:
                        self._serve(conn)
                if not lead.end(turn):
                    break  # the watchdog passed the role on while we served: follow

    def _serve_ready(self) -> None:
        while self.parking.ready:
            conn = self.parking.pop_ready()
            if conn is not None:
                self._serve(conn)

    def _reserve_loop(self) -> None:
        """The poller of last resort: leads while every request thread is in the app.

        It runs no app code, so it never waits long: it accepts, answers health
        probes, collects request heads and bodies, sends parked responses, and
        queues complete requests for the next request thread that comes free.
        """
        lead = self.leadership
        poll = self.ep.poll
        while lead.reserve_wait():
            turn = lead.reserve_acquire()
            if turn is None:
                continue
            self._drain_want()  # a wish from an earlier turn must not end this one at once
            with contextlib.suppress(OSError):
                self.ep.modify(self._want_r, _ONESHOT_IN)
            try:
                while not lead.waiting and not self._stopped:
                    try:
                        # The timeout is a safety net only: a request thread that wants the
                        # role writes to the want pipe, which ends this wait at once.
                        events = poll(0.1, 1)
                    except InterruptedError:
                        continue
                    except (OSError, ValueError):
                        return
                    if not events:
                        continue
                    fd = events[0][0]
                    if fd == self._wake_r:
                        return
                    if fd == self._want_r:
                        self._drain_want()
                        if lead.waiting:
                            break
                        with contextlib.suppress(OSError):  # stale: keep leading, listen again
                            self.ep.modify(self._want_r, _ONESHOT_IN)
                        continue
                    lst = self.listeners.get(fd)
                    if lst is not None:
                        self._accept(lst, run_app=False)
                    else:
                        conn = self.parking.unpark(fd)
                        if conn is not None:
                            self._serve(conn, run_app=False)
            finally:
                self._drain_want()
                lead.reserve_leave(turn)

    def _drain_want(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._want_r, 64):
                pass

    def _wanted(self) -> None:
        """A request thread wants the role the reserve holds (called under its mutex)."""
        with contextlib.suppress(OSError):
            os.write(self._want_w, b"x")

    def _serve(self, conn: Connection, run_app: bool = True) -> None:
        state = ConnState.CLOSED
        try:
            state = conn.serve(run_app)
        except BaseException:
            self.logger.exception("unexpected error serving a connection")
        finally:
            self.parking.dispose(conn, state)

    # -- accepting ---------------------------------------------------------------

    def _accept(self, lst: Listener, run_app: bool = True) -> None:
        """Take the connections in the kernel's queue (up to `ACCEPT_BATCH`), then serve them.

        All of them: the listener is one event among the connections', so each one left
        queued would wait a whole round of the others (with 1,000 busy keep-alive
        clients, seconds). But only those queued now (`Listener.queued`), not those
        that arrive while the batch is taken: in a flood of connections, a batch that
        chased arrivals would hold back every request already accepted, a health probe's
        among them. For the same reason the listener is re-armed after the batch is
        parked: an accepted connection whose request is in goes before the next batch.
        A batch costs one claim and one release of the in-flight counters, and one lock
        each of the open and the parked set. The first gets this thread (and the app,
        `run_app`); the others are parked unread, their first events in arrival order.
        """
        with self._lock:
            room = self.max_connections - (len(self.open) - self._overflow)
            # Past the limit (room < 0: overflow connections promoted by their requests) the
            # overflow's own bound still admits up to OVERFLOW_MAX of them.
            batch = min(ACCEPT_BATCH, max(room, 0) + OVERFLOW_MAX - self._overflow, lst.queued())
        accepted = self._take(lst, max(1, batch))
        for conn in accepted[max(0, room):]:
            self._admit_past_limit(conn)
        # Parked unread: an epoll registration is all it costs now, so the kernel's queue
        # drains as fast as it can; one that has sent its request is ready at once.
        self.parking.park_fresh(accepted[1:])
        self._rearm_listener(lst)  # after counting the new connections against the limits
        if accepted:
            self._serve(accepted[0], run_app)

    def _take(self, lst: Listener, batch: int) -> list[Connection]:
        """Accept up to `batch` connections, counted busy and open; the caller owns them.

        The whole batch is counted busy before the first accept, so the drain never
        sees a moment in which a connection the kernel handed over is counted nowhere;
        what the queue did not have is given back after.
        """
        inflight = self.site.inflight
        inflight.claim(False, batch)
        taken: list[Connection] = []
        site, addr, tuned = self.site, lst.server_addr, lst.tuned
        try:
            for _ in range(batch):
                try:
                    sock, peer = lst.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    # EMFILE/ENFILE/ENOBUFS: back off briefly instead of spinning on the listener.
                    self.logger.warning("accept failed: %s", exc)
                    self._tick_event.wait(0.05)
                    break
                try:
                    taken.append(Connection(sock, site, addr, peer, tuned))
                except OSError:
                    sock.close()
        finally:
            inflight.release(batch - len(taken))
            with self._lock:
                self.open.update(taken)
        return taken

    def _admit_past_limit(self, conn: Connection) -> None:
        """Make room for a connection past ``max_connections``.

        Accepting does not simply pause there: clients holding every slot with
        nothing (idle keep-alive connections, heads that never finish, connections
        that send nothing) would then lock out everyone, health probes included.
        Instead the new connection takes the slot of one that is stalled
        (`Parking.evict_stalled`), or, when none is, it is admitted as an *overflow*
        connection: it must send its request head within `OVERFLOW_GRACE` (a real
        client sends it at once) and is closed otherwise; a health probe on it is
        answered, any other request is served like any other. Only when
        `OVERFLOW_MAX` overflow connections are open does accepting pause.
        """
        if self.parking.evict_stalled():
            return
        conn.overflow = True
        conn.enter(conn.state)  # its head deadline, now the overflow grace
        with self._lock:
            self._overflow += 1

    def _promote(self, conn: object) -> None:
        """An overflow connection sent a request to serve: it counts as an ordinary one."""
        with self._lock:
            self._overflow -= 1

    def _rearm_listener(self, lst: Listener) -> None:
        with self._lock:
            if lst.fd not in self.listeners:
                return
            if self._overflow >= OVERFLOW_MAX:
                self._paused = True
                return
            with contextlib.suppress(OSError):
                self.ep.modify(lst.fd, _ONESHOT_IN)

    def _closed(self, conn: Connection) -> None:
        """A connection closed: it no longer counts, and accepting resumes if it had paused."""
        with self._lock:
            self.open.discard(conn)
            if conn.overflow:
                self._overflow -= 1
            if self._paused and self._overflow < OVERFLOW_MAX:
                self._paused = False
                for lst in self.listeners.values():
                    with contextlib.suppress(OSError):
                        self.ep.modify(lst.fd, _ONESHOT_IN)

    # -- housekeeping ------------------------------------------------------------

    def _housekeep(self) -> None:
        tick = self.parking.tick()
        while not self._stopped:
            self._tick_event.wait(tick)
            self.parking.expire_due()
