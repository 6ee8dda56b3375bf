"""`gracehttp.watchdog.current_frames`: the thread stacks that request_timeout reports and
the debug endpoints show, taken with no cyclic collection inside the call. On Python
3.11 a collection there that frees a `threading.local` deadlocks every thread (it takes
the thread-state lock the call holds), so none may start there, however much garbage
and however low the collector's threshold."""

from __future__ import annotations

import gc
import linecache
import sys
import threading
import time
from typing import Any

import pytest

from gracehttp.watchdog import current_frames


class Garbage:
    def __init__(self) -> None:
        self.me = self  # a cycle: only a collection frees it


def _taking_frames() -> bool:
    """Whether the caller's stack is inside `current_frames`'s call of `sys._current_frames`."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is current_frames.__code__:
            return "_current_frames" in (linecache.getline(frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    return False


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 starts collections between bytecodes, never inside")
def test_no_collection_starts_inside_the_call_and_the_collector_runs_again_after() -> None:
    """Garbage in cycles (no locals here: a collection inside the call would hang this
    test on 3.11 rather than fail it), a collection at nearly every allocation, and a
    thread whose frames keep changing, so the call makes frame objects."""
    inside = outside = 0

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        nonlocal inside, outside
        if phase == "start" and threading.current_thread() is threading.main_thread():
            if _taking_frames():
                inside += 1
            else:
                outside += 1

    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for _ in range(20):
                Garbage()
            time.sleep(0)

    threshold = gc.get_threshold()
    gc.callbacks.append(on_gc)
    gc.set_threshold(1)
    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(2000):
            assert threading.main_thread().ident in current_frames()
            [Garbage() for _ in range(2)]  # made and collected here, outside the call
    finally:
        stop.set()
        worker.join()
        gc.set_threshold(*threshold)
        gc.callbacks.remove(on_gc)
    assert inside == 0
    assert outside > 0
    assert gc.isenabled()


def test_a_collector_the_app_turned_off_stays_off() -> None:
    gc.disable()
    try:
        current_frames()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_callers_at_once_leave_the_collector_on() -> None:
    """The request_timeout watchdog and the profiler may take stacks at the same moment:
    neither turns the collector back on under the other's call, and it is on after both."""
    errors: list[str] = []

    def take() -> None:
        for _ in range(2000):
            if threading.main_thread().ident not in current_frames():
                errors.append("no main thread")

    takers = [threading.Thread(target=take) for _ in range(3)]
    for t in takers:
        t.start()
    for t in takers:
        t.join(30)
    assert not errors
    assert gc.isenabled()
