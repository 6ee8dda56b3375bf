"""The I/O engine: request threads that wait on one epoll set, accept, and serve.

Upper layer: imports `acceptor`, `connection`, `parking`, `leadership`, `closer` and `pool`.

Theory of operation
-------------------
Threads: up to `threads` request threads sharing one epoll set. One of them
at a time, the leader (see `gracehttp.leadership`), polls and serves what it
gets itself, one connection after another (`POLL_BATCH`), so the hot path has
no hand-off between threads; the others wait to lead, and take over when a
watchdog sees the leader stuck on one connection. `INITIAL_THREADS` start
with the engine; one more starts each time every started one is inside the
app (the watchdog found no thread waiting, or the reserve queued a request
nobody waits to take), up to `threads`, and then stays. When every request
thread is inside the app, the *reserve* poller leads: it runs no app, so it
is always free to accept, answer health probes, collect heads and bodies and
queue complete requests (`Parking.ready`), which request threads take, oldest
first, before they poll again. One housekeeping thread expires deadlines.

A listener event accepts every connection queued when it is served (up to
`ACCEPT_BATCH`, and with workers this worker's share), reads and queues the
requests of the first `READ_AT_ONCE` after the first, parks the rest, re-arms the
listener and serves the first on this thread (`gracehttp.acceptor` says why in
that order). A connection that has nothing more to do now is parked
(`gracehttp.parking`, which states the ownership rules). A leader's answers
that close their connections wait for their FINs in the `Closer` while it has
more to serve, and leave together before it polls (`gracehttp.closer`).

Invariants:
- a connection is owned by exactly one of: a thread, the parked set, the ready
  queue; only its owner changes it, through `Connection.enter` (the state table
  in `gracehttp.connstate`);
- every connection the kernel handed over is counted by the in-flight counters
  from before ``accept`` until it is closed or parked idle, so the drain cannot
  miss it;
- a descriptor in `Engine.pending` is an event nobody served yet. Connections are
  edge-triggered (`gracehttp.parking`), so when it is popped its connection may
  have been served for a later event, be owned by another thread (the event is
  recorded as missed, and its owner re-arms it as it parks it), or be closed, its
  number free or a newer connection's, which pays a read that finds nothing (and
  a re-arm if the event reported a FIN, an error or urgent data);
- while the engine runs, some thread polls (or takes from `pending`): the leader,
  or the reserve;
- every parked connection has a deadline, which the housekeeper enforces.

Locks: the acceptor's guards the connection count, the listener set and
accept-pausing; the parked set has its own (`Parking`); the thread pool's its
thread list and stop flag, so no thread starts after `stop` (`gracehttp.pool`);
the closer's a flush against a connection letting go of a held socket
(`gracehttp.closer`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import socket
import threading

from gracehttp.acceptor import DEFER_SECONDS, Acceptor
from gracehttp.balance import Balance
from gracehttp.busypoll import BusyPoll
from gracehttp.closer import Closer
from gracehttp.connection import Connection
from gracehttp.connstate import CLOSED
from gracehttp.leadership import Leadership
from gracehttp.listeners import Listener
from gracehttp.parking import Parking
from gracehttp.pool import ThreadPool
from gracehttp.site import Site

_ONESHOT_IN = select.EPOLLIN | select.EPOLLONESHOT
#: The client's FIN, an error or urgent data had come when its event was reported:
#: see `Parking.ended`.
_ENDED = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR | select.EPOLLPRI
#: Request threads started with the engine. Fast requests are all served by the
#: leader, so more only help when requests wait in the app; each idle one costs
#: about 16 KiB (its stack pages and Python frame chunk: 0.45 MiB of an idle server
#: at the default of 32), and starting one when needed takes about 0.1 ms, while
#: the reserve poller keeps accepting and queueing.
INITIAL_THREADS = 4
#: New connections of a batch whose requests are read at once and queued (`Engine._accept`):
#: about a millisecond of reading, the most the queue puts ahead of connections already
#: waiting in the epoll set.
READ_AT_ONCE = 32
#: Events one poll may return. Under load most connections of a busy worker are ready at once,
#: and one system call for several (served one by one, the others kept in `Engine.pending`)
#: saves most polls; a leader stuck on one leaves the rest to its successor, which takes them first.
POLL_BATCH = 8


class Engine:
    def __init__(self, site: Site, sockets: list[socket.socket], threads: int, max_connections: int,
                 logger: logging.Logger, name: str = "gracehttp", balance: Balance | None = None) -> None:
        self.site = site
        self.logger = logger
        self.ep = select.epoll()
        self.poll = BusyPoll(self.ep)  # the leader's (`gracehttp.busypoll`)
        self.parking = Parking(site, self.ep, self._closed)
        self._stopped = False
        self._wake_r, self._wake_w = os.pipe()
        #: Written by a request thread that wants the role back from the reserve.
        self._want_r, self._want_w = os.pipe()
        #: Written by a leader that stops leading with events left in `pending`: a thread
        #: already waiting in a poll (two lead for a moment after a hand-off) wakes for them.
        self._kick_r, self._kick_w = os.pipe()
        for fd in (self._want_r, self._want_w, self._kick_r, self._kick_w):
            os.set_blocking(fd, False)
        self._tick_event = threading.Event()
        #: Descriptors whose events a poll returned besides the one its thread served
        #: first: whichever thread leads next serves them before it polls again.
        self.pending: collections.deque[tuple[int, int]] = collections.deque()
        self.acceptor = Acceptor(site, self.ep, self.parking, sockets, max_connections, logger, self._tick_event,
                                 balance)
        #: The listeners by descriptor and the open connections (the acceptor's).
        self.listeners = self.acceptor.listeners
        self.open = self.acceptor.open
        self.leadership = Leadership()
        #: Where a leader's closing answers wait for their FINs (`gracehttp.closer`).
        self.closer = site.closer = Closer(self.leadership, self.pending, self.parking.ready)
        self.leadership.on_wanted = self._wanted
        site.promote = self.acceptor.promote
        self.pool = ThreadPool(name, self._loop, threads, logger)
        self.leadership.on_starved = self.pool.grow
        self.ep.register(self._wake_r, select.EPOLLIN)  # level-triggered: wakes every thread
        self.ep.register(self._want_r, 0)  # armed by the reserve poller while it leads
        self.ep.register(self._kick_r, select.EPOLLIN)  # level-triggered: read by whoever gets it

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self.acceptor.arm()
        for name, target in (("reserve", self._reserve_loop), ("watchdog", self.leadership.watch),
                             ("housekeeper", self._housekeep)):
            self.pool.start(name, target)
        self.pool.grow(INITIAL_THREADS)

    def stop_accepting(self, final: bool = False) -> None:
        """Take what is queued and close the listeners (`Acceptor.stop_accepting`)."""
        self.acceptor.stop_accepting(final)

    def hold(self, held: bool) -> None:
        """Take no new connections (or take them again), the sockets left open."""
        self.acceptor.hold(held)

    def close_idle(self) -> None:
        """Begin the drain's connection sweep: idle keep-alive connections close cleanly."""
        self.parking.close_idle()

    def close_all(self) -> None:
        """Forcibly close every connection, busy ones included (their threads see errors)."""
        self.site.closing = True
        self.closer.flush()  # held FINs first: their answers are whole
        self.parking.close_all()
        for conn in tuple(self.open):
            with contextlib.suppress(OSError):
                conn.io.sock.shutdown(socket.SHUT_RDWR)

    def stop(self, deadline: float) -> list[str]:
        """Stop the threads; return the names of those still busy at `deadline`."""
        self._stopped = True
        self.pool.stop()
        self.site.closer = None  # from now on every FIN goes at once; the held go below
        self.parking.stopped = True
        self.acceptor.close_listeners()
        os.write(self._wake_w, b"x")
        self._tick_event.set()
        self.leadership.stop()
        stuck = self.pool.join(deadline)
        self.parking.close_all()
        self.closer.flush()
        if not stuck:
            self.ep.close()
            for fd in (self._wake_r, self._wake_w, self._want_r, self._want_w, self._kick_r, self._kick_w):
                os.close(fd)
        return stuck

    # -- request threads ---------------------------------------------------------

    def _loop(self) -> None:
        poll = self.poll
        parking = self.parking
        unpark = parking.unpark
        ready = parking.ready
        listeners = self.listeners
        wake = self._wake_r
        kick = self._kick_r
        lead = self.leadership
        acceptor = self.acceptor
        pending = self.pending
        closer = self.closer
        while True:
            closer.batching(None)
            if closer.held:  # held while it led: the ready queue may hold it up, and then the wait to lead
                closer.flush()
            self._serve_ready()  # what the reserve queued while this thread was busy
            conn: Connection | None = None  # a follower holds none alive while it waits to lead
            turn = lead.acquire()
            closer.batching(turn)
            if closer.held:  # a demoted leader's, which may still be in its app
                closer.flush()
            while True:  # the leader: poll, then serve what came in on this thread
                if ready:
                    conn = parking.pop_ready()
                    if conn is not None:
                        lead.begin(turn)
                        self._serve(conn)
                        if not lead.end(turn):
                            self._hand_over()
                            break
                        continue
                if pending:
                    try:
                        fd, flags = pending.popleft()
                    except IndexError:  # a demoted leader, still leading for a moment, took it
                        continue
                else:
                    if closer.held:
                        closer.flush()
                    try:
                        events = poll(DEFER_SECONDS if acceptor.deferring else -1, POLL_BATCH)
                    except InterruptedError:
                        continue
                    except (OSError, ValueError):
                        lead.leave(turn)
                        return  # epoll closed
                    if acceptor.deferring:
                        acceptor.rearm_due()
                    if not events:
                        continue
                    fd, flags = events[0]
                    if len(events) > 1:
                        pending.extend(events[1:])
                        if not lead.leads(turn):
                            # Demoted just as it finished its last (the watchdog passed the role
                            # on, and the new leader may be waiting in a poll already): the
                            # first of these may be slow, so the others must not wait for it.
                            self._hand_over()
                if fd == wake:
                    lead.leave(turn)  # the next thread wakes, sees the pipe too, and leaves
                    return
                lead.begin(turn)
                lst = listeners.get(fd)
                if lst is not None:
                    self._accept(lst)
                elif fd == kick:
                    _drain(kick)
                else:
                    conn = unpark(fd)
                    if conn is not None:
                        if flags & _ENDED:
                            parking.ended(conn)
                        self._serve(conn)
                if not lead.end(turn):
                    self._hand_over()
                    break  # the watchdog passed the role on while we served: follow

    def _serve_ready(self) -> None:
        while self.parking.ready:
            conn = self.parking.pop_ready()
            if conn is not None:
                self._serve(conn)

    def _reserve_loop(self) -> None:
        """The poller of last resort: leads while every request thread is in the app.

        It runs no app code, so it never waits long: it accepts, answers health probes, collects
        heads and bodies, sends parked responses, queues complete requests for a free thread.
        """
        lead = self.leadership
        poll = self.ep.poll
        while lead.reserve_wait():
            turn = lead.reserve_acquire()
            if turn is None:
                continue
            _drain(self._want_r)  # a wish from an earlier turn must not end this one at once
            with contextlib.suppress(OSError):
                self.ep.modify(self._want_r, _ONESHOT_IN)
            try:
                while not lead.waiting and not self._stopped:
                    if self.parking.ready:
                        # Requests wait and no thread is free: one thread each (a batch's
                        # requests are queued at once, with no event to come for them).
                        self.pool.grow(len(self.parking.ready))
                    if self.pending:  # events a demoted leader's poll returned
                        try:
                            fd, flags = self.pending.popleft()
                        except IndexError:
                            continue
                    else:
                        if self.closer.held:  # a stuck leader's, before this poll
                            self.closer.flush()
                        try:
                            # The timeout is a safety net only: a request thread that wants the
                            # role writes to the want pipe, which ends this wait at once.
                            events = poll(DEFER_SECONDS if self.acceptor.deferring else 0.1, 1)
                        except InterruptedError:
                            continue
                        except (OSError, ValueError):
                            return
                        if self.acceptor.deferring:
                            self.acceptor.rearm_due()
                        if not events:
                            continue
                        fd, flags = events[0]
                    if fd == self._wake_r:
                        return
                    if fd == self._want_r:
                        _drain(self._want_r)
                        if lead.waiting:
                            break
                        with contextlib.suppress(OSError):  # stale: keep leading, listen again
                            self.ep.modify(self._want_r, _ONESHOT_IN)
                        continue
                    lst = self.listeners.get(fd)
                    if lst is not None:
                        self._accept(lst, run_app=False)
                    elif fd == self._kick_r:
                        _drain(fd)
                    else:
                        conn = self.parking.unpark(fd)
                        if conn is not None:
                            if flags & _ENDED:
                                self.parking.ended(conn)
                            self._serve(conn, run_app=False)
            finally:
                conn = None  # the last one served may close while this waits: not kept alive here
                _drain(self._want_r)
                lead.reserve_leave(turn)

    def _hand_over(self) -> None:
        """This thread no longer leads: events its poll returned and nobody took yet must
        not wait for the next event anywhere (the new leader may be in a poll already)."""
        if self.pending:
            with contextlib.suppress(OSError):  # full: it is readable anyway
                os.write(self._kick_w, b"x")

    def _wanted(self) -> None:
        """A request thread wants the role the reserve holds (called under its mutex)."""
        with contextlib.suppress(OSError):
            os.write(self._want_w, b"x")

    def _serve(self, conn: Connection, run_app: bool = True) -> None:
        state = CLOSED
        try:
            state = conn.serve(run_app)
        except BaseException:
            self.logger.exception("unexpected error serving a connection")
        finally:
            self.parking.dispose(conn, state)
            if self.closer.held:
                self.closer.flush_due()

    # -- accepting ---------------------------------------------------------------

    def _accept(self, lst: Listener, run_app: bool = True) -> None:
        """Take the queued connections (`Acceptor.take_batch`), read the requests of the
        first `READ_AT_ONCE` after the first, park the others, re-arm the listener, and
        serve the first on this thread (and the app, `run_app`).

        A new connection's request is nearly always in by the time it is accepted, so
        reading it at once and queueing the complete request (`Parking.ready`, served
        oldest first before the next poll, by whichever request thread is free) saves
        registering the connection, an event and a wake-up for it: Connection: close
        12,100 -> 15,200 requests/s, 81 -> 65 us of CPU each. Queued, not served here:
        a slow app in one of them must not hold the others; and only so many, as the
        queue goes before every connection already waiting in the epoll set.
        """
        accepted = self.acceptor.take_batch(lst)
        if not accepted:
            return  # the listener is seen to (`Acceptor.take_batch`)
        # Not through TLS: a handshake is a millisecond of CPU, not a read.
        read_now = 0 if accepted[0].io.tls else READ_AT_ONCE
        try:
            for conn in accepted[1:read_now + 1]:
                self._serve(conn, run_app=False)  # the request queued, or the connection parked
            self.parking.park_fresh(accepted[read_now + 1:])  # unread: first events in arrival order
        finally:
            self.acceptor.rearm(lst)  # after the batch: see `Acceptor.take_batch`
        self._serve(accepted[0], run_app)

    def _closed(self, conn: Connection) -> None:
        self.acceptor.closed(conn)

    # -- housekeeping ------------------------------------------------------------

    def _housekeep(self) -> None:
        tick = self.parking.tick()
        while not self._stopped:
            self._tick_event.wait(tick)
            self.parking.expire_due()
            self.acceptor.rearm_due()


def _drain(fd: int) -> None:
    """Empty a non-blocking wake-up pipe."""
    with contextlib.suppress(OSError):
        while os.read(fd, 64):
            pass
