"""Signal handling: the handler only records the signal; a dispatcher thread acts on it.

Upper layer: standard library only.

Acting inside a Python signal handler runs arbitrary code in the main thread
between two bytecodes, which can re-enter locks it holds (gunicorn learned
this; the stdlib's ``socketserver.shutdown`` deadlocks when called there).
``queue.SimpleQueue.put`` is documented as safe in that position.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import select
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalDispatcher:
    """Install handlers for `signals` and call ``on_signal(signum, count)`` from a thread."""

    def __init__(self, on_signal: Callable[[int, int], None],
                 signals: tuple[int, ...] = SHUTDOWN_SIGNALS) -> None:
        self._on_signal = on_signal
        self._signals = signals
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._previous: dict[int, Any] = {}
        self._thread: threading.Thread | None = None
        self._counts: collections.Counter[int] = collections.Counter()

    def install(self) -> bool:
        """Install the handlers; False (and nothing done) outside the main thread.

        Signals are recorded from here on but acted on only after `start`, so one
        that arrives while the server is still binding waits for it to be ready.
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._record)
        # A forked worker starts with these blocked (see `supervisor`): now that they are
        # recorded, let the pending ones in.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(self._signals))
        return True

    def start(self) -> None:
        """Start acting on recorded signals (those received since `install` included)."""
        if self._previous and self._thread is None:
            self._thread = threading.Thread(target=self._dispatch, name="gracehttp-signals", daemon=True)
            self._thread.start()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self._queue.put(signum)

    def _dispatch(self) -> None:
        while True:
            signum = self._queue.get()
            if signum is None:
                return
            self._counts[signum] += 1
            self._on_signal(signum, self._counts[signum])

    def wait(self, done: threading.Event) -> None:
        """Block the main thread until `done` is set, letting recorded signals through.

        Python runs signal handlers only in the main thread, and the kernel may deliver
        a process's signal to any thread: one blocked in a plain ``Event.wait`` would
        then never run the handler. So the main thread waits in ``select`` on the
        interpreter's wakeup descriptor, which the C-level handler writes to whichever
        thread received the signal, and on a pipe written when `done` is set.
        """
        if not self._previous:
            done.wait()
            return
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        previous_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)

        def wake_when_done() -> None:
            done.wait()
            with contextlib.suppress(OSError):
                os.write(w, b"\0")
            os.close(w)  # only this thread closes w, so it never writes to a reused descriptor

        threading.Thread(target=wake_when_done, name="gracehttp-main-wake", daemon=True).start()
        try:
            while not done.is_set():
                select.select([r], [], [])
                with contextlib.suppress(BlockingIOError):
                    os.read(r, 512)  # the handlers run as soon as this thread runs bytecode
        finally:
            signal.set_wakeup_fd(previous_fd)
            os.close(r)

    def restore(self) -> None:
        """Put the previous handlers back and stop the dispatcher thread."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5.0)
            self._thread = None
