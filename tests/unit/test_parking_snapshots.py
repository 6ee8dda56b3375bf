"""A sweep's stale snapshot meeting a reused descriptor (`Parking.unpark` with `expect`):
the connection parked there now is left where it is, in its place in the parking order
(the longest parked come first, which `evict_stalled` relies on) and never missing, even
for a moment, from a snapshot taken without the lock (what the drain's sweep, the
housekeeper and eviction take)."""

from __future__ import annotations

import select
import sys
import threading
import time
from types import SimpleNamespace

from gracehttp.connstate import IDLE
from gracehttp.parking import Parking


class Conn:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.state = IDLE


def parking() -> Parking:
    site = SimpleNamespace(inflight=SimpleNamespace(claim=lambda begun: None))
    return Parking(site, select.epoll(), lambda conn: None)  # type: ignore[arg-type]


def test_a_stale_unpark_leaves_the_parking_order_as_it_was() -> None:
    p = parking()
    a, b = Conn(5), Conn(6)
    p.parked[5], p.parked[6] = a, b  # type: ignore[assignment]
    assert p.unpark(5, Conn(5)) is None  # type: ignore[arg-type]  # fd 5 was reused by `a`
    assert list(p.parked.values()) == [a, b]
    assert p.unpark(5, a) is a  # type: ignore[arg-type]  # the right one is taken
    assert list(p.parked.values()) == [b]


def test_a_snapshot_without_the_lock_never_misses_a_connection_a_stale_unpark_looks_at() -> None:
    p = parking()
    conn = Conn(7)
    p.parked[7] = conn  # type: ignore[assignment]
    stop = threading.Event()

    def stale_taker() -> None:
        stale = Conn(7)
        while not stop.is_set():
            p.unpark(7, stale)  # type: ignore[arg-type]

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    taker = threading.Thread(target=stale_taker)
    taker.start()
    missed = looks = 0
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and looks < 200_000:
            looks += 1
            if conn not in tuple(p.parked.values()):
                missed += 1
    finally:
        stop.set()
        taker.join()
        sys.setswitchinterval(old)
    assert looks > 1000
    assert missed == 0
