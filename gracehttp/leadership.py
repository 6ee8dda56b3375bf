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
it; followers block in ``acquire``. The watchdog releases it on behalf of a
stuck leader and clears the holder's generation; the leader sees that when it
finishes and becomes a follower. If the leader finishes just as
it is demoted, two threads poll for a moment, which is safe (every descriptor
is EPOLLONESHOT); only the thread whose generation holds the token may release
it, so it is never released twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

#: How long a leader may serve one connection before another thread takes over
#: the polling: short enough that a slow request delays others by a few ms at
#: most, long enough that fast requests never cause a hand-off.
HANDOFF_AFTER = 0.002
#: Ticks without any serving before the watchdog sleeps until work arrives.
IDLE_TICKS = 50


class Leadership:
    def __init__(self, handoff_after: float = HANDOFF_AFTER) -> None:
        self._token = threading.Lock()
        self._mutex = threading.Lock()
        self._gen = 0
        self._holder = 0  # generation of the thread holding the token; 0 when nobody does
        self._handoff_after = handoff_after
        self._wake = threading.Event()
        self._stopped = False
        self.sleeping = False
        #: Written by the leader around each connection it serves; read by the watchdog.
        self.serving = False
        self.seq = 0
        self.handoffs = 0
        #: Request threads blocked in `acquire`, waiting to lead.
        self.waiting = 0
        #: The reserve poller holds the role (a request thread that wants it calls `on_wanted`).
        self.reserve_leading = False
        self.on_wanted: Callable[[], None] = lambda: None
        self._starved = threading.Event()

    def acquire(self) -> int:
        """Block until this thread is the leader; return its generation."""
        with self._mutex:
            self.waiting += 1
            if self.reserve_leading:
                self.on_wanted()
        self._token.acquire()
        with self._mutex:
            self.waiting -= 1
            self._gen += 1
            self._holder = self._gen
            return self._gen

    # -- the reserve poller ------------------------------------------------------

    def reserve_wait(self) -> bool:
        """Block until every request thread is busy (or the engine stops: False)."""
        self._starved.wait()
        self._starved.clear()
        return not self._stopped

    def reserve_acquire(self) -> int:
        """Take the role for the reserve poller; 0 (and the role given back) if a
        request thread waits for it, since a request thread can serve everything."""
        self._token.acquire()
        with self._mutex:
            if self.waiting or self._stopped:
                self._token.release()
                return 0
            self._gen += 1
            self._holder = self._gen
            self.reserve_leading = True
            return self._gen

    def reserve_leave(self, gen: int) -> None:
        with self._mutex:
            self.reserve_leading = False
        self.leave(gen)

    def begin(self) -> None:
        """The leader starts serving a connection."""
        self.seq += 1
        self.serving = True
        if self.sleeping:
            self.sleeping = False
            self._wake.set()

    def end(self, gen: int) -> bool:
        """The leader finished serving; False if it was demoted meanwhile (now a follower).

        A demoted thread leaves `serving` alone: it is its successor's now, and
        clearing it would hide a successor stuck in turn from the watchdog.
        """
        with self._mutex:
            if self._holder != gen:
                return False
            self.serving = False
            return True

    def leave(self, gen: int) -> None:
        """Give up the role (a stopping thread); no-op if the watchdog already took it."""
        with self._mutex:
            if self._holder == gen:
                self._holder = 0
                self._token.release()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._starved.set()

    def watch(self) -> None:
        """The watchdog thread's loop: demote a leader stuck on one connection."""
        last_seq = -1
        idle = 0
        while not self._stopped:
            if idle >= IDLE_TICKS:
                self.sleeping = True
                # Re-check after announcing the sleep: a leader that began serving just
                # before it saw `sleeping` False and did not wake us (it sets `seq` and
                # `serving` before reading `sleeping`; we set `sleeping` before reading them).
                if not self.serving and self.seq == last_seq:
                    self._wake.wait()
                self.sleeping = False
                self._wake.clear()
                idle = 0
                continue
            self._wake.wait(self._handoff_after)
            seq = self.seq
            if self.serving and seq == last_seq:
                with self._mutex:
                    if self._holder:
                        self._holder = 0
                        self.serving = False  # the successor polls; it has not begun anything
                        self.handoffs += 1
                        self._token.release()
                        if not self.waiting:
                            self._starved.set()  # no request thread is free: the reserve polls
            idle = idle + 1 if seq == last_seq and not self.serving else 0
            last_seq = seq
