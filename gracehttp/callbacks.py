"""Shutdown callbacks: registered like ``atexit``, run once, in order, each under a deadline.

Middle layer: standard library only.

Each callback runs in its own daemon thread joined with what is left of the
shutdown deadline, so one that hangs is abandoned (and named in the log and the
report) instead of stalling the process until the supervisor's SIGKILL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

F = Callable[..., Any]


class CallbackOverrun(TimeoutError):
    """A shutdown callback was still running when the shutdown deadline passed."""


class Callbacks:
    def __init__(self) -> None:
        self._items: list[tuple[F, tuple[Any, ...], dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._ran = False

    def register(self, func: F, *args: Any, **kwargs: Any) -> F:
        with self._lock:
            self._items.append((func, args, kwargs))
        return func

    def run(self, deadline: float, logger: logging.Logger) -> list[BaseException]:
        """Run every callback once; return the errors (overruns included)."""
        with self._lock:
            if self._ran:
                return []
            self._ran = True
            items = list(self._items)
        errors: list[BaseException] = []
        for func, args, kwargs in items:
            name = getattr(func, "__qualname__", repr(func))
            box: list[BaseException] = []

            def call(func: F = func, args: tuple[Any, ...] = args, kwargs: dict[str, Any] = kwargs,
                     box: list[BaseException] = box) -> None:
                try:
                    func(*args, **kwargs)
                except BaseException as exc:
                    box.append(exc)

            thread = threading.Thread(target=call, name=f"gracehttp-callback-{name}", daemon=True)
            thread.start()
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                overrun = CallbackOverrun(f"shutdown callback {name} overran the shutdown deadline")
                logger.error("%s; abandoned", overrun)
                errors.append(overrun)
            elif box:
                logger.error("shutdown callback %s raised", name, exc_info=box[0])
                errors.append(box[0])
        return errors


#: Callbacks of the process, run after `serve_forever` (or a group) has stopped its servers.
process_callbacks = Callbacks()


def register_shutdown_callback(func: F, *args: Any, **kwargs: Any) -> F:
    """Register `func(*args, **kwargs)` to run once when the process's servers have stopped."""
    return process_callbacks.register(func, *args, **kwargs)
