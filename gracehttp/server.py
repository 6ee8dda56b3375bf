"""`GracefulServer`: binds, serves, and shuts down by the sequence in docs/architecture.rst.

Upper layer: imports config, lifecycle, listeners, engine, shutdown, signals.

Theory of operation
-------------------
Threads: the caller's (``serve_forever`` blocks on the `_stopped` event), the
engine's request threads and housekeeper, a signal dispatcher (main thread
only), and one shutdown thread that runs the sequence once. ``shutdown()`` and
``close()`` from any thread only start or hurry that thread and wait for it, so
the thread running ``serve_forever`` never runs the sequence itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from gracehttp import inherit
from gracehttp.addresses import describe_socket
from gracehttp.callbacks import Callbacks, process_callbacks
from gracehttp.config import Config
from gracehttp.engine import Engine
from gracehttp.errors import ConfigError
from gracehttp.health import HEALTH_PATHS, health_wsgi_app
from gracehttp.inflight import InFlight
from gracehttp.listeners import BoundListener, open_all, via
from gracehttp.metrics import Metrics
from gracehttp.routing import RouteRegistrar, build_app
from gracehttp.shutdown import ShutdownPlan, ShutdownReport, run_sequence
from gracehttp.signals import SHUTDOWN_SIGNALS, SignalDispatcher
from gracehttp.sites import admin_engine, main_engine, pool_state, request_watchdog, startup_notes
from gracehttp.state import Lifecycle, State
from gracehttp.systemd import notify, remove_pid_file, start_watchdog, write_pid_file
from gracehttp.upgrade import Upgrader, report_ready
from gracehttp.watchdog import Watchdog

if TYPE_CHECKING:
    from gracehttp.worker import WorkerLink

F = Callable[..., Any]
#: SIGUSR2 upgrades the process (docs/architecture.rst, "Workers and upgrades"); so does SIGHUP without workers.
UPGRADE_SIGNALS = (signal.SIGUSR2, signal.SIGHUP)


class GracefulServer:
    """A WSGI server with a lifecycle: NEW -> STARTING -> READY -> DRAINING -> STOPPING -> STOPPED."""

    def __init__(self, config: Config | None = None, *route_registrars: RouteRegistrar,
                 _worker: WorkerLink | None = None) -> None:
        self.config = config if config is not None else Config()
        self.logger = self.config.get_logger()
        self._registrars = route_registrars
        self._app = build_app(self.config.app, route_registrars)
        self._lifecycle = Lifecycle(_worker.drain_flag if _worker is not None else None)
        self._inflight = InFlight()
        self._callbacks = Callbacks()
        self._listeners: list[BoundListener] = []
        self._engine: Engine | None = None
        self._admin: Engine | None = None
        self._admin_listeners: list[BoundListener] = []
        self._metrics: Metrics | None = None
        self._watchdog: Watchdog | None = None
        self._stopped = threading.Event()
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._sequence: threading.Thread | None = None
        self._report: ShutdownReport | None = None
        self._tls = self.config.tls_context()
        self._upgrader = Upgrader(self.config.upgrade_timeout, self.logger)
        #: 1 when a process callback failed; with ``workers > 1`` also when a worker did
        #: not drain cleanly (the supervisor's result).
        self.exit_code = 0
        #: A forked worker's lines to its supervisor, which owns the pid file.
        self._worker = _worker
        self._is_pid_owner = _worker is None
        if _worker is not None and _worker.max_requests:
            self._inflight.limit = _worker.max_requests
            self._inflight.on_limit = _worker.recycle

    # -- starting ------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            self._lifecycle.to(State.STARTING)
        try:
            self._bind_and_build()
        except BaseException:
            for lst in self._listeners + self._admin_listeners:
                lst.close()
            if self._metrics is not None:
                self._metrics.close()
            self._lifecycle.to(State.STOPPING)
            self._lifecycle.to(State.STOPPED)
            self._stopped.set()
            raise
        assert self._engine is not None
        # Announce first, serve second: a client must never get an answer (not even from
        # /livez) from a server its manager has not yet heard is ready. Connections that
        # arrive meanwhile wait in the listen backlog and are served once the engines start.
        self._lifecycle.to(State.READY)
        self._announce()
        if self._worker is not None:
            self._worker.wait_for_go()
        self._engine.start()
        if self._admin is not None:
            self._admin.start()
        if self._watchdog is not None:
            self._watchdog.start()

    def _announce(self) -> None:
        """The first log line names every bound address (the real port for :0); then the
        process manager, an upgrading parent or the supervisor hears that we serve."""
        cfg = self.config
        scheme = "https://" if self._tls else "http://"
        self.logger.info("gracehttp listening on %s (%d threads)%s", ", ".join(
            a if a.startswith("unix:") else scheme + a for a in self.addresses), cfg.threads, via(self._listeners))
        if self._admin is not None:
            self.logger.info("gracehttp admin listening on http://%s (metrics=%s, debug=%s)%s",
                             ", ".join(self.admin_addresses), cfg.metrics, cfg.debug, via(self._admin_listeners))
        for level, note in startup_notes(cfg, self._admin_listeners, self._worker is not None):
            self.logger.log(level, "%s", note)
        if self._is_pid_owner:
            if cfg.pid_file is not None:
                write_pid_file(cfg.pid_file)
            # After an upgrade, the old generation tells systemd (it is still the main pid).
            if not report_ready(self.logger):
                notify(f"READY=1\nMAINPID={os.getpid()}")
            start_watchdog(self._stopped)
        elif self._worker is not None:
            self._worker.ready()

    def _bind_and_build(self) -> None:
        cfg = self.config
        self._listeners = open_all("main", [cfg.addr, *cfg.addrs], cfg.listeners, cfg.backlog, cfg.reuse_port)
        self._admin_listeners = open_all("admin", [cfg.admin_addr] if cfg.admin_addr else [], (),
                                         cfg.backlog, False)
        self._metrics = None
        if cfg.metrics:
            from gracehttp.metrics import Metrics

            self._metrics = Metrics(self._lifecycle, self._inflight,
                                    lambda: len(self._engine.open) if self._engine else 0,
                                    lambda: pool_state(self._engine),
                                    inherit.inheritance().upgrades)
            self._upgrader.on_failed = self._metrics.upgrade_failed
        self._engine = main_engine(cfg, self._app, self._lifecycle, self._inflight, self.logger, self._tls,
                                   self._metrics, [lst.sock for lst in self._listeners], self._worker is not None,
                                   self._worker.balance if self._worker is not None else None)
        self._watchdog = request_watchdog(cfg, self._engine, self._metrics,
                                          self._worker.stuck if self._worker is not None else None)
        if self._admin_listeners:
            self._admin = admin_engine(cfg, self._engine, self._inflight, self._metrics, lambda: self.addresses,
                                       [lst.sock for lst in self._admin_listeners])

    @property
    def admin_addresses(self) -> list[str]:
        """The admin listener's bound address (``:0`` resolved), or an empty list."""
        return [describe_socket(lst.sock) for lst in self._admin_listeners if lst.sock.fileno() >= 0]

    def run_in_background(self) -> GracefulServer:
        """Bind and serve from background threads; binding errors raise here."""
        if self.config.workers > 1:
            raise ConfigError("workers", "workers > 1 runs a supervisor in the calling process: "
                              "use serve_forever()")
        self._start()
        return self

    def serve_forever(self, poll_interval: float | None = None) -> None:
        """Serve until SIGTERM/SIGINT (main thread) or ``shutdown()``; then drain and return.

        `poll_interval` is accepted for `socketserver` compatibility and ignored: nothing polls."""
        if self.config.workers > 1 and self._lifecycle.state is State.NEW:
            self._supervise()
            return
        dispatcher = SignalDispatcher(self._on_signal, SHUTDOWN_SIGNALS + UPGRADE_SIGNALS)
        installed = dispatcher.install()
        try:
            if self._lifecycle.state is State.NEW:
                self._start()
            dispatcher.start()
            dispatcher.wait(self._stopped)
        finally:
            if installed:
                dispatcher.restore()
        if self._sequence is not None:
            self._sequence.join()
        self._run_process_callbacks()

    listen_and_serve = serve_forever

    def _supervise(self) -> None:
        """``workers > 1``: this process supervises; each worker runs its own server (imported
        at start, never by an upgrade: a single process does without its 0.2 MiB of code)."""
        from gracehttp.supervisor import Supervisor

        self.exit_code = Supervisor(self.config, self._serve_worker, self.logger).run()
        self._lifecycle.to(State.STOPPED)
        self._stopped.set()
        self._run_process_callbacks()

    def _run_process_callbacks(self) -> None:
        """The process's callbacks (`gracehttp.register_shutdown_callback`); one that fails
        sets `exit_code` to 1, as a failing server callback fails the report."""
        if process_callbacks.run(time.monotonic() + self.config.shutdown_timeout, self.logger):
            self.exit_code = 1

    def _serve_worker(self, config: Config, link: WorkerLink) -> int:
        """In a forked worker: serve the inherited listeners; 0 if it drained cleanly."""
        self.logger.debug("worker %d (pid %d) starting", link.index, os.getpid())
        worker = GracefulServer(config, *self._registrars, _worker=link)
        worker._callbacks = self._callbacks  # the instance callbacks run in each worker
        worker.serve_forever()
        for sig in SHUTDOWN_SIGNALS + UPGRADE_SIGNALS:  # a late one must not kill a worker that is exiting
            signal.signal(sig, signal.SIG_IGN)
        report = worker.shutdown()
        return 0 if report.drained and not report.callback_errors and not worker.exit_code else 1

    def _on_signal(self, signum: int, count: int) -> None:
        name = signal.Signals(signum).name
        if signum in UPGRADE_SIGNALS and self._worker is not None:
            # From the supervisor: a successor serves these sockets now; drain at once.
            self.logger.info("%s received: handing over to a new worker", name)
            self._begin_shutdown(handoff=True)
        elif signum in UPGRADE_SIGNALS:
            self._start_upgrade(name)
        elif signum == signal.SIGINT and count > 1:
            self.logger.warning("second SIGINT: closing now")
            self.close()
        elif count == 1 and not self._lifecycle.is_shutting_down:
            self.logger.info("%s received: graceful shutdown", name)
            self._begin_shutdown()
        else:
            self.logger.info("%s received again: already shutting down", name)

    # -- upgrading -----------------------------------------------------------------

    def _start_upgrade(self, signame: str) -> None:
        if self._lifecycle.state is not State.READY:
            self.logger.warning("%s received while %s: upgrade ignored", signame, self._lifecycle.state.name)
            return
        self._upgrader.request(signame, self._listeners + self._admin_listeners,
                               lambda pid: self._begin_shutdown(handoff=True))

    # -- stopping ------------------------------------------------------------------

    def _begin_shutdown(self, handoff: bool = False) -> threading.Thread | None:
        """Start the sequence once. A `handoff` (after an upgrade) skips `drain_delay` and
        the STOPPING notice: the new generation already serves the same sockets."""
        started = time.monotonic()
        with self._lock:
            if not handoff:
                self._upgrader.cancel()
            if self._sequence is not None:
                return self._sequence
            state = self._lifecycle.state
            if state is State.NEW:
                self._lifecycle.to(State.STOPPED)
                self._stopped.set()
                return None
            if state is State.STOPPED:
                return None
            self._sequence = threading.Thread(target=self._run_sequence, args=(started, handoff),
                                              name="gracehttp-shutdown", daemon=True)
            self._sequence.start()
            return self._sequence

    def _run_sequence(self, started: float, handoff: bool) -> None:
        cfg = self.config
        if self._is_pid_owner and not handoff:
            notify("STOPPING=1")
        plan = ShutdownPlan(cfg.drain_delay, cfg.drain_timeout, cfg.shutdown_timeout, cfg.drain_reject, handoff)
        try:
            self._report = run_sequence(plan=plan, started=started, lifecycle=self._lifecycle,
                                        engine=self._engine, inflight=self._inflight,
                                        callbacks=self._callbacks, abort=self._abort, logger=self.logger,
                                        admin=self._admin, on_drained=self._drained)
        finally:
            for lst in self._listeners + self._admin_listeners:
                lst.close()
            if self._watchdog is not None:
                self._watchdog.stop()
            if self._engine is not None and self._engine.site.access_log is not None:
                self._engine.site.access_log.close()
            if self._metrics is not None:
                self._metrics.close()
            if cfg.pid_file is not None and self._is_pid_owner:
                remove_pid_file(cfg.pid_file)
            self._stopped.set()

    def _drained(self, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.drained(seconds)

    def shutdown(self, timeout: float | None = None) -> ShutdownReport:
        """Run the graceful sequence (once) and wait for it; thread-safe and idempotent."""
        started = time.monotonic()
        thread = self._begin_shutdown()
        if thread is not None:
            thread.join(timeout)
        if self._report is not None:
            return self._report
        return ShutdownReport(drained=self._inflight.requests == 0, in_flight_left=self._inflight.requests,
                              duration=time.monotonic() - started)

    def close(self) -> None:
        """Forcible stop: close the listeners and every connection now."""
        self._abort.set()
        self._inflight.abort()
        if self._engine is not None:
            self._engine.close_all()
        thread = self._begin_shutdown()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.config.shutdown_timeout)

    server_close = close

    def wait(self, timeout: float | None = None) -> bool:
        """Block until fully stopped; True when stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> GracefulServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._lifecycle.state is State.NEW:
            self._begin_shutdown()
        elif exc is None:
            self.shutdown()
        else:
            self.close()

    # -- readiness and introspection ----------------------------------------------

    def drain(self) -> None:
        """Readiness answers 503 ``drained``; requests are still served."""
        self._lifecycle.set_drained(True)

    def undrain(self) -> None:
        self._lifecycle.set_drained(False)

    def register_shutdown_callback(self, func: F, *args: Any, **kwargs: Any) -> F:
        """Run ``func(*args, **kwargs)`` once after the drain; returns `func` (a decorator)."""
        return self._callbacks.register(func, *args, **kwargs)

    @property
    def state(self) -> State:
        return self._lifecycle.state

    def status(self) -> str:
        return "stopped" if self._lifecycle.state in (State.NEW, State.STOPPED) else "running"

    @property
    def in_flight(self) -> int:
        return self._inflight.requests

    @property
    def is_ready(self) -> bool:
        return self._lifecycle.is_ready

    @property
    def is_shutting_down(self) -> bool:
        return self._lifecycle.is_shutting_down

    @property
    def is_https(self) -> bool:
        return self._tls is not None

    @property
    def server_address(self) -> tuple[str, int] | str | None:
        """The first listener's address, as `socketserver` names it (None before binding)."""
        if not self._listeners:
            return None
        name = self._listeners[0].sock.getsockname()
        return name if isinstance(name, str) else (str(name[0]), int(name[1]))

    @property
    def sockets(self) -> list[socket.socket]:
        return [lst.sock for lst in self._listeners]

    @property
    def addresses(self) -> list[str]:
        return [describe_socket(lst.sock) for lst in self._listeners if lst.sock.fileno() >= 0]

    @property
    def port(self) -> int | None:
        for lst in self._listeners:
            if lst.sock.family in (socket.AF_INET, socket.AF_INET6) and lst.sock.fileno() >= 0:
                with contextlib.suppress(OSError):  # closed by the drain since the look
                    return int(lst.sock.getsockname()[1])
        return None

    @property
    def fds(self) -> list[int]:
        return [lst.sock.fileno() for lst in self._listeners if lst.sock.fileno() >= 0]

    @property
    def health_app(self) -> Callable[..., Iterable[bytes]]:
        """``/health`` as a WSGI app wherever mounted (see `health.health_wsgi_app`)."""
        return health_wsgi_app(self._lifecycle, lambda: self._inflight.requests, "/health", HEALTH_PATHS)

    @property
    def readiness_app(self) -> Callable[..., Iterable[bytes]]:
        """``/ready`` as a WSGI app wherever mounted (see `health.health_wsgi_app`)."""
        return health_wsgi_app(self._lifecycle, lambda: self._inflight.requests, "/ready",
                               frozenset({"/ready", "/readyz"}))


def serve(app: Callable[..., Iterable[bytes]], addr: str = ":8080", **config_fields: Any) -> None:
    """Serve `app` until SIGTERM/SIGINT, then drain and return: the one-call entry point."""
    GracefulServer(Config(app=app, addr=addr, **config_fields)).serve_forever()
