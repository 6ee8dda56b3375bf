"""A worker's flush doorbell: with workers, a scrape has every other worker flush its
metrics first, so the totals it reports count every request answered before it.

Middle layer: standard library only.

Each worker's metrics flusher waits on a Unix datagram socket instead of sleeping
between its periodic flushes. The socket is ``flush_<pid>.sock`` in the metrics
directory (private to the server's user: the supervisor makes it mode 0700), made
before the worker serves, so a scrape right after the workers are ready finds it
even though the worker has written no metrics file yet. A scraping worker rings
every doorbell in the directory from a socket of its own; a ring wakes the
flusher, which flushes and answers. The scraper waits for the answers up to
`RING_TIMEOUT`: a worker that does not answer in time (stuck, or gone between the
listing and the ring) costs the scrape that much at most, and is reported as of
its last periodic flush. Nothing here blocks: a doorbell whose queue is full (a
worker stuck for many scrapes) is skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import time

#: How long a scrape waits, at most, for the other workers to say they have flushed.
RING_TIMEOUT = 0.5
_RING, _DONE = b"flush", b"done"
_DOORBELL = re.compile(r"flush_(\d+)\.sock$")


def _path(directory: str, pid: int) -> str:
    return os.path.join(directory, f"flush_{pid}.sock")


def doorbell_pids(directory: str) -> set[int]:
    """The pids whose doorbells are in `directory`."""
    try:
        names = os.listdir(directory)
    except OSError:
        return set()
    return {int(m.group(1)) for name in names if (m := _DOORBELL.match(name))}


def remove_doorbell(directory: str, pid: int) -> None:
    """A worker is gone: its doorbell goes (the supervisor calls this for a killed one)."""
    with contextlib.suppress(OSError):
        os.unlink(_path(directory, pid))


def _wait_readable(sock: socket.socket, timeout: float) -> bool:
    poller = select.poll()  # not select(): a busy worker's descriptors go past 1,024
    poller.register(sock, select.POLLIN)
    with contextlib.suppress(InterruptedError):
        return bool(poller.poll(max(0.0, timeout) * 1000))
    return False


class Doorbell:
    """This worker's end: wait for rings, then answer them once flushed."""

    def __init__(self, directory: str, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            # In use (another server of this process has it): OSError, the caller does without.
            self.sock.bind(_path(directory, self.pid))
        except BaseException:
            self.sock.close()
            raise
        self.sock.setblocking(False)

    def wait(self, timeout: float) -> list[str | bytes]:
        """Wait up to `timeout` for a ring; return who rang (empty on a timeout)."""
        callers: list[str | bytes] = []
        if not _wait_readable(self.sock, timeout):
            return callers
        while True:
            try:
                data, sender = self.sock.recvfrom(16)
            except OSError:  # BlockingIOError: nothing more
                return callers
            if data == _RING and sender:
                callers.append(sender)

    def answer(self, callers: list[str | bytes]) -> None:
        for sender in callers:
            with contextlib.suppress(OSError):  # the scraper gave up and closed its socket
                self.sock.sendto(_DONE, sender)

    def close(self) -> None:
        self.sock.close()
        remove_doorbell(self.directory, self.pid)


def ring(directory: str, pids: set[int], timeout: float = RING_TIMEOUT) -> int:
    """Ask the doorbell of every pid in `pids` (this process's excepted) to flush; wait
    until each one reached has answered, or `timeout`. Returns how many answered."""
    pids = pids - {os.getpid()}
    if not pids:
        return 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"")  # an address chosen by the kernel (abstract), for the answers
        sock.setblocking(False)
        waiting = 0
        for pid in pids:
            try:
                sock.sendto(_RING, _path(directory, pid))
                waiting += 1
            except OSError:  # gone (refused), or its queue is full (stuck): not waited for
                continue
        answered = 0
        deadline = time.monotonic() + timeout
        while answered < waiting and _wait_readable(sock, deadline - time.monotonic()):
            while True:
                try:
                    if sock.recv(16) == _DONE:
                        answered += 1
                except OSError:
                    break
        return answered
