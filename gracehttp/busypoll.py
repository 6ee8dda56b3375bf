"""The leader's poll: a short busy look before it sleeps, while events come close together.

Bottom layer: standard library only.

Why: a thread that sleeps in ``epoll_wait`` is woken by the kernel when an event
comes, and on a virtual machine whose idle CPU halts (the usual cloud guest) that
wake-up passes through the hypervisor: tens of microseconds at best, a millisecond
or more when the host is busy. A client that sends its next request a few dozen
microseconds after its answer (one keep-alive connection on the same host, a
proxy's pooled connection) pays that on every request. Linux's guest halt polling
answers it in the kernel, where it is on; here the thread looks again without
sleeping, for at most `SPIN_SECONDS`, as long as the last sleep was that short.

What bounds the cost: it looks busily only after a sleep that an event ended
within `SPIN_SECONDS`, and stops at the first look that finds nothing in that time
(it then sleeps, and measures the sleep again). A server whose events are further
apart than that never spins; one whose traffic stops spins once, for at most
`SPIN_SECONDS`. Each look is a system call, which hands the GIL on; with a thread in
the app holding it, the next look waits for it (up to the interpreter's switch
interval), so the window passes after a look or two and the app thread loses at
most those switches. A client whose bytes come closer together than the window
(trickling flat out) keeps the leader looking instead of sleeping, which costs no
more than serving each of those events would.
"""

from __future__ import annotations

import select
import time

#: The longest a leader looks for an event without sleeping, and the sleep after which
#: it looks busily next time (the first window of Linux's guest halt polling). Measured
#: (loopback, 2 cores, interleaved 5 s rounds): one keep-alive client 9,116 -> 14,920
#: requests/s; two workers at 50 connections level (62,100 and 63,030, 19.3 us of CPU a
#: request both), where 200 us cost 15 % more CPU a request: spins that found nothing.
SPIN_SECONDS = 0.00005


class BusyPoll:
    """``epoll.poll`` for the leader (`gracehttp.leadership`). Two threads lead for a
    moment after a hand-off and share it then: its state is a flag and two counters,
    which a race can only make look busily once more or less (or miscount a look)."""

    __slots__ = ("_poll", "caught", "spinning", "spins")

    def __init__(self, ep: select.epoll) -> None:
        self._poll = ep.poll
        #: The last sleep was shorter than `SPIN_SECONDS`: the next call looks busily first.
        self.spinning = False
        #: Busy looks begun, and those that found an event (for tests and benchmarks).
        self.spins = 0
        self.caught = 0

    def __call__(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
        """Events, as ``epoll.poll(timeout, maxevents)`` (`timeout` -1: until one comes)."""
        poll = self._poll
        if self.spinning:
            self.spins += 1
            events = poll(0, maxevents)
            if events:  # the usual case under load: ready at once, as a sleeping poll would be
                self.caught += 1
                return events
            until = time.monotonic() + SPIN_SECONDS
            while time.monotonic() < until:
                events = poll(0, maxevents)
                if events:
                    self.caught += 1
                    return events
            self.spinning = False
        started = time.monotonic()
        events = poll(timeout, maxevents)
        self.spinning = bool(events) and time.monotonic() - started < SPIN_SECONDS
        return events
