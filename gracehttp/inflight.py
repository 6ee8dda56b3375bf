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

The counts change four times per request, so they take no lock: each is the
length of a deque, changed by ``append``/``extend`` and ``pop``, each atomic
(documented thread-safe; a batch is uncounted one ``pop`` at a time, `_pop`; a
list's are atomic too, but a list going between empty and one element
reallocates each time, a deque keeps its block), and the request
numbers come from `itertools.count`, whose ``next`` is atomic too. A reader may
see a connection counted twice for a moment, never nowhere, because every
hand-over counts the new place before it uncounts the old. Only
the drain's wait takes the lock; see `wait_idle` for why no wake-up is lost.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests: collections.deque[None] = collections.deque()
        self._busy: collections.deque[None] = collections.deque()
        self._heads: collections.deque[None] = collections.deque()
        self._numbers = itertools.count(1)
        #: Threads in `wait_idle`: the request path notifies only when there are some.
        self._waiters = 0
        self.aborted = False
        #: ``on_limit()`` runs once, when the `limit`-th request starts (a worker's max_requests).
        self.limit = 0
        self.on_limit: Callable[[], None] | None = None

    @property
    def requests(self) -> int:
        return len(self._requests)

    @property
    def busy(self) -> int:
        return len(self._busy)

    @property
    def heads(self) -> int:
        return len(self._heads)

    @property
    def total(self) -> int:
        """Requests started so far: the next number `itertools.count` would give, less one
        (read from its repr, ``count(N)``, which does not advance it)."""
        return int(repr(self._numbers)[6:-1]) - 1

    def request_started(self) -> None:
        self._requests.append(None)
        if next(self._numbers) == self.limit and self.on_limit is not None:
            self.on_limit()

    def request_finished(self) -> None:
        requests = self._requests
        requests.pop()
        if self._waiters and not requests:
            self._notify()

    def claim(self, was_head: bool, count: int = 1) -> None:
        """A thread took `count` connections (from the parked set when `was_head`/idle,
        or accept, which claims a batch before taking it)."""
        if count == 1:
            self._busy.append(None)
            if was_head:
                self._heads.pop()
        else:
            self._busy.extend([None] * count)
            if was_head:
                _pop(self._heads, count)

    def count_heads(self, count: int = 1) -> None:
        """`count` connections are about to be parked as begun requests: counted *before*
        they can be taken from the parked set, whose taker uncounts them (`claim`)."""
        if count == 1:
            self._heads.append(None)
        else:
            self._heads.extend([None] * count)

    def uncount_heads(self, count: int = 1) -> None:
        """Connections counted by `count_heads` were closed instead of parked."""
        _pop(self._heads, count)
        self._settled()

    def release(self, count: int = 1) -> None:
        """A thread let go of `count` connections (parked, counted by `count_heads` first
        if they carry a begun request, or closed)."""
        busy = self._busy
        if count == 1:
            busy.pop()
        else:
            _pop(busy, count)
        if self._waiters and not busy and not self._heads:  # `_settled`, inlined: once per request
            self._notify()

    def _settled(self) -> None:
        if self._waiters and not self._busy and not self._heads:
            self._notify()

    def _notify(self) -> None:  # only while a drain waits: not on the request path
        with self._cond:
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
        or `abort` was called.

        A condition wait, woken by the last finisher. No wake-up is lost without the
        request path's lock: a waiter is counted in `_waiters` (under the lock) before it
        looks at the counts, and a finisher looks at `_waiters` after its count changed,
        then notifies under the lock, which it gets only once the waiter is waiting.
        """
        with self._cond:
            self._waiters += 1
            try:
                while self._busy or self._requests or self._heads:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self.aborted:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._waiters -= 1


def _pop(counter: collections.deque[None], count: int) -> None:
    """Uncount `count` (each pop atomic: a reader may see some gone before the others,
    which only ever shows fewer where the new place was counted first)."""
    for _ in range(count):
        counter.pop()
