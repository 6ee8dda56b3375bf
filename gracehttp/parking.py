"""Where connections wait while no thread owns them: parked on the epoll set, with
their deadlines, or queued for a request thread.

Upper layer, below `engine`: imports `connection`, `connstate` and `site`.

Theory of operation
-------------------
A connection's descriptor is registered once, edge-triggered (EPOLLIN, or
EPOLLOUT while it is WRITING a response or yielding its turn), and stays
registered: parking an idle connection costs no system call. That is sound
because a connection is parked in a reading state only once its socket has been
read dry (a read that found nothing, or gave less than it asked for, after the
event that woke it), and any byte that arrives later raises a new edge; one
parked again without a read (by the housekeeper, the drain's sweep, eviction)
was read dry before, and what came since raised edges, missed or not. A short
read does not show a FIN that came with the last bytes, nor bytes past urgent
data's mark (where a read stops), but the event does (EPOLLRDHUP, EPOLLPRI;
`ended`). Parking re-arms (``EPOLL_CTL_MOD``, which reports the descriptor at
once if it is ready) only where that does not hold or another event is wanted:
a change between EPOLLIN and EPOLLOUT, WRITING, a lingering close (which reads a
bounded amount per turn), TLS (whose records may wait unread), an event that
reported a FIN or urgent data, and a *missed* event.

A connection is armed by its owner *before* it is put in the parked set: once
there, another thread may take it (an edge comes at any time) and arm it in
turn, which a late call of the first parker's would undo.

Missed events: an edge is delivered to whichever thread polls, also while the
connection is owned elsewhere (a thread serving it, the ready queue, the
housekeeper). `unpark` then finds nothing parked under the descriptor and
records it in `_missed`; the owner finds the record as it parks the connection
and re-arms it, under the lock, so the event comes again, now for a parked
connection. A record for a descriptor that was closed meanwhile is dropped when
the next connection with the number registers, or costs it one re-arm.

Ownership: a connection belongs to exactly one of: a thread, `parked` (fd ->
connection), or `ready` (the queue of complete requests the reserve poller read
while every request thread was busy). Whoever `unpark` returns it to owns it (an
epoll event's thread, the housekeeper expiring it, or the drain's sweep); the
others get None and leave it alone. Taking is compare-and-take under `_lock`:
the housekeeper and the drain work from a snapshot, and a connection in it may
have been closed and its descriptor number reused by a new connection since,
which they must not take (nor take and put back: a put-back could overwrite a
connection parked under that number meanwhile, which would then be lost). An
owner always ends with `dispose`, which parks, queues or closes the connection
and tells the in-flight counters, so the drain sees every begun request. A
parker reads `_missed` as it inserts into `parked`, under the lock, and
re-checks `closing` after, so neither an event nor the drain's sweep can miss a
connection.

Deadlines are the connection's own (`Connection.enter` sets one per state); the
housekeeper thread expires those that pass, a tick at a time.
"""

from __future__ import annotations

import collections
import select
import threading
import time
from collections.abc import Callable

from gracehttp.connection import Connection
from gracehttp.connstate import (
    CLOSED,
    IDLE,
    LINGER_SECONDS,
    LINGERING,
    PARKED_BEGUN,
    QUEUED,
    READING_BODY,
    READING_HEAD,
    WRITING,
    ConnState,
)
from gracehttp.errors import ProtocolError
from gracehttp.site import Site

#: EPOLLRDHUP and EPOLLPRI: an event tells whether the client's FIN, or urgent data, had
#: come (see `Parking.ended`).
_EDGE_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLPRI | select.EPOLLET
_EDGE_OUT = select.EPOLLOUT | select.EPOLLET
#: In the drain, an idle keep-alive connection used less than this long ago gets this
#: long (from its last response) to send one more request before it is closed.
DRAIN_IDLE_GRACE = 0.5

#: Past max_connections, an idle keep-alive connection may give its slot to a new one
#: after this long idle (less could close it under a request its client just sent)...
EVICT_IDLE_AFTER = DRAIN_IDLE_GRACE
#: ...and a connection that has waited this long for an unfinished request head
#: (real clients send theirs in one go; a slowloris holds its slot this way).
EVICT_HEAD_AFTER = 1.0


class Parking:
    def __init__(self, site: Site, ep: select.epoll, on_close: Callable[[Connection], None]) -> None:
        self.site = site
        self.ep = ep
        self.parked: dict[int, Connection] = {}
        #: Complete requests the reserve poller read while every request thread was busy.
        self.ready: collections.deque[Connection] = collections.deque()
        self._lock = threading.Lock()
        #: Descriptors an event came for while their connection was not parked.
        self._missed: set[int] = set()
        self._on_close = on_close
        self.stopped = False
        #: `evict_stalled` found no candidate: none can appear before this time.
        self._no_victim_until = 0.0

    def unpark(self, fd: int, expect: Connection | None = None) -> Connection | None:
        """Take a parked connection for this thread; None if another owner got it first,
        or if what is parked under `fd` is not `expect` (its descriptor was reused)."""
        lock = self._lock
        lock.acquire()  # not `with` (see `_publish`)
        try:
            if expect is None:  # an event's thread: whatever is parked there is its own
                conn = self.parked.pop(fd, None)
                if conn is None:  # owned elsewhere (or closed): its owner re-arms it when it parks
                    self._missed.add(fd)
                    return None
            else:  # a sweep's snapshot: take it only if it is still that connection
                if self.parked.get(fd) is not expect:
                    return None
                conn = expect
                del self.parked[fd]
            # Counted busy before it leaves the parked set's lock: an idle connection
            # woken by a new request is never, even for a moment, counted nowhere.
            self.site.inflight.claim(conn.state in PARKED_BEGUN)
        finally:
            lock.release()
        return conn

    def pop_ready(self) -> Connection | None:
        try:
            return self.ready.popleft()
        except IndexError:
            return None

    def dispose(self, conn: Connection, state: ConnState) -> None:
        """Park, queue or close an owned connection as its `state` says, then release it
        to the in-flight counters (a queued one stays counted busy until the request
        thread that serves it is done)."""
        if state is QUEUED:
            self.ready.append(conn)
            return
        inflight = self.site.inflight
        try:
            if state is CLOSED:
                self.close(conn)
            elif state in PARKED_BEGUN:
                inflight.count_heads()  # before another thread can take it (and uncount it)
                if not self.park(conn):
                    inflight.uncount_heads()
            else:
                self.park(conn)
        finally:
            inflight.release()

    def park(self, conn: Connection) -> bool:
        """Put an owned connection in the parked set, armed if it needs it (see the module's
        docstring); False if it was closed."""
        if self.stopped:
            self.close(conn)
            return False
        state = conn.state
        events = _EDGE_OUT if state is WRITING or conn.yielding else _EDGE_IN
        # A lingering turn reads a bounded amount: re-armed whatever it was armed for.
        if (conn.armed != events or state is LINGERING) and not self._arm_owned(conn, events):
            return False
        if not self._publish(conn, events):
            return False
        if state is IDLE and self.site.closing:
            self.sweep(conn)  # the drain's sweep may have run just before we parked
        return True

    def ended(self, conn: Connection) -> None:
        """The event that woke `conn` reported its client's FIN (or an error, or urgent
        data). The FIN may have come with the last bytes, and a read that gave less than
        it asked for does not show it (nor does one that stopped at urgent data's mark),
        and no edge comes for it later. So the next park re-arms, which reports what is
        left at once."""
        conn.armed = -abs(conn.armed)

    def park_fresh(self, conns: list[Connection]) -> None:
        """Park connections just accepted (unread, awaiting their first head) and release
        them to the in-flight counters: `dispose` for a batch."""
        if not conns:
            return
        if self.stopped:
            for conn in conns:
                self.dispose(conn, conn.state)
            return
        inflight = self.site.inflight
        inflight.count_heads(len(conns))  # READING_HEAD: parked as begun
        closed = sum(not (self._arm_owned(conn, _EDGE_IN) and self._publish(conn, _EDGE_IN)) for conn in conns)
        if closed:
            inflight.uncount_heads(closed)
        inflight.release(len(conns))

    def _arm_owned(self, conn: Connection, events: int) -> bool:
        """Arm a connection this thread owns and has not parked yet, registering it the
        first time; False if that failed and it was closed. Armed before it is parked, as
        nobody else can take it then: a thread that took it from the parked set could
        arm it in turn, and a late call of ours would undo that."""
        fd = conn.fd
        first = not conn.armed
        # Kept as armed only where parking again with the same events needs no call (a
        # reading state; not TLS, whose records may wait unread): else negated.
        conn.armed = events if events == _EDGE_IN and not conn.io.tls else -events
        if first:
            self._missed.discard(fd)  # a closed connection's: registering reports what is ready
        try:
            self.control(fd, events, first)
        except OSError:
            self.close(conn)
            return False
        return True

    def _publish(self, conn: Connection, events: int) -> bool:
        """Put an armed connection in the parked set; False if it was closed. An edge that
        came while it was owned (`_missed`) is reported again by re-arming it, under the
        lock, so that no thread can take it before the call is made."""
        fd = conn.fd
        failed = False
        lock = self._lock
        lock.acquire()  # not `with`: twice per request, and `with` binds two methods each time
        try:
            self.parked[fd] = conn
            if fd in self._missed:
                self._missed.discard(fd)
                try:
                    self.control(fd, events, False)
                except OSError:
                    del self.parked[fd]
                    failed = True
        finally:
            lock.release()
        if failed:
            self.close(conn)
        return not failed

    def control(self, fd: int, events: int, first: bool) -> None:
        """Register (`first`) or re-arm a descriptor, whichever the epoll set needs: a
        wrong hint ("not registered" or "already registered") is answered with the other
        call, never with closing the connection."""
        try:
            if first:
                self.ep.register(fd, events)
            else:
                self.ep.modify(fd, events)
        except FileExistsError:
            self.ep.modify(fd, events)
        except FileNotFoundError:
            self.ep.register(fd, events)

    def close(self, conn: Connection) -> None:
        """Close an owned connection. Not unregistered first: closing its socket, the one
        reference to it (accepted sockets are never duplicated, and programs the app
        execs do not inherit them), takes it out of the epoll set: unregistering cost a
        ``Connection: close`` request 0.99 ``epoll_ctl`` calls against 0.56 (perf stat,
        wrk -c50). A child the app forked without exec holds a copy until it exits (and
        its client gets no FIN meanwhile); each time that client sends, an edge comes
        under the old number, and whoever has the number then finds nothing to read and
        is parked again (or, owned, is re-armed once: a missed event)."""
        conn.close()
        self._on_close(conn)

    def evict_stalled(self) -> bool:
        """Close one connection that holds a slot without using it, to make room for a
        new one past max_connections; False if there is none.

        A keep-alive connection idle for longer than `EVICT_IDLE_AFTER` (as nginx
        reuses idle keep-alive connections when it runs out), or one that has waited
        more than `EVICT_HEAD_AFTER` for a request head it has not finished (a
        slowloris, or a connection that sent nothing). Requests under way (a body
        being received, queued, in the app, a response being sent) are never evicted.

        Under a flood this runs for every accept, so it must not cost a scan of every
        connection each time: the scan stops at the first candidate (the parked set
        keeps parking order, so the longest parked come first), and a scan that finds
        none notes when the first candidate can appear and is not repeated before.
        """
        now = time.monotonic()
        if now < self._no_victim_until:
            return False
        idle_before, head_before = now - EVICT_IDLE_AFTER, now - EVICT_HEAD_AFTER
        victim: Connection | None = None
        soonest = now + min(EVICT_IDLE_AFTER, EVICT_HEAD_AFTER)
        for conn in tuple(self.parked.values()):
            state = conn.state
            if state is IDLE:
                since = conn.deadline - self.site.idle_timeout
                if since < idle_before:
                    victim = conn
                    break
                soonest = min(soonest, since + EVICT_IDLE_AFTER)
            elif state is READING_HEAD and not conn.overflow:
                since = conn.head_started or conn.accepted
                if since < head_before:
                    victim = conn
                    break
                soonest = min(soonest, since + EVICT_HEAD_AFTER)
        if victim is None:
            self._no_victim_until = soonest
            return False
        state = victim.state
        if self.unpark(victim.fd, victim) is None:
            return False
        if victim.state is not state or (state is IDLE and victim.has_input()):
            # Served and parked again since the look, or its next request has come (its
            # event may be waiting in the engine's batch): no longer stalled.
            self.dispose(victim, victim.state)
            return False
        if self.site.metrics is not None:
            self.site.metrics.bad_request("evicted")
        self.dispose(victim, CLOSED)
        return True

    # -- the drain ---------------------------------------------------------------

    def close_idle(self) -> None:
        """Begin the drain's connection sweep: idle keep-alive connections close cleanly."""
        self.site.closing = True
        for conn in tuple(self.parked.values()):
            if conn.state is IDLE:
                self.sweep(conn)

    def sweep(self, conn: Connection) -> None:
        if self.unpark(conn.fd, conn) is None:
            return
        if conn.state is not IDLE:
            # Swept already: the drain's sweep and a thread parking the connection just
            # as the drain began can both come here. Its grace or linger stands (its
            # deadline is not an idle deadline, so it must not be judged again).
            self.dispose(conn, conn.state)
            return
        now = time.monotonic()
        idle_since = conn.deadline - self.site.idle_timeout
        if conn.has_input():
            # A request is arriving: it becomes a begun request the drain waits for,
            # and is answered with Connection: close.
            self.dispose(conn, conn.enter(READING_HEAD, now + self.site.read_header_timeout))
        elif now - idle_since < DRAIN_IDLE_GRACE:
            # Its client was busy a moment ago and its next request may be on the wire:
            # closing now would lose it (the keep-alive race of RFC 9112 section 9.6).
            # Wait a little, as a begun request; one that comes is answered with
            # Connection: close, and a quiet connection then closes.
            self.dispose(conn, conn.enter(READING_HEAD, idle_since + DRAIN_IDLE_GRACE))
        else:
            self.dispose(conn, conn.enter(LINGERING))

    def close_all(self) -> None:
        """Close every parked and queued connection."""
        for conn in tuple(self.parked.values()):
            if self.unpark(conn.fd, conn) is not None:
                self.dispose(conn, CLOSED)
        while self.ready:
            queued = self.pop_ready()
            if queued is not None:
                self.dispose(queued, CLOSED)

    # -- deadlines -------------------------------------------------------------

    def _expire(self, conn: Connection) -> ConnState:
        """A parked connection's deadline passed: a begun request gets 408 and a lingering
        close (so the 408 is not lost to a reset); anything else closes."""
        state, io = conn.state, conn.io
        begun = state is READING_BODY or (state is READING_HEAD and conn.has_input())
        if conn.overflow and state is READING_HEAD and not conn.buf and io.has_input():
            # Admitted past max_connections, it sent in time, but a busy server had not read
            # it yet: an ordinary connection's head deadline, and its event is served.
            return conn.enter(READING_HEAD, conn.accepted + self.site.read_header_timeout)
        if begun and io.handshaken and not conn.overflow:
            if state is READING_BODY:
                return conn.reject(ProtocolError(408, "read_timeout", "request body not received in time"))
            return conn.reject(ProtocolError(408, "header_timeout", "request header timeout"))
        conn.sender.drop()
        return conn.enter(CLOSED)

    def tick(self) -> float:
        """How often the housekeeper looks: a quarter of the shortest deadline it keeps."""
        site = self.site
        shortest = min(site.read_header_timeout, site.idle_timeout, LINGER_SECONDS, DRAIN_IDLE_GRACE)
        return max(0.01, min(0.5, shortest / 4))

    def expire_due(self) -> None:
        """Act on every parked connection whose deadline has passed."""
        now = time.monotonic()
        for conn in tuple(self.parked.values()):
            if conn.deadline <= now and self.unpark(conn.fd, conn) is not None:
                if conn.deadline > now:  # served and parked again since the snapshot: not due
                    self.dispose(conn, conn.state)
                    continue
                between = conn.state is READING_HEAD and conn.requests and not conn.buf
                if between and self.site.closing and conn.has_input():
                    # The drain's grace ran out just as the client's next request came:
                    # give it its own header deadline, and a thread serves it.
                    self.dispose(conn, conn.enter(READING_HEAD, now + self.site.read_header_timeout))
                else:
                    self.dispose(conn, self._expire(conn))
