"""`ServiceGroup` and `wait_group` (docs/architecture.rst, "Service groups"): several servers and background
workers under one lifecycle.

Top layer: imports `server`, `config`, `signals` and `callbacks`.

Theory of operation
-------------------
oklog/run's rule: the first member to end (a server that stops, a worker that
returns or raises) or a SIGTERM/SIGINT ends the whole group, and the group's
result is the exception that ended it (None for a signal or a clean return).
What its users asked for and did not get: here every member is *interrupted at
once* (each server begins its drain, each worker's stop event is set), then the
members are *joined in reverse order of addition* under *one shared deadline*
(`shutdown_timeout` from the end), and a member still running at the deadline is
abandoned and named in the log instead of stalling the process.

Threads: the caller's (waits on the wakeup descriptor, like ``serve_forever``),
one per worker, one watcher per server, and one stopper per server at the end.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from gracehttp.callbacks import process_callbacks
from gracehttp.config import Config
from gracehttp.server import GracefulServer
from gracehttp.signals import SHUTDOWN_SIGNALS, SignalDispatcher

Worker = Callable[[threading.Event], Any]
#: The default action of these is to terminate; a group does not upgrade (yet).
_UPGRADE_SIGNALS = (signal.SIGUSR2, signal.SIGHUP)


class _Member:
    def __init__(self, name: str) -> None:
        self.name = name
        self.done = threading.Event()

    def start(self, ended: Callable[[_Member, BaseException | None], None]) -> None:
        raise NotImplementedError

    def interrupt(self) -> None:
        raise NotImplementedError


class _ServerMember(_Member):
    def __init__(self, server: GracefulServer) -> None:
        super().__init__("server")
        self.server = server

    def start(self, ended: Callable[[_Member, BaseException | None], None]) -> None:
        self.server.run_in_background()
        self.name = "server " + ", ".join(self.server.addresses)

        def watch() -> None:
            self.server.wait()
            self.done.set()
            ended(self, None)

        threading.Thread(target=watch, name="gracehttp-group-watch", daemon=True).start()

    def interrupt(self) -> None:
        threading.Thread(target=self.server.shutdown, name="gracehttp-group-stop", daemon=True).start()


class _WorkerMember(_Member):
    def __init__(self, func: Worker, name: str) -> None:
        super().__init__(name)
        self.func = func
        self.stop = threading.Event()

    def start(self, ended: Callable[[_Member, BaseException | None], None]) -> None:
        def run() -> None:
            error: BaseException | None = None
            try:
                self.func(self.stop)
            except BaseException as exc:  # the group's result: never lost in a thread
                error = exc
            finally:
                self.done.set()
            ended(self, error)

        threading.Thread(target=run, name=f"gracehttp-worker-{self.name}", daemon=True).start()

    def interrupt(self) -> None:
        self.stop.set()


class ServiceGroup:
    """Servers and workers that start together and stop together."""

    def __init__(self, app: Callable[..., Iterable[bytes]] | None = None, *, config: Config | None = None) -> None:
        self.config = config if config is not None else Config()
        self.logger = self.config.get_logger()
        self._members: list[_Member] = []
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._cause: tuple[str, BaseException | None] | None = None
        if app is not None:  # the main server; with config.admin_addr, its admin listener too
            self.add_server(GracefulServer(dataclasses.replace(self.config, app=app)))

    def add_server(self, server: GracefulServer) -> GracefulServer:
        """Run `server` with the group: started by `run`, drained when the group stops."""
        self._members.append(_ServerMember(server))
        return server

    def add(self, func: Worker, name: str | None = None) -> Worker:
        """A worker ``func(stop)``: it must return once the `threading.Event` is set. A decorator too."""
        self._members.append(_WorkerMember(func, name or str(getattr(func, "__name__", "worker"))))
        return func

    def _end(self, why: str, error: BaseException | None) -> None:
        with self._lock:
            if self._cause is None:
                self._cause = (why, error)
                self._ended.set()

    def _member_ended(self, member: _Member, error: BaseException | None) -> None:
        if error is not None:
            self._end(f"{member.name} raised {type(error).__name__}: {error}", error)
        else:
            self._end(f"{member.name} {'stopped' if isinstance(member, _ServerMember) else 'returned'}", None)

    def _on_signal(self, signum: int, count: int) -> None:
        name = signal.Signals(signum).name
        if signum in _UPGRADE_SIGNALS:  # caught so that it cannot kill the group's requests
            self.logger.warning("%s received: upgrades are not supported for a ServiceGroup; ignored", name)
            return
        if signum == signal.SIGINT and count > 1:
            self.logger.warning("second SIGINT: closing every server now")
            for member in self._members:
                if isinstance(member, _ServerMember):
                    member.server.close()
        self._end(f"{name} received", None)

    def run(self) -> BaseException | None:
        """Start every member, block until a signal or a member ends, stop them all.

        Returns the exception that ended the group (a worker's, or a server's failure
        to start), or None for a signal or a member that ended cleanly.
        """
        dispatcher = SignalDispatcher(self._on_signal, SHUTDOWN_SIGNALS + _UPGRADE_SIGNALS)
        installed = dispatcher.install()
        started: list[_Member] = []
        try:
            for member in self._members:
                try:
                    member.start(self._member_ended)
                except Exception as exc:
                    self._end(f"{member.name} failed to start: {type(exc).__name__}: {exc}", exc)
                    break
                started.append(member)
            dispatcher.start()
            dispatcher.wait(self._ended)
        finally:
            if installed:
                dispatcher.restore()
        assert self._cause is not None
        why, error = self._cause
        self._stop(started, why)
        return error

    def _stop(self, members: list[_Member], why: str) -> None:
        began = time.monotonic()
        deadline = began + self.config.shutdown_timeout
        self.logger.info("group: %s; stopping %d members", why, len(members))
        for member in reversed(members):
            member.interrupt()
        for member in reversed(members):
            if not member.done.wait(max(0.0, deadline - time.monotonic())):
                self.logger.error("group: %s did not stop within shutdown_timeout (%gs): abandoned", member.name,
                                  self.config.shutdown_timeout)
        process_callbacks.run(deadline, self.logger)
        self.logger.info("group: stopped in %.3fs", time.monotonic() - began)


def wait_group(*servers: GracefulServer, config: Config | None = None) -> BaseException | None:
    """Run `servers` until a signal (or one of them stops); then stop them all."""
    group = ServiceGroup(config=config)
    for server in servers:
        group.add_server(server)
    return group.run()
