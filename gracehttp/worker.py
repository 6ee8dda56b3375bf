"""A forked worker's side: its config, its start in the child, and its lines to the
supervisor: the shared drained flag, a status pipe on which it says "ready" and
"recycle me" (`max_requests`; docs/architecture.rst, "Workers and upgrades"), and the go pipe on which it hears that
it may serve (`GoPipe`).

Upper layer: imports `config`, `inherit` and `listeners`. `server` gives a worker's
server a `WorkerLink`, and `supervisor` reads what the workers write.

Each message is one fixed-size record (a kind byte and the worker's pid), written
with a single ``write`` far below ``PIPE_BUF``, so records from several workers
sharing one pipe never interleave.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from gracehttp import inherit
from gracehttp.balance import Balance, capacity
from gracehttp.config import Config
from gracehttp.listeners import BoundListener

_RECORD = struct.Struct("=ci")
RECORD_SIZE = _RECORD.size
#: The worker serves: its supervisor may now retire the one it replaces.
READY = b"R"
#: The worker reached ``max_requests`` (plus jitter): start its replacement.
RECYCLE = b"M"
#: A request of the worker has run past ``request_timeout``: start its replacement.
STUCK = b"S"


@dataclass
class Worker:
    """The supervisor's record of one worker process."""

    index: int
    pid: int
    started: float
    ready: bool = False
    #: Asked to leave (replaced, or one too many): its exit is expected.
    retiring: bool = False


@dataclass
class Replacement:
    """The supervisor's record of a worker being replaced (SIGHUP, ``max_requests``)."""

    old: int
    new: int
    deadline: float


class GoPipe:
    """The supervisor's word that its workers may serve: the end of file of a pipe.

    Nothing may be answered before the process manager has heard ``READY=1`` and the
    pid file exists, and the supervisor announces only once every first worker is
    ready; so a ready worker waits for the word before it serves, while connections
    wait in the shared listen backlog. Only the supervisor keeps the write end (a new
    worker releases the copy fork gave it), so closing it reaches every worker at once:
    those forked later (replacements, restarts) find it closed, and a supervisor that
    dies gives the word too (its workers then drain, see `watch_supervisor`).
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    def release(self) -> None:
        """Close this process's write end: in the supervisor, that lets the workers serve."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def wait(self) -> None:
        """In a worker: block until every write end is closed."""
        with contextlib.suppress(OSError):
            while os.read(self.read_fd, 1):
                pass

    def close(self) -> None:
        self.release()
        os.close(self.read_fd)


@dataclass
class WorkerLink:
    index: int
    #: One byte of shared memory: 1 when drained (POST /drain reaches every worker).
    drain_flag: memoryview
    status_fd: int
    #: Requests after which to ask for a replacement; None never.
    max_requests: int | None
    #: The supervisor's word that this worker may serve (None: serve at once).
    go: GoPipe | None = None
    #: This worker's share of new connections (`gracehttp.balance`).
    balance: Balance | None = None

    def ready(self) -> None:
        self._send(READY)

    def wait_for_go(self) -> None:
        """Block until the supervisor has announced the server ready (see `GoPipe`)."""
        if self.go is not None:
            self.go.wait()

    def recycle(self) -> None:
        self._send(RECYCLE)

    def stuck(self) -> None:
        self._send(STUCK)

    def _send(self, kind: bytes) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: the alive pipe handles that
            os.write(self.status_fd, _RECORD.pack(kind, os.getpid()))


def decode(data: bytes) -> tuple[list[tuple[bytes, int]], bytes]:
    """The whole records in `data`, and the bytes left over for the next read."""
    whole = len(data) - len(data) % RECORD_SIZE
    records = [_RECORD.unpack_from(data, at) for at in range(0, whole, RECORD_SIZE)]
    return [(kind, pid) for kind, pid in records], data[whole:]


def watch_supervisor(alive_r: int) -> None:
    """In a worker: drain as on SIGTERM once the supervisor's end of `alive_r` closes.

    The supervisor closes its end only after every worker has exited, so an end of
    file here means it died (SIGKILL, OOM killer): the worker must not serve on alone.
    """

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(alive_r, 1):
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="gracehttp-supervisor-watch", daemon=True).start()


def enter_worker(signals: Iterable[int], close_fds: Iterable[int], go: GoPipe) -> None:
    """First steps in a forked worker: default handlers, its own process group (a
    terminal's Ctrl-C reaches only the supervisor, which forwards it once), and none
    of the supervisor's descriptors that would keep its pipes from closing."""
    signal.set_wakeup_fd(-1)
    for sig in signals:
        signal.signal(sig, signal.SIG_DFL)
    os.setpgid(0, 0)
    for fd in close_fds:
        os.close(fd)
    go.release()
    found = inherit.inheritance()
    if found.ready_fd is not None:  # the supervisor's, from an upgrade: its death must show
        os.close(found.ready_fd)
        found.ready_fd = None


def worker_config(config: Config, listeners: list[BoundListener], admin: list[BoundListener]) -> Config:
    """The supervisor's config for one worker: serve the inherited sockets, one process."""
    fds = [lst.sock.fileno() for lst in listeners]
    return dataclasses.replace(
        config, workers=1, listeners=(), addr=f"fd://{fds[0]}", addrs=tuple(f"fd://{fd}" for fd in fds[1:]),
        admin_addr=f"fd://{admin[0].sock.fileno()}" if admin else None, pid_file=None)


def worker_link(index: int, page: memoryview, status_fd: int, config: Config, go: GoPipe) -> WorkerLink:
    """A worker's end of what it shares with the supervisor: in the page shared before
    forking, the drained flag (byte 0) and every worker's open-connection count."""
    return WorkerLink(index, page[:1], status_fd, request_limit(config), go,
                      Balance(page, index) if index < capacity(page) else None)


def request_limit(config: Config) -> int | None:
    """This worker's ``max_requests`` plus its own jitter (random reseeds in each fork)."""
    if not config.max_requests:
        return None
    return config.max_requests + random.randint(0, config.max_requests_jitter)
