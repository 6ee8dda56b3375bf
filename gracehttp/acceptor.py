"""Taking connections from the listeners: how many at a time, within which limits,
when to pause, and (with workers) how many this worker should take.

Upper layer, below `engine`: imports `connection`, `listeners`, `parking` and
`balance`. The engine's threads call `Acceptor.take_batch` when a listener is
ready and serve the first connection it returns; everything about the listeners
and the count of open connections is here.

Locks: `_lock` guards the open set, the overflow count, the listener set and
accept-pausing.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time

from gracehttp.balance import Balance
from gracehttp.connection import Connection
from gracehttp.listeners import ACCEPT_BATCH, Listener, reserve_descriptors
from gracehttp.parking import Parking
from gracehttp.site import Site

_ONESHOT_IN = select.EPOLLIN | select.EPOLLONESHOT
#: Overflow connections (admitted past max_connections, see `Acceptor._admit_past_limit`)
#: open at once, past which accepting pauses. Each lives at most OVERFLOW_GRACE unless
#: it sends a request, so this bounds descriptors, not time: a flood of connections that
#: send nothing is drained from the kernel's queue at this many per grace period.
OVERFLOW_MAX = 4096
_SPARE_DESCRIPTORS = 256
#: How long a worker over its share leaves the queue to the others (`gracehttp.balance`):
#: the others are woken by the same arrival, and take it within microseconds unless busy.
DEFER_SECONDS = 0.002
#: How long a worker takes connections as if alone once the others' counts look stale.
ALONE_SECONDS = 1.0


class Acceptor:
    def __init__(self, site: Site, ep: select.epoll, parking: Parking, sockets: list[socket.socket],
                 max_connections: int, logger: logging.Logger, backoff: threading.Event,
                 balance: Balance | None = None) -> None:
        self.site = site
        self.ep = ep
        self.parking = parking
        self.logger = logger
        self.max_connections = max_connections
        self.balance = balance
        #: Waited on for a moment after a failed accept (EMFILE): set when the engine stops.
        self._backoff = backoff
        self.open: set[Connection] = set()
        self.listeners: dict[int, Listener] = {}
        self._lock = threading.Lock()
        self._paused = False
        #: Open connections admitted past max_connections (see `_admit_past_limit`).
        self.overflow = 0
        #: Listeners (by descriptor) whose last wake-up left the queue to the other
        #: workers (`take_batch`); they wait unarmed until `rearm_at`, and while `deferring`
        #: the engine's pollers wait with a timeout so that one of them re-arms them
        #: (`rearm_due`). `_stale`: deferrals in a row after which the queue was still there;
        #: until `_alone_until` this worker takes connections as if it were the only one.
        self._declined: set[int] = set()
        self._stale = 0
        self._alone_until = 0.0
        self._deferred: list[Listener] = []
        self.deferring = False
        self.rearm_at = 0.0
        self._held: dict[int, Listener] | None = {}  # set aside by `hold`; None once accepting stopped
        for sock in sockets:
            sock.setblocking(False)
            lst = Listener(sock, site.rcvtimeo, site.sndtimeo)
            self.listeners[lst.fd] = lst
        # Every connection it may hold at once, and some for files and the app's own use.
        reserve_descriptors(max_connections + OVERFLOW_MAX + _SPARE_DESCRIPTORS)

    def arm(self) -> None:
        if self.balance is not None:
            self.balance.join(0)  # counted in the others' shares from now on
        for lst in self.listeners.values():
            self.ep.register(lst.fd, _ONESHOT_IN)

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
        if self.balance is not None:
            self.balance.leave()  # a draining worker takes no share of new connections
        for lst in listeners:
            with contextlib.suppress(OSError):
                self.ep.unregister(lst.fd)
            if final:
                lst.refuse_new()
            while taken := self._take(lst, ACCEPT_BATCH):
                self.parking.park_fresh(taken)
            lst.sock.close()

    def close_listeners(self) -> None:
        """Close the listeners at once (the engine stops)."""
        with self._lock:
            listeners = list(self.listeners.values())
            self.listeners.clear()
        for lst in listeners:
            lst.sock.close()

    def hold(self, held: bool) -> None:
        """Take no new connections (or take them again), the sockets left open: a worker
        whose every request thread is stuck leaves new clients to the other workers."""
        with self._lock:
            if self._held is None:
                return
            if self.balance is not None:
                if held:
                    self.balance.leave()  # the others' shares no longer count this worker
                else:
                    self.balance.join(len(self.open))
            src, dst = (self.listeners, self._held) if held else (self._held, self.listeners)
            for fd in list(src):
                dst[fd] = src.pop(fd)
                with contextlib.suppress(OSError):
                    self.ep.modify(fd, 0 if held else _ONESHOT_IN)

    def take_batch(self, lst: Listener) -> list[Connection]:
        """Take the connections in the kernel's queue (up to `ACCEPT_BATCH`, and with workers
        this worker's share) and return them, counted busy and open: the caller owns them,
        serves some at once, parks the rest, and then re-arms the listener (`rearm`). An
        empty list: nothing to serve, and the listener seen to (re-armed now, or when its
        deferral to the other workers is over).

        All of them: the listener is one event among the connections', so each one left
        queued would wait a whole round of the others (with 1,000 busy keep-alive
        clients, seconds). But only those queued now (`Listener.queued`), not those
        that arrive while the batch is taken: in a flood of connections, a batch that
        chased arrivals would hold back every request already accepted, a health probe's
        among them. For the same reason the listener is re-armed after the batch is
        parked: an accepted connection whose request is in goes before the next batch
        (re-armed first, the listener's next event would come before every parked
        connection's, batch after batch, in a flood). A batch costs one claim and one
        release of the in-flight counters, and one lock each of the open and the parked
        set.
        """
        queued = lst.queued()
        declined = False
        with self._lock:
            room = self.max_connections - (len(self.open) - self.overflow)
            # Past the limit (room < 0: overflow connections promoted by their requests) the
            # overflow's own bound still admits up to OVERFLOW_MAX of them.
            batch = min(ACCEPT_BATCH, max(room, 0) + OVERFLOW_MAX - self.overflow, queued)
            if self.balance is not None and time.monotonic() >= self._alone_until:
                share = self.balance.share(len(self.open), queued)
                if share > 0:
                    batch = min(batch, share)
                    self._declined.discard(lst.fd)
                    self._stale = 0
                elif queued and lst.fd not in self._declined:
                    # The other workers are due these: the listener stays unarmed here for
                    # `DEFER_SECONDS` (`rearm_due`).
                    declined = True
                    self._declined.add(lst.fd)
                    self._deferred.append(lst)
                    self.rearm_at = time.monotonic() + DEFER_SECONDS
                    self.deferring = True
                elif queued:
                    # Left to the others and still there: they are busy, or a count is stale
                    # (a worker died or froze with connections open). An even part of it; and
                    # the second time running, take connections as if alone for a while, so
                    # that a dead worker's count does not slow the ones that serve.
                    self._declined.discard(lst.fd)
                    batch = min(batch, self.balance.part(queued))
                    self._stale += 1
                    if self._stale >= 2:
                        self._stale = 0
                        self._alone_until = time.monotonic() + ALONE_SECONDS
        if declined:
            return []
        accepted = self._take(lst, max(1, batch))
        if not accepted:  # another worker or thread took them first
            self.rearm(lst)
        for conn in accepted[max(0, room):]:
            self._admit_past_limit(conn)
        return accepted

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
                    self._backoff.wait(0.05)
                    break
                try:
                    taken.append(Connection(sock, site, addr, peer, tuned))
                except OSError:
                    sock.close()
        finally:
            inflight.release(batch - len(taken))
            with self._lock:
                self.open.update(taken)
                if self.balance is not None:
                    self.balance.publish(len(self.open))
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
            self.overflow += 1

    def promote(self, conn: object) -> None:
        """An overflow connection sent a request to serve: it counts as an ordinary one."""
        with self._lock:
            self.overflow -= 1

    def rearm_due(self) -> None:
        """Arm again the listeners left to the other workers, once their time is up."""
        if not self.deferring or time.monotonic() < self.rearm_at:
            return
        with self._lock:
            deferred, self._deferred = self._deferred, []
            self.deferring = False
        for lst in deferred:
            self.rearm(lst)

    def rearm(self, lst: Listener) -> None:
        """Arm the listener again (after its batch is served or parked: `take_batch`)."""
        with self._lock:
            if lst.fd not in self.listeners:
                return
            if self.overflow >= OVERFLOW_MAX:
                self._paused = True
                return
            with contextlib.suppress(OSError):
                self.ep.modify(lst.fd, _ONESHOT_IN)

    def closed(self, conn: Connection) -> None:
        """A connection closed: it no longer counts, and accepting resumes if it had paused."""
        with self._lock:
            self.open.discard(conn)
            if self.balance is not None:
                self.balance.publish(len(self.open))
            if conn.overflow:
                self.overflow -= 1
            if self._paused and self.overflow < OVERFLOW_MAX:
                self._paused = False
                for lst in self.listeners.values():
                    with contextlib.suppress(OSError):
                        self.ep.modify(lst.fd, _ONESHOT_IN)
