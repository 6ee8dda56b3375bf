"""Counts the work the drain must wait for, and wakes whoever waits for none to be left.

Bottom layer: standard library only.

Three numbers: `requests` are app calls under way (what ``in_flight`` reports);
`busy` are connections owned by a request thread, including one whose request
is read but not yet handed to the app; `heads` are parked connections whose
request has begun (or that were accepted and have not sent one yet). The drain
waits for all three to reach zero, so a request that reached the socket before
the listeners closed is answered, not lost in a hand-over between the counters:
a connection is counted busy *before* it stops counting as a head, and the
other way round when it is parked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class InFlight:
    def __init__(self) -> None:
        # Entered as the bare lock: `with` on a Condition is a Python-level call, and these
        # counters change several times per request and per accepted connection.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.requests = 0
        self.busy = 0
        self.heads = 0
        #: Threads in `wait_idle`: the request path notifies only when there are some, since
        #: ``notify_all`` is Python-level code that would otherwise run twice per request.
        self._waiters = 0
        self.total = 0
        self.aborted = False
        #: ``on_limit()`` runs once, when the `limit`-th request starts (a worker's max_requests).
        self.limit = 0
        self.on_limit: Callable[[], None] | None = None

    def request_started(self) -> None:
        with self._lock:
            self.requests += 1
            self.total += 1
            hit = self.total == self.limit
        if hit and self.on_limit is not None:
            self.on_limit()

    def request_finished(self) -> None:
        with self._lock:
            self.requests -= 1
            if self.requests == 0 and self._waiters:
                self._cond.notify_all()

    def claim(self, was_head: bool, count: int = 1) -> None:
        """A thread took `count` connections (from the parked set when `was_head`/idle,
        or accept, which claims a batch before taking it)."""
        with self._lock:
            self.busy += count
            if was_head:
                self.heads -= count

    def release(self, to_head: bool, count: int = 1) -> None:
        """A thread let go of `count` connections, parking them as begun requests when `to_head`."""
        with self._lock:
            if to_head:
                self.heads += count
            self.busy -= count
            if self.busy == 0 and self.heads == 0 and self._waiters:
                self._cond.notify_all()

    def abort(self) -> None:
        """Wake every waiter now: a forcible close does not wait for anyone."""
        with self._cond:
            self.aborted = True
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        return max(self.requests, self.busy + self.heads)

    def wait_idle(self, deadline: float) -> bool:
        """Wait until nothing is pending; False if `deadline` (monotonic) passes first
        or `abort` was called. A condition wait, woken by the last finisher."""
        with self._cond:
            self._waiters += 1
            try:
                while self.busy > 0 or self.requests > 0 or self.heads > 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self.aborted:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._waiters -= 1
