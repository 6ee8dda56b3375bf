"""`request_timeout`: notice requests that run too long, name them, and act.

Bottom layer: standard library only. A synchronous server cannot stop a thread
that is inside the app (a hung database call holds it until the call returns),
so what it can do is make the hang visible and hand the process over to
something that can end it: each request running past the timeout is logged
once with its method, path, client and the thread's stack, and counted; with
workers, the worker asks its supervisor to replace it the zero-drop way (the
gunicorn ``--timeout`` user's expectation, without the dropped requests of a
kill), and takes no new connections while every thread of it is stuck, leaving
them to the other workers; in one process, liveness fails once every request
thread is stuck, so Kubernetes restarts a process that can no longer serve, and
only then.

The request path pays one dict store and one pop per request (the `Running`
record), and only when the timeout or the debug endpoints are on.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import NamedTuple


def current_frames() -> dict[int, FrameType]:
    """`sys._current_frames`, with the cyclic collector paused for the call.

    On Python 3.11 a collection that starts inside it (the frame objects it makes are
    allocations) and frees a `threading.local` deadlocks the process: the local's
    cleanup takes the thread-state lock the call already holds, with the GIL, so every
    thread stops (seen here: the test run hung in a request_timeout report while a
    metrics object's local was garbage; a loop reproducing it hangs 3.11.7 within
    minutes, and 3.10 and 3.12 not in the same time). The call holds the GIL
    throughout, so the pause lasts about as long as the call.
    """
    if not _PAUSE_GC:
        return sys._current_frames()
    with _frames_lock:  # two callers at once (the watchdog, the profiler) must not re-enable it early
        enabled = gc.isenabled()
        gc.disable()
        try:
            return sys._current_frames()
        finally:
            if enabled:
                gc.enable()


#: Up to 3.11 a collection can start inside the call (3.12 runs it at the next bytecode).
#: An app turning the collector off while the call runs may find it on again after.
_PAUSE_GC = sys.version_info < (3, 12)
_frames_lock = threading.Lock()


class Running(NamedTuple):
    """One request being served, keyed by its thread's ident."""

    method: str
    #: The request target, cut to 200 characters.
    target: str
    #: The client's address (a trusted proxy's X-Forwarded-For resolved).
    client: str
    #: When the app was called, monotonic.
    started: float
    request_id: str | None = None

    def describe(self) -> str:
        rid = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.method} {self.target} from {self.client or 'a local socket'}{rid}"


def replace_after(timeout: float) -> float:
    """Seconds past `timeout` a request may run before its worker is replaced: a tenth
    of the timeout, at least one second, so a request that was only logged has a
    moment to finish before its process is retired."""
    return timeout + max(1.0, timeout / 10)


class Watchdog:
    """Scans the running requests a few times per timeout, on a thread of its own."""

    def __init__(self, running: dict[int, Running], timeout: float, logger: logging.Logger,
                 threads: int, on_over: Callable[[], None] | None = None,
                 on_replace: Callable[[], None] | None = None,
                 on_wedged: Callable[[bool], str] | None = None) -> None:
        self.running = running
        self.timeout = timeout
        self.logger = logger
        #: `wedged` turns true once this many are stuck; ``on_wedged(wedged)`` runs at each
        #: change and says what it did, for the log.
        self.threads = threads
        self.on_wedged = on_wedged
        self.on_over = on_over
        self.on_replace = on_replace
        #: Every request thread is stuck past the timeout: liveness fails.
        self.wedged = False
        self._reported: set[tuple[int, float]] = set()
        #: When the replacement was last asked for: asked again if the process is still
        #: here much later (a replacement that failed to start is abandoned).
        self._asked: float | None = None
        self._stop = threading.Event()
        self.period = min(1.0, max(0.05, timeout / 4))
        self._thread: threading.Thread | None = None

    def resize(self, threads: int) -> None:
        """The pool could start no more than `threads`: wedged once that many are stuck."""
        self.threads = threads

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gracehttp-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.check(time.monotonic())
            except Exception:  # a watchdog that dies silently would leave /livez as it was
                self.logger.exception("request_timeout watchdog: scan failed")

    def check(self, now: float) -> None:
        """One scan: log and count each request newly past the timeout; replace the
        worker once one is past `replace_after`; recompute `wedged`."""
        stuck = 0
        current: set[tuple[int, float]] = set()
        for ident, run in self.running.copy().items():  # one C call: request threads change it meanwhile
            age = now - run.started
            if age < self.timeout:
                continue
            stuck += 1
            key = (ident, run.started)
            current.add(key)
            if key not in self._reported:
                self._reported.add(key)
                self._report(ident, run, age)
            if self.on_replace is not None and age >= replace_after(self.timeout) and (
                    self._asked is None or now - self._asked >= max(30.0, self.timeout)):
                self._asked = now
                self.logger.error(
                    "request %s has run %.1fs, past request_timeout (%gs): replacing this worker; it drains "
                    "its other requests first", run.describe(), age, self.timeout,
                    extra={"request_id": run.request_id})
                self.on_replace()
        self._reported &= current
        wedged = stuck >= self.threads
        if wedged != self.wedged:
            self.wedged = wedged
            done = self.on_wedged(wedged) if self.on_wedged is not None else ""
            if wedged:
                self.logger.error("every request thread (%d) is past request_timeout%s", stuck, done)
            else:
                self.logger.warning("a request thread came free%s", done)

    def _report(self, ident: int, run: Running, age: float) -> None:
        if self.on_over is not None:
            self.on_over()
        frame = current_frames().get(ident)
        stack = "".join(traceback.format_stack(frame)).rstrip("\n") if frame is not None else "(no stack)"
        name = next((t.name for t in threading.enumerate() if t.ident == ident), str(ident))
        self.logger.warning(
            "request %s has run %.1fs, past request_timeout (%gs), on thread %s:\n%s",
            run.describe(), age, self.timeout, name, stack, extra={"request_id": run.request_id})
