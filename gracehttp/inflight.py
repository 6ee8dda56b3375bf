"""Counts busy connections and in-flight requests, and wakes whoever waits for zero.

Bottom layer: standard library only.

Two numbers: `requests` are app calls under way (what ``in_flight`` reports);
`busy` are connections owned by a worker thread, including one whose request is
parsed but not yet handed to the app. The drain waits for ``busy == 0`` so that
a request read from the socket just before the listeners closed is not lost.
"""

from __future__ import annotations

import threading
import time


class InFlight:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.requests = 0
        self.busy = 0
        self.total = 0
        self.aborted = False

    def request_started(self) -> None:
        with self._cond:
            self.requests += 1
            self.total += 1

    def request_finished(self) -> None:
        with self._cond:
            self.requests -= 1
            if self.requests == 0:
                self._cond.notify_all()

    def conn_busy(self) -> None:
        with self._cond:
            self.busy += 1

    def conn_done(self) -> None:
        with self._cond:
            self.busy -= 1
            if self.busy == 0:
                self._cond.notify_all()

    def abort(self) -> None:
        """Wake every waiter now: a forcible close does not wait for anyone."""
        with self._cond:
            self.aborted = True
            self._cond.notify_all()

    def wait_idle(self, deadline: float) -> bool:
        """Wait until no connection is busy; False if `deadline` (monotonic) passes first
        or `abort` was called. A condition wait, woken by the last finisher."""
        with self._cond:
            while self.busy > 0 or self.requests > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.aborted:
                    return False
                self._cond.wait(remaining)
            return True
