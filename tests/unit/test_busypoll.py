"""The leader's poll (`gracehttp.busypoll`) on a real epoll set and pipe: it looks busily
only after a sleep an event ended within the window, and stops at the first busy look
that finds nothing."""

import os
import select
import threading
import time

import pytest

from gracehttp.busypoll import SPIN_SECONDS, BusyPoll


@pytest.fixture
def ready_pipe():
    r, w = os.pipe()
    ep = select.epoll()
    ep.register(r, select.EPOLLIN | select.EPOLLET)
    yield ep, r, w
    ep.close()
    os.close(r)
    os.close(w)


def test_a_short_sleep_turns_busy_looks_on_and_a_look_that_finds_one_keeps_them(ready_pipe):
    ep, r, w = ready_pipe
    poll = BusyPoll(ep)
    os.write(w, b"x")
    assert poll(1.0, 8) == [(r, select.EPOLLIN)]  # ready at once: no sleep to speak of
    assert (poll.spinning, poll.spins) == (True, 0)
    os.write(w, b"x")  # a new edge
    assert poll(1.0, 8) == [(r, select.EPOLLIN)]
    assert (poll.spins, poll.caught, poll.spinning) == (1, 1, True)


def test_a_busy_look_that_finds_nothing_stops_them_and_the_poll_sleeps(ready_pipe):
    ep, _, w = ready_pipe
    poll = BusyPoll(ep)
    os.write(w, b"x")
    poll(1.0, 8)
    assert poll.spinning
    started = time.monotonic()
    assert poll(0.05, 8) == []  # nothing comes: a busy look, then a sleep to the timeout
    assert time.monotonic() - started >= 0.05 - 0.005
    assert (poll.spins, poll.caught, poll.spinning) == (1, 0, False)
    assert poll(0.01, 8) == []  # no busy look after a sleep that found nothing
    assert poll.spins == 1


def test_a_long_sleep_leaves_them_off(ready_pipe):
    ep, r, w = ready_pipe
    poll = BusyPoll(ep)
    wait = max(0.02, 20 * SPIN_SECONDS)
    os.write(w, b"x")
    poll(1.0, 8)
    assert poll.spinning
    assert poll(wait, 8) == []  # the busy look finds nothing: off
    # An event that ends a sleep longer than the window leaves them off.
    timer = threading.Timer(wait, os.write, (w, b"x"))
    timer.start()
    try:
        assert poll(5.0, 8) == [(r, select.EPOLLIN)]
    finally:
        timer.join()
    assert (poll.spinning, poll.spins) == (False, 1)
