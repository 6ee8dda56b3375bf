"""Workers' shares of a shared listener's queue (`gracehttp.balance`), on a page of
memory as the supervisor shares it."""

from __future__ import annotations

import mmap

from gracehttp.balance import ABSENT, SLOTS_OFFSET, Balance, capacity


def page() -> memoryview:
    return memoryview(mmap.mmap(-1, mmap.PAGESIZE))


def slot(shared: memoryview, index: int) -> int:
    return int(shared[SLOTS_OFFSET:].cast("I")[index])


def test_the_page_holds_a_slot_per_worker_each_absent_until_it_joins() -> None:
    shared = page()
    assert capacity(shared) == (mmap.PAGESIZE - SLOTS_OFFSET) // 4
    assert slot(shared, 0) == ABSENT
    Balance(shared, 3).join(7)
    assert slot(shared, 3) == 8  # open connections plus one
    assert shared[0] == 0  # the drained flag's byte is left alone


def test_a_worker_takes_its_even_share_of_open_and_queued() -> None:
    shared = page()
    a, b = Balance(shared, 0), Balance(shared, 1)
    a.join(0)
    b.join(0)
    assert a.share(0, 50) == 25  # the queue split evenly
    a.publish(25)
    assert b.share(0, 25) == 25
    b.publish(25)
    assert a.share(25, 1) == 1  # a tie: either takes the next
    assert b.share(25, 1) == 1
    assert a.share(30, 2) <= 0  # over its share: leaves these to b
    assert b.share(25, 2) == 4


def test_a_worker_not_yet_started_or_held_is_not_counted() -> None:
    shared = page()
    a, b = Balance(shared, 0), Balance(shared, 1)
    a.join(10)
    assert a.share(10, 5) == 5  # b has not started: all of it
    b.join(0)
    assert a.share(10, 6) == -2  # ceil((10 + 0 + 6) / 2) - 10
    b.leave()  # held: its slot is absent, and what it publishes no longer shows
    b.publish(3)
    assert slot(shared, 1) == ABSENT
    assert a.share(10, 6) == 6
    assert b.share(3, 6) == 6  # a worker that left takes what it is woken for
    b.join(3)
    assert a.share(10, 6) == 0  # ceil((10 + 3 + 6) / 2) - 10
    assert a.part(6) == 3
    assert a.part(0) == 1


def test_a_worker_added_later_with_a_higher_index_counts_for_the_others() -> None:
    """TTIN adds workers beyond the configured count: their slots are seen once they join."""
    shared = page()
    a, b = Balance(shared, 0), Balance(shared, 1)
    a.join(20)
    b.join(20)
    assert a.share(20, 3) == 2  # ceil(43 / 2) - 20
    Balance(shared, 2).join(0)
    assert a.share(20, 3) == -5  # ceil(43 / 3) - 20: the newcomer is due them
