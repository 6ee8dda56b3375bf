"""Signal handling: the handler only records the signal; a dispatcher thread acts on it.

Upper layer: standard library only.

Acting inside a Python signal handler runs arbitrary code in the main thread
between two bytecodes, which can re-enter locks it holds (gunicorn learned
this; the stdlib's ``socketserver.shutdown`` deadlocks when called there).
``queue.SimpleQueue.put`` is documented as safe in that position.
"""

from __future__ import annotations

import collections
import queue
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

    def restore(self) -> None:
        """Put the previous handlers back and stop the dispatcher thread."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5.0)
            self._thread = None
