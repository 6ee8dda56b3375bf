"""The in-flight counters take no lock on the request path: threads hammering them
together never lose a count, never drive one below zero, and never let the drain's
wait miss its wake-up."""

from __future__ import annotations

import threading
import time

from gracehttp.inflight import InFlight


def test_counts_from_many_threads_add_up_and_the_drain_wakes_at_once() -> None:
    inflight = InFlight()
    threads, rounds = 8, 20_000
    start = threading.Barrier(threads + 1)

    def worker() -> None:
        start.wait()
        for i in range(rounds):
            # A connection's life as the engine counts it: taken from the parked set,
            # a request, parked again as a begun one, taken again, let go.
            inflight.claim(False)
            inflight.request_started()
            inflight.request_finished()
            inflight.count_heads()
            inflight.release()
            inflight.claim(True)
            if i % 7 == 0:
                inflight.claim(False, 3)
                inflight.release(3)
            inflight.release()

    inflight.claim(False)  # held by the test until every worker is done
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for t in workers:
        t.start()
    start.wait()
    for t in workers:
        t.join(60)
    assert (inflight.busy, inflight.heads, inflight.requests) == (1, 0, 0)
    assert inflight.total == threads * rounds

    released = threading.Event()

    def let_go() -> None:
        released.wait()
        inflight.release()

    threading.Thread(target=let_go).start()
    waited = time.monotonic()
    released.set()
    assert inflight.wait_idle(time.monotonic() + 30)
    assert time.monotonic() - waited < 5  # woken by the release, not by the deadline


def test_a_drain_waiting_while_requests_finish_is_woken_by_the_last() -> None:
    inflight = InFlight()
    for _ in range(50):
        inflight.request_started()
    finishers = [threading.Thread(target=inflight.request_finished) for _ in range(50)]
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(inflight.wait_idle(time.monotonic() + 30)))
    waiter.start()
    began = time.monotonic()
    for t in finishers:
        t.start()
    waiter.join(30)
    assert result == [True]
    assert time.monotonic() - began < 5


def test_the_limit_hook_runs_once_at_the_limit() -> None:
    inflight = InFlight()
    hits: list[int] = []
    inflight.limit = 5
    inflight.on_limit = lambda: hits.append(inflight.total)
    for _ in range(12):
        inflight.request_started()
        inflight.request_finished()
    assert hits == [5]
    assert inflight.total == 12
