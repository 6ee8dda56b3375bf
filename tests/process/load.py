"""Steady client load for the zero-downtime tests: keep-alive and fresh-connection clients
that record every failure, and which process answered.

Bounded twice: each client stops at `max_requests` or at `max_seconds`, whichever is first.
A keep-alive client does not retry anything: a request lost in a restart is a failure.
"""

from __future__ import annotations

import collections
import http.client
import threading
import time


class Load:
    def __init__(self, port: int, clients: int = 8, path: str = "/pid", max_seconds: float = 30.0,
                 max_requests: int = 200_000) -> None:
        self.port = port
        self.path = path
        self.deadline = time.monotonic() + max_seconds
        self.max_requests = max_requests
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.pids: collections.Counter[int] = collections.Counter()
        self.threads = [threading.Thread(target=self._client, args=(i % 2 == 0,), daemon=True)
                        for i in range(clients)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(10)

    def _client(self, keep_alive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        sent = 0
        while not self.stop_event.is_set() and time.monotonic() < self.deadline and sent < self.max_requests:
            sent += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self._record(f"{time.time():.3f} {'keep-alive' if keep_alive else 'fresh'}: {exc!r}")
                conn.close()
                conn = None
                continue
            if resp.status != 200:
                self._record(f"status {resp.status}: {body[:100]!r}")
            else:
                with self.lock:
                    self.ok += 1
                    if body.startswith(b"done "):
                        self.pids[int(body.split()[1])] += 1
            if not keep_alive:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _record(self, failure: str) -> None:
        with self.lock:
            self.failures.append(failure)

    def answered_by(self, pid: int) -> bool:
        with self.lock:
            return self.pids[pid] > 0
