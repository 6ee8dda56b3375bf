"""The flush doorbell between workers, with real Unix datagram sockets: a ring reaches a
doorbell by directory and pid and returns once it has flushed; one that is gone costs
nothing, one that does not answer costs the timeout and no more."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from gracehttp.flushbell import MARKER_SUFFIX, Doorbell, ring
from gracehttp.metrics import worker_pids

OTHER = os.getpid() + 4_000_000  # above any real pid: a "worker" that is not this process


def test_a_ring_returns_once_the_rung_worker_has_flushed(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path), OTHER)
    flushed = threading.Event()

    def flusher() -> None:
        callers = bell.wait(10)
        flushed.set()  # the flush
        bell.answer(callers)

    t = threading.Thread(target=flusher)
    t.start()
    try:
        assert ring(str(tmp_path), {OTHER}, timeout=10) == 1
        assert flushed.is_set()
    finally:
        t.join(10)
        bell.close()


def test_this_process_and_gone_workers_are_not_waited_for(tmp_path: Path) -> None:
    began = time.monotonic()
    assert ring(str(tmp_path), {os.getpid(), OTHER}, timeout=10) == 0  # no doorbell: refused at once
    assert time.monotonic() - began < 5


def test_a_worker_that_does_not_answer_costs_the_timeout(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path), OTHER)  # never waits, never answers
    try:
        began = time.monotonic()
        assert ring(str(tmp_path), {OTHER}, timeout=0.2) == 0
        assert 0.2 <= time.monotonic() - began < 5
    finally:
        bell.close()


def test_a_doorbell_is_known_by_its_marker_before_any_metrics_file(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path), OTHER)
    try:
        assert os.listdir(tmp_path) == [f"flush_{OTHER}{MARKER_SUFFIX}"]
        assert worker_pids(str(tmp_path)) == {OTHER}
    finally:
        bell.close()
