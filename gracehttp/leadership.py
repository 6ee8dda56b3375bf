"""Which request thread polls for I/O, and when that role passes to another thread.

Bottom layer: standard library only.

Why: with every request thread waiting on the epoll set, each event wakes a
different thread and the threads spend their time handing the GIL to each other
(measured on 2 cores: 35k requests/s with one thread, 13k with 32). So one
thread at a time, the *leader*, polls, and it serves what it gets itself. A
watchdog hands the role to a waiting thread only when the leader has been busy
with one connection for longer than `handoff_after` (a slow app, a large
upload), so slow requests still run concurrently, up to `threads` of them.

When every request thread is inside the app, nobody would poll: new connections,
health probes and slow bodies would wait for a thread to come back. So the
engine keeps a *reserve* poller, a thread that never runs the app. The watchdog
wakes it when it demotes a stuck leader and no request thread waits to lead;
the reserve then leads (accepts, answers probes, collects bodies, queues
complete requests for the next free thread) until a request thread wants the
role back, which it signals through `on_wanted` and takes as soon as the
reserve lets go.

The role is a `threading.Lock` (which any thread may release): the leader holds
it; followers block in ``acquire``. Each holder gets a fresh `Turn`, which it
alone writes around every connection it serves (no lock on the request path).
The watchdog releases the role on behalf of a stuck leader and clears the
holder; the leader sees that when it finishes and becomes a follower. If the
leader finishes just as it is demoted, two threads poll for a moment, which is
safe (a connection has one owner however many events come for it, see
`gracehttp.parking`, and events one of them leaves queued when it stops wake
the other: `gracehttp.engine`); only the thread whose turn
holds the token may release it, so it is never released twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: How long a leader may serve one connection before another thread takes over
#: the polling: short enough that a slow request delays others by a few ms at
#: most, long enough that fast requests never cause a hand-off.
HANDOFF_AFTER = 0.002
#: Ticks without any serving before the watchdog sleeps until work arrives.
IDLE_TICKS = 50
#: While the leader keeps moving on to new connections (a stream of short requests),
#: the watchdog looks this many times less often, each such look followed by one
#: `handoff_after` later. Every look takes the GIL from the leader between two of its
#: system calls: at one look every 2 ms, workers=2 served about 5 % fewer hello-world
#: requests a second than with one every 20 ms (interleaved wrk rounds, 2 cores). A
#: request that outlasts `handoff_after` is then handed off within `BUSY_FACTOR + 1`
#: ticks of its start in such a stream, within 2 after a quiet look (the leader idle,
#: or a hand-off).
BUSY_FACTOR = 5


class Turn:
    """One spell of leading: what the watchdog reads to tell a stuck leader.

    Written only by the thread that leads with it, so beginning and ending a
    connection take no lock; a demoted leader's writes go to its own old turn
    and can never hide its successor's slow request from the watchdog.
    """

    __slots__ = ("seq", "serving")

    def __init__(self) -> None:
        self.serving = False
        self.seq = 0


class Leadership:
    def __init__(self, handoff_after: float = HANDOFF_AFTER) -> None:
        self._token = threading.Lock()
        self._mutex = threading.Lock()
        #: The turn holding the token; None when nobody does.
        self._holder: Turn | None = None
        self._handoff_after = handoff_after
        self._wake = threading.Event()
        self._stopped = False
        self.sleeping = False
        self.handoffs = 0
        #: How many times the watchdog has looked at the leader.
        self.looks = 0
        #: Request threads blocked in `acquire`, waiting to lead.
        self.waiting = 0
        #: The reserve poller holds the role (a request thread that wants it calls `on_wanted`).
        self.reserve_leading = False
        self.on_wanted: Callable[[], None] = lambda: None
        #: Called by the watchdog (outside the mutex) when it demoted a leader and no
        #: request thread was waiting: the engine starts another while it may.
        self.on_starved: Callable[[], None] = lambda: None
        self._starved = threading.Event()

    def acquire(self) -> Turn:
        """Block until this thread is the leader; return its turn."""
        with self._mutex:
            self.waiting += 1
            if self.reserve_leading:
                self.on_wanted()
        self._token.acquire()
        with self._mutex:
            self.waiting -= 1
            self._holder = turn = Turn()
            return turn

    # -- the reserve poller ------------------------------------------------------

    def reserve_wait(self) -> bool:
        """Block until every request thread is busy (or the engine stops: False)."""
        self._starved.wait()
        self._starved.clear()
        return not self._stopped

    def reserve_acquire(self) -> Turn | None:
        """Take the role for the reserve poller; None (and the role given back) if a
        request thread waits for it, since a request thread can serve everything."""
        self._token.acquire()
        with self._mutex:
            if self.waiting or self._stopped:
                self._token.release()
                return None
            self._holder = turn = Turn()  # it never begins: the watchdog leaves it be
            self.reserve_leading = True
            return turn

    def reserve_leave(self, turn: Turn) -> None:
        with self._mutex:
            self.reserve_leading = False
        self.leave(turn)

    def begin(self, turn: Turn) -> None:
        """The leader starts serving a connection."""
        turn.seq += 1
        turn.serving = True
        if self.sleeping:
            self.sleeping = False
            self._wake.set()

    def leads(self, turn: Turn) -> bool:
        """Whether `turn` still holds the role (the watchdog may have passed it on)."""
        return self._holder is turn

    def end(self, turn: Turn) -> bool:
        """The leader finished serving; False if it was demoted meanwhile (now a follower).

        If the watchdog demotes it just after this looked, it leads on with its
        successor for a moment, which is safe, and learns it at its next `end`.
        """
        turn.serving = False
        return self._holder is turn

    def leave(self, turn: Turn) -> None:
        """Give up the role (a stopping thread); no-op if the watchdog already took it."""
        with self._mutex:
            if self._holder is turn:
                self._holder = None
                self._token.release()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._starved.set()

    def watch(self) -> None:
        """The watchdog thread's loop: demote a leader stuck on one connection."""
        last: Turn | None = None
        last_seq = -1
        idle = 0
        busy = False  # the next look is a long one
        moved_before = False  # the previous look found the leader moved on
        while not self._stopped:
            if idle >= IDLE_TICKS:
                self.sleeping = True
                # Re-check after announcing the sleep: a leader that began serving just
                # before it saw `sleeping` False and did not wake us (it sets `seq` and
                # `serving` before reading `sleeping`; we set `sleeping` before reading them).
                turn = self._holder
                if turn is None or (not turn.serving and turn is last and turn.seq == last_seq):
                    self._wake.wait()
                self.sleeping = False
                self._wake.clear()
                idle = 0
                continue
            # A plain sleep, not `Event.wait` with a timeout: under load this runs every
            # `handoff_after`, and the condition variable's Python-level wait was most of
            # the watchdog's CPU. A `begin` that saw this thread about to sleep and set
            # `_wake` late leaves it set: the next idle wait then returns at once, once.
            time.sleep(self._handoff_after * BUSY_FACTOR if busy else self._handoff_after)
            self.looks += 1
            turn = self._holder
            if turn is None:
                last, idle, busy, moved_before = None, idle + 1, False, False
                continue
            seq, serving = turn.seq, turn.serving
            # Two looks in a row that found the leader moved on mean a stream of short
            # requests: the next look is a long one, always followed by a short one, which
            # finds a request that was just beginning at the long look still running if it
            # is slow. After a quiet look (idle, a hand-off) a new request is looked at
            # again a short tick later, as before.
            moved = seq != (last_seq if turn is last else 0)  # a new turn that began nothing: quiet
            busy = not busy and moved and moved_before
            moved_before = moved
            if serving and turn is last and seq == last_seq:
                starved = False
                with self._mutex:
                    if self._holder is turn:
                        self._holder = None
                        self.handoffs += 1
                        self._token.release()
                        if not self.waiting:
                            starved = True
                            self._starved.set()  # no request thread is free: the reserve polls
                if starved:
                    self.on_starved()
                serving = False  # the successor polls; it has not begun anything
            idle = idle + 1 if turn is last and seq == last_seq and not serving else 0
            last, last_seq = turn, seq
