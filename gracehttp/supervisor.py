"""Workers: a supervisor process that owns the listeners and keeps `workers` forked
processes serving them (the first part of SPEC section 8's process management).

Upper layer, just below `server` (which hands a worker's serving to it as the
`serve_worker` callable): imports `config`, `addresses` and `listeners`. STYLE.md
puts the supervisor on top, but SPEC's ``GracefulServer(Config(workers=2))
.serve_forever()`` must reach it from the server, so it sits below it instead.

Theory of operation
-------------------
The supervisor binds the listeners, then forks each worker before it starts any
thread of its own (forking a threaded process copies locks in unknown states).
A worker serves the inherited descriptors with an ordinary one-process server
and exits with 0 when it drained and its callbacks succeeded. Workers run in
their own process group, so a terminal's Ctrl-C reaches only the supervisor,
which forwards it once; and each worker holds the read end of a pipe whose
write end only the supervisor has, so a supervisor killed with SIGKILL still
makes its workers drain and exit instead of serving on as orphans.

The supervisor's main thread waits on a queue that its signal handlers only
append to: SIGTERM/SIGINT start the shutdown (a second SIGINT forces it),
SIGCHLD means a worker exited. A worker that exits while the supervisor is not
stopping is restarted after a back-off that doubles, up to 30 s, while workers
keep dying within a second of starting, so a crash loop does not spin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import mmap
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable

from gracehttp.addresses import describe_socket
from gracehttp.config import Config
from gracehttp.listeners import BoundListener, open_all
from gracehttp.systemd import notify, remove_pid_file, write_pid_file

#: Extra seconds after `shutdown_timeout` before workers still alive are killed.
KILL_GRACE = 5.0
MAX_BACKOFF = 30.0
#: A worker that dies sooner than this after its start counts toward a crash loop.
CRASH_WINDOW = 1.0

ServeWorker = Callable[[Config, memoryview], int]
_WORKER_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclasses.dataclass
class Worker:
    index: int
    pid: int
    started: float


class Supervisor:
    def __init__(self, config: Config, serve_worker: ServeWorker, logger: logging.Logger) -> None:
        self.config = config
        self.serve_worker = serve_worker
        self.logger = logger
        self.workers: dict[int, Worker] = {}
        self.events: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.listeners: list[BoundListener] = []
        self.stopping = False
        self.backoff = 0.0
        self.exit_codes: list[int] = []
        self._alive_r = -1
        self._alive_w = -1
        self.admin: list[BoundListener] = []
        # The drained flag every worker's readiness reads: shared memory made before forking.
        self._shared = mmap.mmap(-1, mmap.PAGESIZE)
        self.metrics_dir: str | None = None
        self._pending_restarts: list[tuple[float, int]] = []

    # -- the supervisor's side ----------------------------------------------

    def run(self) -> int:
        """Serve with workers until a signal; return 0 when every worker drained cleanly."""
        cfg = self.config
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._record) for sig in handled}
        try:
            self.listeners = open_all("main", [cfg.addr, *cfg.addrs], cfg.listeners, cfg.backlog, cfg.reuse_port)
            if cfg.admin_addr is not None:
                self.admin = open_all("admin", [cfg.admin_addr], (), cfg.backlog, False)
            if cfg.metrics:
                self._start_multiprocess_metrics()
            self._alive_r, self._alive_w = os.pipe()
            names = ", ".join(self._describe())
            self.logger.info("gracehttp supervisor %d listening on %s (%d workers)", os.getpid(), names,
                             cfg.workers)
            for index in range(cfg.workers):
                self._spawn(index)
            if cfg.pid_file is not None:
                write_pid_file(cfg.pid_file)
            notify(f"READY=1\nMAINPID={os.getpid()}")
            return self._loop()
        finally:
            if cfg.pid_file is not None:
                remove_pid_file(cfg.pid_file)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for lst in self.listeners + self.admin:
                lst.close()
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
                os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            for fd in (self._alive_r, self._alive_w):
                if fd >= 0:
                    os.close(fd)

    def _start_multiprocess_metrics(self) -> None:
        """prometheus-client's multiprocess mode: every worker writes its samples to files
        in a directory made (and removed) here, and a scrape of any worker sums them."""
        self.metrics_dir = tempfile.mkdtemp(prefix="gracehttp-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        self.logger.info("workers' metrics are aggregated in %s", self.metrics_dir)

    def _mark_dead(self, pid: int) -> None:
        if self.metrics_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    def _describe(self) -> list[str]:
        return [describe_socket(lst.sock) for lst in self.listeners]

    def _record(self, signum: int, frame: object) -> None:
        self.events.put(signum)

    def _loop(self) -> int:
        sigints = 0
        deadline: float | None = None
        while self.workers or (not self.stopping and self._pending_restarts):
            timeout = None
            now = time.monotonic()
            if deadline is not None:
                timeout = max(0.0, deadline - now)
            if self._pending_restarts:
                wait = max(0.0, self._pending_restarts[0][0] - now)
                timeout = wait if timeout is None else min(timeout, wait)
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                event = 0
            if event == signal.SIGCHLD:
                self._reap()
            elif event in (signal.SIGTERM, signal.SIGINT):
                sigints += event == signal.SIGINT
                if not self.stopping:
                    self.stopping = True
                    notify("STOPPING=1")
                    self._pending_restarts.clear()
                    deadline = time.monotonic() + self.config.shutdown_timeout + KILL_GRACE
                    self.logger.info("%s received: stopping %d workers", signal.Signals(event).name,
                                     len(self.workers))
                    self._signal_all(signal.SIGTERM)
                elif sigints > 1:
                    self.logger.warning("second SIGINT: forcing the workers to close")
                    self._signal_all(signal.SIGINT)
                    self._signal_all(signal.SIGINT)
            if deadline is not None and time.monotonic() >= deadline and self.workers:
                self.logger.error("workers %s overran the shutdown deadline: killed", sorted(self.workers))
                self._signal_all(signal.SIGKILL)
                deadline = None
            self._restart_due()
            self._reap()
        failed = [code for code in self.exit_codes if code != 0]
        return 0 if not failed else 1

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self._mark_dead(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                self.exit_codes.append(code)
                self.logger.info("worker %d (pid %d) exited with %d", worker.index, pid, code)
                continue
            lived = time.monotonic() - worker.started
            self.backoff = min(max(self.backoff * 2, 0.5), MAX_BACKOFF) if lived < CRASH_WINDOW else 0.0
            self.logger.error("worker %d (pid %d) died with %d after %.1fs; restarting in %.1fs",
                              worker.index, pid, code, lived, self.backoff)
            self._pending_restarts.append((time.monotonic() + self.backoff, worker.index))
            self._pending_restarts.sort()

    def _restart_due(self) -> None:
        now = time.monotonic()
        while self._pending_restarts and self._pending_restarts[0][0] <= now and not self.stopping:
            _, index = self._pending_restarts.pop(0)
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        # A SIGTERM that reaches a new worker before its server has installed handlers
        # would kill it undrained: keep the signals blocked (pending) across the fork;
        # the worker's signal dispatcher unblocks them once it records them.
        signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _WORKER_SIGNALS)
        if pid == 0:  # the worker
            code = 1
            try:
                code = self._become_worker(index)
            except BaseException:
                self.logger.exception("worker %d failed", index)
            finally:
                os._exit(code)
        self.workers[pid] = Worker(index, pid, time.monotonic())
        self.logger.info("worker %d started (pid %d)", index, pid)

    # -- the worker's side --------------------------------------------------

    def _become_worker(self, index: int) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.setpgid(0, 0)  # Ctrl-C reaches the supervisor only, which forwards it once
        os.close(self._alive_w)
        fds = [lst.sock.fileno() for lst in self.listeners]
        admin = f"fd://{self.admin[0].sock.fileno()}" if self.admin else None
        config = dataclasses.replace(
            self.config, workers=1, listeners=(), addr=f"fd://{fds[0]}",
            addrs=tuple(f"fd://{fd}" for fd in fds[1:]), admin_addr=admin)
        alive_r = self._alive_r
        threading.Thread(target=_watch_supervisor, args=(alive_r,), name="gracehttp-supervisor-watch",
                         daemon=True).start()
        return self.serve_worker(config, memoryview(self._shared)[:1])


def _watch_supervisor(alive_r: int) -> None:
    """Block until the supervisor's end of the pipe closes, then drain as on SIGTERM.

    The supervisor closes its end only after every worker has exited, so an end of
    file here means it died (SIGKILL, OOM killer): the worker must not serve on alone.
    """
    with contextlib.suppress(OSError):
        while os.read(alive_r, 1):
            pass
    os.kill(os.getpid(), signal.SIGTERM)
