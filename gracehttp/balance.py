"""How many new connections a worker takes, so that workers sharing a listener share
its clients.

Bottom layer: standard library only.

Every worker's epoll set holds the same listening socket and the kernel wakes each
of them, but whichever polls first used to take the whole queue: a pool of 50
connections opened together all went to one worker while the other had none, and
``workers=2`` ran at the speed of one. So each worker publishes how many
connections it has open, in its slot of a page the supervisor shared before
forking, and of what is queued takes only up to an even share of everything open
and queued among the workers taking connections: ``ceil((open in all of them +
queued) / how many) - its own``. A worker over its share leaves the queue to the
others for a moment (`gracehttp.acceptor`); a worker that stops taking
connections (draining, or held while its threads are stuck) leaves its slot, so
the others' shares no longer count it.
"""

from __future__ import annotations

#: The shared page: byte 0 is the drained flag; bytes 4-7 how many slots are in use (the
#: highest worker index that joined, plus one: workers come and go with TTIN and TTOU);
#: the slots, one per worker index, from byte 8.
USED_OFFSET = 4
SLOTS_OFFSET = 8
SLOT_SIZE = 4
#: A slot holds its worker's open connections plus one; 0 (a new page's every byte) is a
#: worker that takes no connections: not started yet, draining, or held.
ABSENT = 0


class Balance:
    def __init__(self, page: memoryview, index: int) -> None:
        """`page`: the supervisor's shared page; this worker's slot is `index`."""
        self._used = page[USED_OFFSET:SLOTS_OFFSET].cast("I")
        self._all = page[SLOTS_OFFSET:SLOTS_OFFSET + SLOT_SIZE * capacity(page)].cast("I")
        self._slots = self._all[:max(self._used[0], index + 1)]
        self._index = index
        self._left = False

    def publish(self, open_now: int) -> None:
        """This worker has `open_now` connections open (an aligned 4-byte store, which
        other processes see whole)."""
        if not self._left:
            self._slots[self._index] = open_now + 1

    def share(self, open_now: int, queued: int) -> int:
        """How many of the `queued` connections this worker should take now (0 or less:
        the others are due them)."""
        self.publish(open_now)
        if len(self._slots) != self._used[0]:  # a worker with a higher index joined
            self._slots = self._all[:max(self._used[0], self._index + 1)]
        present = [n - 1 for n in self._slots if n != ABSENT]
        if self._left or not present:
            return queued
        total = sum(present) + queued
        return -(-total // len(present)) - open_now

    def part(self, queued: int) -> int:
        """An even part of `queued` for each worker taking connections (at least one)."""
        present = sum(1 for n in self._slots if n != ABSENT) or 1
        return max(1, -(-queued // present))

    def leave(self) -> None:
        """This worker takes no connections for now (held) or for good (draining: its
        slot is its replacement's from now on)."""
        self._left = True
        self._slots[self._index] = ABSENT

    def join(self, open_now: int) -> None:
        """Take connections (at start, or again after `leave`: a held worker let go)."""
        self._left = False
        self.publish(open_now)
        if self._used[0] < self._index + 1:  # only ever raised (a lost race costs balance only)
            self._used[0] = self._index + 1


def capacity(page: memoryview) -> int:
    """How many worker slots the shared page holds."""
    return (len(page) - SLOTS_OFFSET) // SLOT_SIZE
