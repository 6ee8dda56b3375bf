"""An engine's threads: request threads started as they are needed, up to a limit, and
the engine's own (the reserve poller, the watchdog, the housekeeper); none starts once
the engine stops.

Bottom layer: standard library only.

Why a pool that grows: fast requests never need more than the leader, and each idle
request thread costs about 16 KiB, so an engine starts a few (`gracehttp.engine`)
and one more each time every started one is inside the app (the watchdog found no
thread waiting, or the reserve queued a request nobody waits to take). Started
threads stay. When the system refuses a thread (a container's pids limit, memory),
the pool keeps the threads it has, says so once, and tells `on_capped` its new
limit (the request-timeout watchdog counts the pool as that size).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class ThreadPool:
    def __init__(self, name: str, request_loop: Callable[[], None], limit: int, logger: logging.Logger) -> None:
        self._name = name
        self._request_loop = request_loop
        self._logger = logger
        #: The most request threads; `started` of them are running.
        self.limit = limit
        self.started = 0
        #: Told the pool's new limit when a thread could not start (`grow`).
        self.on_capped: Callable[[int], None] = lambda threads: None
        self._threads: list[threading.Thread] = []
        #: Guards the thread list and `_stopped`, so no thread starts after `stop`.
        self._lock = threading.Lock()
        self._stopped = False

    def start(self, name: str, target: Callable[[], None]) -> None:
        """Start one of the engine's own threads."""
        with self._lock:
            if not self._stopped:
                self._start(name, target)

    def grow(self, count: int = 1) -> None:
        """Start `count` more request threads, as far as the engine runs and has fewer
        than `limit`. Called by the watchdog and the reserve poller, which must go on
        whatever happens here."""
        with self._lock:
            for _ in range(count):
                if self.started >= self.limit or self._stopped:
                    return
                try:
                    self._start(f"request-{self.started}", self._request_loop)
                except RuntimeError as exc:
                    self.limit = self.started
                    self.on_capped(self.started)
                    self._logger.error("cannot start another request thread (%s): the pool stays at %d threads",
                                       exc, self.started)
                    return
                self.started += 1

    def _start(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=f"{self._name}-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        """No thread starts from now on."""
        with self._lock:
            self._stopped = True

    def join(self, deadline: float) -> list[str]:
        """Wait for every thread to end, until `deadline` (monotonic); the names of those
        still running then."""
        stuck = []
        for t in tuple(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                stuck.append(t.name)
        return stuck
