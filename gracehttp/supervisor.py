"""Workers (docs/architecture.rst, "Workers and upgrades"): a supervisor process that owns the listeners and keeps
`workers` forked processes serving them, replaces them without dropping a request,
and upgrades itself.

Upper layer, just below `server` (which hands a worker's serving to it as the
`serve_worker` callable). The supervisor would sit on top, but the public
``GracefulServer(Config(workers=2)).serve_forever()`` must reach it from the
server, so it sits below it instead.

Theory of operation
-------------------
The supervisor binds the listeners, then forks each worker. A worker serves the
inherited descriptors with an ordinary one-process server, says "ready" on a
status pipe once it can serve (and "recycle me" at ``max_requests`` plus jitter),
and exits with 0 when it drained and its callbacks succeeded. Workers run in
their own process group, so a terminal's Ctrl-C reaches only the supervisor,
which forwards it once; each holds the read end of a pipe whose write end only
the supervisor has, so a supervisor killed with SIGKILL still makes its workers
drain and exit instead of serving on as orphans.

The supervisor's main thread waits in ``select`` on the signal wakeup pipe and
the status pipe; its signal handlers only append to a queue (the signals are
tabled in docs/upgrades.rst). A worker is replaced (SIGHUP, ``max_requests``, a
request past ``request_timeout``) by starting the new one first; only once it
reports ready does the old one get SIGUSR2, which in a worker means "drain now,
without `drain_delay`: a successor already serves these sockets". A worker that
exits unasked is restarted after a back-off that doubles, up to 30 s, while
workers keep dying within a second of starting.

The supervisor reports ready (pid file, ``READY=1``, or the upgrade pipe) once
all its first workers do, and only then lets them serve (`GoPipe`).

A listening socket shared by fork stays open, its kernel queue filling, while any
process holds a copy. At a stop the supervisor closes its copies first, so the last
is a worker's, closed after it accepted all that was queued (`Engine.stop_accepting`):
a connection is refused or served, never accepted and then reset at the supervisor's exit.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import mmap
import os
import select
import signal
import time
from collections.abc import Callable

from gracehttp.addresses import describe_socket
from gracehttp.config import Config
from gracehttp.listeners import BoundListener, open_all
from gracehttp.systemd import notify, remove_pid_file, watchdog_interval, write_pid_file
from gracehttp.upgrade import Upgrader, report_ready
from gracehttp.worker import (
    READY,
    RECYCLE,
    STUCK,
    GoPipe,
    Replacement,
    Worker,
    WorkerLink,
    decode,
    enter_worker,
    watch_supervisor,
    worker_config,
    worker_link,
)
from gracehttp.workermetrics import WorkerEvents, end_multiprocess, start_multiprocess, worker_gone

#: Extra seconds after `shutdown_timeout` before workers still alive are killed.
KILL_GRACE = 5.0
MAX_BACKOFF = 30.0
#: A worker that dies sooner than this after its start counts toward a crash loop.
CRASH_WINDOW = 1.0

ServeWorker = Callable[[Config, WorkerLink], int]
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR2,
            signal.SIGTTIN, signal.SIGTTOU)
#: Blocked across a fork, so one sent before the worker's handlers exist waits for them.
_WORKER_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR2, signal.SIGHUP}
#: Not a signal: the upgrade thread's word that the next generation is ready.
_HANDOFF = -1


class Supervisor:
    def __init__(self, config: Config, serve_worker: ServeWorker, logger: logging.Logger) -> None:
        self.config = config
        self.serve_worker = serve_worker
        self.logger = logger
        self.workers: dict[int, Worker] = {}
        self.events: collections.deque[int] = collections.deque()
        self.listeners: list[BoundListener] = []
        self.admin: list[BoundListener] = []
        self.target = config.workers
        self.stopping = False
        self.announced = False
        self.backoff = 0.0
        self.exit_codes: list[int] = []
        self.replace_queue: list[int] = []
        self.replacement: Replacement | None = None
        self.upgrader = Upgrader(config.upgrade_timeout, logger)
        self._pending_restarts: list[tuple[float, int]] = []
        self.deadline: float | None = None
        self.watchdog = watchdog_interval()
        self.next_ping = 0.0
        self.sigints = 0
        self._fds: dict[str, int] = {}
        # The drained flag every worker's readiness reads: shared memory made before forking.
        self._shared = mmap.mmap(-1, mmap.PAGESIZE)
        self.go = GoPipe()
        self.metrics_dir: str | None = None
        self.tally = WorkerEvents()
        self.upgrader.on_failed = lambda: self.tally.count("upgrades", "failed")

    # -- the supervisor's side ----------------------------------------------

    def run(self) -> int:
        """Serve with workers until a signal; return 0 when every worker drained cleanly."""
        cfg = self.config
        previous = {sig: signal.signal(sig, self._record) for sig in _HANDLED}
        for name, (r, w) in (("wake", os.pipe()), ("alive", os.pipe()), ("status", os.pipe())):
            self._fds[name + "_r"], self._fds[name + "_w"] = r, w
        os.set_blocking(self._fds["wake_r"], False)
        os.set_blocking(self._fds["wake_w"], False)
        previous_wakeup = signal.set_wakeup_fd(self._fds["wake_w"], warn_on_full_buffer=False)
        try:
            self.listeners = open_all("main", [cfg.addr, *cfg.addrs], cfg.listeners, cfg.backlog, cfg.reuse_port)
            self.admin = open_all("admin", [cfg.admin_addr] if cfg.admin_addr else [], (), cfg.backlog, False)
            activated = any(lst.activated for lst in self.listeners)
            self.logger.info("gracehttp supervisor %d listening on %s (%d workers)%s", os.getpid(),
                             ", ".join(describe_socket(lst.sock) for lst in self.listeners), cfg.workers,
                             " from systemd socket activation" if activated else "")
            if cfg.metrics:
                self.tally.directory = self.metrics_dir = start_multiprocess()
                self.logger.info("workers' metrics are aggregated in %s", self.metrics_dir)
            for index in range(cfg.workers):
                self._spawn(index, "start")
            return self._loop()
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            if cfg.pid_file is not None:
                remove_pid_file(cfg.pid_file)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for lst in self.listeners + self.admin:
                lst.close()
            if self.metrics_dir is not None:
                end_multiprocess(self.metrics_dir)
            for fd in self._fds.values():
                os.close(fd)
            self.go.close()

    def _record(self, signum: int, frame: object) -> None:
        self.events.append(signum)

    def _wake(self, event: int) -> None:
        """From another thread: queue `event` and wake the main loop."""
        self.events.append(event)
        with contextlib.suppress(OSError):
            os.write(self._fds["wake_w"], b"\0")

    def _loop(self) -> int:
        pending = b""
        wake_r, status_r = self._fds["wake_r"], self._fds["status_r"]
        while self.workers or (not self.stopping and self._pending_restarts):
            readable, _, _ = select.select([wake_r, status_r], [], [], self._timeout())
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
            if status_r in readable:
                records, pending = decode(pending + os.read(status_r, 4096))
                for kind, pid in records:
                    self._on_status(kind, pid)
            while self.events:
                self._on_event(self.events.popleft())
            if self.watchdog is not None and time.monotonic() >= self.next_ping:
                notify("WATCHDOG=1")
                self.next_ping = time.monotonic() + self.watchdog
            self._check_deadlines()
            self._restart_due()
            self._reap()
        failed = [code for code in self.exit_codes if code != 0]
        return 0 if not failed else 1

    def _timeout(self) -> float | None:
        times = [t for t in (self.deadline, self.replacement and self.replacement.deadline) if t]
        times += [when for when, _ in self._pending_restarts[:1]]
        times += [self.next_ping] if self.watchdog is not None else []
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _on_event(self, event: int) -> None:
        name = "upgrade ready" if event == _HANDOFF else signal.Signals(event).name
        if event == signal.SIGCHLD:
            self._reap()
        elif event in (signal.SIGTERM, signal.SIGINT, _HANDOFF):
            self.sigints += event == signal.SIGINT
            if not self.stopping:
                self._stop(event == _HANDOFF, name)
            elif self.sigints > 1:
                self.logger.warning("second SIGINT: forcing the workers to close")
                self._signal_all(signal.SIGINT)
                self._signal_all(signal.SIGINT)
        elif self.stopping:
            self.logger.info("%s received while stopping: ignored", name)
        elif event == signal.SIGUSR2:
            self.upgrader.request(name, self.listeners + self.admin, lambda pid: self._wake(_HANDOFF))
        elif event == signal.SIGHUP:
            self._roll(name)
        elif event == signal.SIGTTIN:
            self.target += 1
            used = {w.index for w in self.workers.values() if not w.retiring}
            index = min(i for i in range(len(used) + 1) if i not in used)
            self.logger.info("SIGTTIN: adding worker %d (%d workers)", index, self.target)
            self._spawn(index, "added")
        elif event == signal.SIGTTOU:
            self._remove_one()

    def _stop(self, handoff: bool, name: str) -> None:
        self.stopping = True
        self.upgrader.cancel()
        self._pending_restarts.clear()
        self.replace_queue.clear()
        self.replacement = None  # its new worker drains with the rest; the old one must not be retired twice
        self.deadline = time.monotonic() + self.config.shutdown_timeout + KILL_GRACE
        self.go.release()  # a worker still waiting to serve must run, to drain
        for lst in self.listeners + self.admin:  # so that the last copy is a worker's: see above
            lst.close()
        if handoff:  # the new generation serves: the workers drain at once, no drain_delay
            self.logger.info("handing over to the new generation: %d workers drain", len(self.workers))
            self._signal_all(signal.SIGUSR2)
        else:
            notify("STOPPING=1")
            self.logger.info("%s received: stopping %d workers", name, len(self.workers))
            self._signal_all(signal.SIGTERM, retiring=False)  # those retiring drain already

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline and self.workers:
            self.logger.error("workers %s overran the shutdown deadline: killed", sorted(self.workers))
            self._signal_all(signal.SIGKILL)
            self.deadline = None
        rep = self.replacement
        if rep is not None and now >= rep.deadline:
            self.logger.error("replacement worker (pid %d) not ready within %gs (upgrade_timeout): killed; "
                              "pid %d serves on", rep.new, self.config.upgrade_timeout, rep.old)
            self._abandon_replacement(signal.SIGKILL)

    def _signal_all(self, sig: int, retiring: bool = True) -> None:
        for worker in list(self.workers.values()):
            if retiring or not worker.retiring:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, sig)

    # -- replacing workers ----------------------------------------------------

    def _on_status(self, kind: bytes, pid: int) -> None:
        worker = self.workers.get(pid)
        if worker is None:
            return
        if kind == READY:
            worker.ready = True
            rep = self.replacement
            if rep is not None and rep.new == pid:
                self.replacement = None
                old = self.workers.get(rep.old)
                if old is not None:
                    self._retire(old)
                self.logger.info("worker %d replaced: pid %d serves, pid %d drains", worker.index, pid, rep.old)
                self._next_replacement()
            self._announce_when_ready()
        elif kind in (RECYCLE, STUCK) and not worker.retiring and not self.stopping:
            self.logger.log(logging.INFO if kind == RECYCLE else logging.ERROR, "worker %d (pid %d) %s: replacing "
                            "it (the new one ready first)", worker.index, pid, "reached max_requests"
                            if kind == RECYCLE else "has a request past request_timeout")
            if pid not in self.replace_queue:
                self.replace_queue.append(pid)
            self._next_replacement()

    def _announce_when_ready(self) -> None:
        ready = sum(w.ready and not w.retiring for w in self.workers.values())
        if self.announced or ready < self.target:
            return
        self.announced = True
        if self.config.pid_file is not None:  # first, so that the log line means it is there
            write_pid_file(self.config.pid_file)
        self.logger.info("all %d workers ready", ready)
        if not report_ready(self.logger):
            notify(f"READY=1\nMAINPID={os.getpid()}")
        self.go.release()

    def _roll(self, name: str) -> None:
        if self.replacement is not None or self.replace_queue:
            self.logger.warning("%s received while workers are being replaced: ignored", name)
            return
        self.replace_queue = [w.pid for w in sorted(self.workers.values(), key=lambda w: w.index)
                              if not w.retiring]
        self.logger.info("%s received: replacing %d workers one at a time", name, len(self.replace_queue))
        self._next_replacement()

    def _next_replacement(self) -> None:
        while self.replacement is None and self.replace_queue and not self.stopping:
            old = self.workers.get(self.replace_queue.pop(0))
            if old is None or old.retiring:
                continue
            new = self._spawn(old.index, "replace")
            self.replacement = Replacement(old.pid, new, time.monotonic() + self.config.upgrade_timeout)

    def _abandon_replacement(self, sig: int | None) -> None:
        rep, self.replacement = self.replacement, None
        self.replace_queue.clear()
        if rep is None:
            return
        new = self.workers.get(rep.new)
        if new is not None:
            new.retiring = True
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rep.new, sig)

    def _retire(self, worker: Worker) -> None:
        worker.retiring = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGUSR2)

    def _remove_one(self) -> None:
        if self.target <= 1:
            self.logger.warning("SIGTTOU received with one worker: ignored (at least one serves)")
            return
        self.target -= 1
        candidates = [w for w in self.workers.values()
                      if not w.retiring and not (self.replacement and w.pid == self.replacement.new)]
        victim = max(candidates, key=lambda w: w.index)
        self.logger.info("SIGTTOU: worker %d (pid %d) drains (%d workers)", victim.index, victim.pid, self.target)
        with contextlib.suppress(ValueError):
            self.replace_queue.remove(victim.pid)
        self._retire(victim)

    # -- reaping and restarting -------------------------------------------------

    def _reap(self) -> None:
        # Only our workers: waitpid(-1) would also reap an upgrade's new generation under
        # the feet of the `subprocess.Popen` that started it.
        for pid in list(self.workers):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            self._exited(self.workers.pop(pid), os.waitstatus_to_exitcode(status))

    def _exited(self, worker: Worker, code: int) -> None:
        self.tally.exited(code, asked=worker.retiring or self.stopping, retired=worker.retiring)
        if self.metrics_dir is not None:
            worker_gone(self.metrics_dir, worker.pid)
        rep = self.replacement
        if rep is not None and rep.new == worker.pid:
            self.logger.error("replacement worker %d (pid %d) exited with %d before it was ready; pid %d "
                              "serves on", worker.index, worker.pid, code, rep.old)
            self._abandon_replacement(None)
            return
        if self.stopping or worker.retiring:
            if self.stopping and not worker.retiring:
                self.exit_codes.append(code)
            log = self.logger.info if code == 0 else self.logger.warning
            log("worker %d (pid %d) exited with %d", worker.index, worker.pid, code)
            return
        with contextlib.suppress(ValueError):
            self.replace_queue.remove(worker.pid)
        if rep is not None and rep.old == worker.pid:
            self.logger.error("worker %d (pid %d) died with %d while its replacement starts", worker.index,
                              worker.pid, code)
            return
        lived = time.monotonic() - worker.started
        self.backoff = min(max(self.backoff * 2, 0.5), MAX_BACKOFF) if lived < CRASH_WINDOW else 0.0
        self.logger.error("worker %d (pid %d) died with %d after %.1fs; restarting in %.1fs",
                          worker.index, worker.pid, code, lived, self.backoff)
        self._pending_restarts.append((time.monotonic() + self.backoff, worker.index))
        self._pending_restarts.sort()

    def _restart_due(self) -> None:
        now = time.monotonic()
        while self._pending_restarts and self._pending_restarts[0][0] <= now and not self.stopping:
            _, index = self._pending_restarts.pop(0)
            self._spawn(index, "restart")

    def _spawn(self, index: int, reason: str) -> int:
        self.tally.count("starts", reason)
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
        return pid

    # -- the worker's side --------------------------------------------------

    def _become_worker(self, index: int) -> int:
        enter_worker(_HANDLED, [self._fds[name] for name in ("wake_r", "wake_w", "alive_w", "status_r")], self.go)
        watch_supervisor(self._fds["alive_r"])
        link = worker_link(index, memoryview(self._shared), self._fds["status_w"], self.config, self.go)
        return self.serve_worker(worker_config(self.config, self.listeners, self.admin), link)
