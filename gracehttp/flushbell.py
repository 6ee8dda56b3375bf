"""A worker's flush doorbell: with workers, a scrape has every other worker flush its
metrics first, so the totals it reports count every request answered before it.

Bottom layer: standard library only.

Each worker's metrics flusher waits on a Unix datagram socket instead of sleeping
between its periodic flushes. The socket's name is abstract (no file to remove; it
goes with the process) and made of the metrics directory and the worker's pid, so
a scraping worker can reach every worker whose pid it finds in that directory. A
datagram wakes the flusher, which flushes and answers the sender. A worker makes
its doorbell and a marker file before it serves, so that a scrape right after
the workers are ready rings it too, though it has written no metrics file yet. The scraper
waits for the answers up to `RING_TIMEOUT`: a worker that does not answer in time
(stuck, or gone between the listing and the ring) costs the scrape that much at
most, and is reported as of its last periodic flush.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import time

#: How long a scrape waits, at most, for the other workers to say they have flushed.
RING_TIMEOUT = 0.25
#: A worker's marker file in the metrics directory: ``flush_<pid>`` and this.
MARKER_SUFFIX = ".bell"
_RING, _DONE = b"flush", b"done"


def _address(directory: str, pid: int) -> bytes:
    """The abstract socket name of `pid`'s doorbell: short whatever the directory's length."""
    tag = hashlib.blake2s(os.fsencode(directory), digest_size=8).hexdigest()
    return f"\0gracehttp-flush-{tag}-{pid}".encode()


class Doorbell:
    """This worker's end: wait for rings, then answer them once flushed."""

    def __init__(self, directory: str, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else pid
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(_address(directory, pid))
        self.sock.setblocking(False)
        # Known to a scraper from now on, before this worker's first metrics file.
        with open(os.path.join(directory, f"flush_{pid}{MARKER_SUFFIX}"), "w"):
            pass

    def wait(self, timeout: float) -> list[bytes | str]:
        """Wait up to `timeout` for a ring; return who rang (empty on a timeout)."""
        with contextlib.suppress(InterruptedError):
            select.select([self.sock], [], [], timeout)
        callers: list[bytes | str] = []
        while True:
            try:
                data, sender = self.sock.recvfrom(16)
            except OSError:  # BlockingIOError: nothing more
                return callers
            if data == _RING and sender:
                callers.append(sender)

    def answer(self, callers: list[bytes | str]) -> None:
        for sender in callers:
            with contextlib.suppress(OSError):  # the scraper gave up and closed its socket
                self.sock.sendto(_DONE, sender)

    def close(self) -> None:
        self.sock.close()


def ring(directory: str, pids: set[int], timeout: float = RING_TIMEOUT) -> int:
    """Ask the doorbell of every pid in `pids` (this process's excepted) to flush; wait
    until each one reached has answered, or `timeout`. Returns how many answered."""
    pids = pids - {os.getpid()}
    if not pids:
        return 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"")  # an abstract name chosen by the kernel, for the answers
        waiting = 0
        for pid in pids:
            try:
                sock.sendto(_RING, _address(directory, pid))
                waiting += 1
            except OSError:  # ECONNREFUSED: gone, or not serving yet; nothing to flush
                continue
        answered = 0
        deadline = time.monotonic() + timeout
        while answered < waiting:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            with contextlib.suppress(OSError):
                if sock.recv(16) == _DONE:
                    answered += 1
        return answered
