"""The leader role: one poller, handed on only when the leader is stuck."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gracehttp.leadership import Leadership, Turn


def run_watchdog(lead: Leadership) -> threading.Thread:
    t = threading.Thread(target=lead.watch, daemon=True)
    t.start()
    return t


def test_stuck_leader_is_replaced_and_learns_it_when_done() -> None:
    lead = Leadership(handoff_after=0.005)
    watchdog = run_watchdog(lead)
    gen_a = lead.acquire()
    took_over = threading.Event()

    def follower() -> None:
        lead.acquire()
        took_over.set()

    threading.Thread(target=follower, daemon=True).start()
    lead.begin(gen_a)
    assert took_over.wait(2)  # while A is still "serving"
    assert lead.end(gen_a) is False  # A is a follower now
    assert lead.handoffs == 1
    lead.stop()
    watchdog.join(2)


def test_a_successor_stuck_in_turn_is_seen_after_its_predecessor_finishes() -> None:
    """The demoted leader finishing must not hide its successor's own slow request."""
    lead = Leadership(handoff_after=0.005)
    watchdog = run_watchdog(lead)
    gen_a = lead.acquire()
    b_leads, c_leads = threading.Event(), threading.Event()
    b_gen: list[Turn] = []
    threading.Thread(target=lambda: (b_gen.append(lead.acquire()), b_leads.set()), daemon=True).start()
    lead.begin(gen_a)  # A is stuck
    assert b_leads.wait(2)
    lead.begin(b_gen[0])  # B (the leader now) begins a slow request too
    assert lead.end(gen_a) is False  # A finishes: a follower; B is still serving
    threading.Thread(target=lambda: (lead.acquire(), c_leads.set()), daemon=True).start()
    assert c_leads.wait(2), "the watchdog missed the stuck successor"
    assert lead.end(b_gen[0]) is False
    assert lead.handoffs == 2
    lead.stop()
    watchdog.join(2)


def test_fast_leader_keeps_the_role() -> None:
    lead = Leadership(handoff_after=0.05)
    watchdog = run_watchdog(lead)
    gen = lead.acquire()
    for _ in range(200):
        lead.begin(gen)
        assert lead.end(gen)
    assert lead.handoffs == 0
    lead.stop()
    watchdog.join(2)


def test_leave_releases_once_and_only_for_the_holder() -> None:
    lead = Leadership(handoff_after=0.005)
    gen = lead.acquire()
    lead.leave(gen)
    lead.leave(gen)  # a second leave is a no-op, not "release unlocked lock"
    gen2 = lead.acquire()
    lead.leave(gen)  # a stale generation cannot release the new holder's role
    got = threading.Event()
    threading.Thread(target=lambda: (lead.acquire(), got.set()), daemon=True).start()
    assert not got.wait(0.1)
    lead.leave(gen2)
    assert got.wait(2)


def test_idle_watchdog_sleeps_and_wakes_for_work() -> None:
    lead = Leadership(handoff_after=0.001)
    watchdog = run_watchdog(lead)
    gen = lead.acquire()
    deadline = time.monotonic() + 5
    while not lead.sleeping and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lead.sleeping
    follower_led = threading.Event()
    threading.Thread(target=lambda: (lead.acquire(), follower_led.set()), daemon=True).start()
    lead.begin(gen)  # wakes the watchdog, which then sees a stuck leader
    assert follower_led.wait(2)
    assert not lead.end(gen)
    lead.stop()
    watchdog.join(2)


def test_a_wake_up_left_set_does_not_make_the_watchdog_spin_and_demote_at_once() -> None:
    """A leader's `begin` can set the wake-up just after the watchdog decided not to sleep
    (it saw the leader serving). That must not turn every later wait into no wait: the
    leader would be demoted microseconds into a request instead of after `handoff_after`."""
    lead = Leadership(handoff_after=0.3)
    turn = lead.acquire()
    lead.sleeping = True  # as the watchdog leaves it when it skips its sleep
    lead.begin(turn)  # sees it "sleeping": sets the wake-up, which nobody clears
    assert not lead.sleeping
    follower_led = threading.Event()
    threading.Thread(target=lambda: (lead.acquire(), follower_led.set()), daemon=True).start()
    began = time.monotonic()
    watchdog = run_watchdog(lead)
    assert follower_led.wait(5)  # the stuck leader is still demoted...
    assert time.monotonic() - began >= 0.25  # ...but only once it has served handoff_after
    assert not lead.end(turn)
    lead.stop()
    watchdog.join(2)


def test_a_stream_of_short_requests_is_looked_at_less_often_and_a_slow_one_is_still_handed_off() -> None:
    """Each look takes the GIL from the leader, so while it keeps moving on to new
    connections the watchdog looks less often; a request that then stays is still found."""
    lead = Leadership(handoff_after=0.01)
    watchdog = run_watchdog(lead)
    turn = lead.acquire()
    looks = lead.looks
    began = time.monotonic()
    while time.monotonic() - began < 0.6:  # short requests back to back, each ~0.1 ms
        lead.begin(turn)
        time.sleep(0.0001)
        if not lead.end(turn):  # this thread was held off the CPU past handoff_after
            turn = lead.acquire()
    elapsed = time.monotonic() - began
    # A look every handoff_after would be ~60 here (fewer only if sleeps overrun).
    assert lead.looks - looks < 0.6 * elapsed / 0.01
    follower_led = threading.Event()
    threading.Thread(target=lambda: (lead.acquire(), follower_led.set()), daemon=True).start()
    handoffs = lead.handoffs
    stuck = time.monotonic()
    lead.begin(turn)  # a slow request in the stream
    assert follower_led.wait(2)
    assert time.monotonic() - stuck >= 0.01
    assert not lead.end(turn)
    assert lead.handoffs == handoffs + 1
    lead.stop()
    watchdog.join(2)


def test_after_a_quiet_look_a_stuck_leader_is_handed_off_within_two_short_ticks() -> None:
    """The long looks are for a stream of short requests only: a request that begins
    after a quiet moment (or a hand-off) is looked at again one short tick later."""
    lead = Leadership(handoff_after=0.05)
    watchdog = run_watchdog(lead)
    turn = lead.acquire()
    lead.begin(turn)
    assert lead.end(turn)
    looks = lead.looks
    assert wait_for(lambda: lead.looks >= looks + 3)  # quiet looks: nothing served
    follower_led = threading.Event()
    threading.Thread(target=lambda: (lead.acquire(), follower_led.set()), daemon=True).start()
    stuck = time.monotonic()
    lead.begin(turn)
    assert follower_led.wait(2)
    # Two short ticks at most (0.1 s, plus oversleep); a long tick after the first look
    # would make it 0.25 s or more.
    assert time.monotonic() - stuck < 0.2
    assert not lead.end(turn)
    lead.stop()
    watchdog.join(2)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_a_successor_that_has_begun_nothing_is_looked_at_as_quiet() -> None:
    """The first look at a new turn (after a hand-off) must not count as the leader moving
    on: the successor's first request, if slow, is found within two short ticks."""
    lead = Leadership(handoff_after=0.05)
    watchdog = run_watchdog(lead)
    first = lead.acquire()
    lead.begin(first)  # stuck: handed off
    successor: list[Turn] = []
    threading.Thread(target=lambda: successor.append(lead.acquire()), daemon=True).start()
    assert wait_for(lambda: bool(successor))
    looks = lead.looks
    assert wait_for(lambda: lead.looks > looks)  # a look at the successor's turn, idle
    follower_led = threading.Event()
    threading.Thread(target=lambda: (lead.acquire(), follower_led.set()), daemon=True).start()
    stuck = time.monotonic()
    lead.begin(successor[0])  # its first request, slow
    assert follower_led.wait(2)
    assert time.monotonic() - stuck < 0.2  # two short ticks (0.1 s); a long one makes it 0.25+
    assert not lead.end(successor[0])
    assert not lead.end(first)
    lead.stop()
    watchdog.join(2)
