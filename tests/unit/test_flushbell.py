"""The flush doorbell between workers, with real Unix datagram sockets: a ring reaches a
doorbell by directory and pid and returns once it has flushed; one that is gone costs
nothing, one that does not answer costs the timeout and no more, and nothing blocks."""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path

import pytest

from gracehttp.flushbell import Doorbell, doorbell_pids, ring

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


def test_a_stuck_worker_costs_each_scrape_the_timeout_and_never_blocks_it(tmp_path: Path) -> None:
    """A doorbell nobody reads: its queue fills after a few rings (ten datagrams by
    default); later rings skip it instead of blocking in the send."""
    bell = Doorbell(str(tmp_path), OTHER)
    try:
        for _ in range(30):
            began = time.monotonic()
            assert ring(str(tmp_path), {OTHER}, timeout=0.05) == 0
            assert time.monotonic() - began < 5
    finally:
        bell.close()


def test_a_doorbell_is_found_by_its_socket_and_gone_when_closed(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path), OTHER)
    assert os.listdir(tmp_path) == [f"flush_{OTHER}.sock"]
    assert doorbell_pids(str(tmp_path)) == {OTHER}
    with pytest.raises(OSError, match="in use"):
        Doorbell(str(tmp_path), OTHER)  # one per pid: a second server of a process does without
    bell.close()
    assert os.listdir(tmp_path) == []


def test_ringing_works_with_descriptors_past_1024(tmp_path: Path) -> None:
    """A busy worker holds more than 1,024 connections: select() would refuse the ring's
    socket; it waits with poll()."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < 1200:
        pytest.skip(f"needs a soft RLIMIT_NOFILE of 1,200 (it is {soft})")
    r, w = os.pipe()
    filler = [os.dup(r) for _ in range(1100)]
    bell = Doorbell(str(tmp_path), OTHER)
    t = threading.Thread(target=lambda: bell.answer(bell.wait(10)))
    t.start()
    try:
        assert bell.sock.fileno() > 1024
        assert ring(str(tmp_path), {OTHER}, timeout=10) == 1
    finally:
        t.join(10)
        bell.close()
        for fd in (*filler, r, w):
            os.close(fd)
