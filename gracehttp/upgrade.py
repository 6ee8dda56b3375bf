"""Zero-downtime upgrades (docs/architecture.rst, "Workers and upgrades"), the tableflip model: start the next
generation with the listening sockets, wait until it says it is ready, and only
then let the caller drain.

Upper layer: imports `inherit`, `listeners` and `systemd`. STYLE.md puts upgrades on
top, beside the supervisor; but the server and the supervisor both start them, so
this module sits below both.

Theory of operation
-------------------
The old process starts a new copy of its own command line (``sys.executable``
and ``sys.orig_argv``, in its current directory) with the listening sockets
passed as open descriptors and named in one environment variable (see
`gracehttp.inherit`). Two pipes go with them. On the *ready* pipe the new
process writes its pid once it has imported the app and started serving; an
end of file before that means it died. The *parent* pipe's write end stays in
the old generation (and its workers) until they exit, so the new process can
tell that the old one is still draining and refuse to start a third generation:
at most two at once, at most one not ready.

The old process waits for the report under `upgrade_timeout`, with a pipe of
its own to be woken early when a shutdown signal cancels the upgrade. A new
process that exits, stays silent past the deadline, or is cancelled is killed
(SIGKILL: it serves nothing yet, and a supervisor's workers notice their
supervisor's death and drain) and the old one serves on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess  # at start, not at an upgrade: by then a deploy may have replaced the stdlib on disk
import sys
import threading
import time
from collections.abc import Callable

from gracehttp import inherit
from gracehttp.listeners import BoundListener
from gracehttp.systemd import notify

#: Seconds to wait for a killed new generation to be reaped.
REAP_TIMEOUT = 5.0


class UpgradeFailed(Exception):
    """The new generation did not become ready; the message says why."""


def command_line() -> list[str]:
    """This process's own command line, to start the next generation with."""
    return [sys.executable, *sys.orig_argv[1:]]


class Upgrade:
    """One attempt at handing the listeners to a new generation. Parent side."""

    def __init__(self, listeners: list[BoundListener], timeout: float, logger: logging.Logger) -> None:
        self.listeners = [lst for lst in listeners if lst.name and lst.sock.fileno() >= 0]
        self.timeout = timeout
        self.logger = logger
        self._cancel_r, self._cancel_w = os.pipe()
        self.proc: subprocess.Popen[bytes] | None = None

    def cancel(self) -> None:
        """Give up (a shutdown signal came): `run` kills the new process and raises."""
        with contextlib.suppress(OSError):
            os.write(self._cancel_w, b"x")

    def run(self) -> int:
        """Start the new generation and wait until it is ready: its pid, or UpgradeFailed."""
        started = time.monotonic()
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        ready_r, ready_w = os.pipe()
        parent_r, parent_w = os.pipe()
        fds = {lst.name: lst.sock.fileno() for lst in self.listeners}
        env = dict(os.environ)
        env.pop("WATCHDOG_PID", None)  # the new generation pings once it is the main pid
        env[inherit.UPGRADE_ENV] = json.dumps({"listeners": fds, "ready_fd": ready_w, "parent_fd": parent_r,
                                               "upgrades": inherit.inheritance().upgrades + 1})
        try:
            try:
                self.proc = subprocess.Popen(command_line(), env=env, pass_fds=[*fds.values(), ready_w, parent_r])
            finally:
                os.close(ready_w)
                os.close(parent_r)
            self.logger.info("upgrade: started the new generation (pid %d): %s", self.proc.pid,
                             " ".join(command_line()))
            pid = self._wait_ready(ready_r, started + self.timeout)
        except BaseException as exc:
            os.close(parent_w)
            self._kill()
            notify("READY=1")  # systemd: the reload is over, the old process still serves
            if isinstance(exc, OSError):
                raise UpgradeFailed(f"could not start the new generation: {exc}") from exc
            raise
        finally:
            os.close(ready_r)
            os.close(self._cancel_r)
            os.close(self._cancel_w)
        # parent_w stays open (close-on-exec, but in forked workers too) until this generation
        # has exited: the new one's sign that the old one is still draining.
        for lst in self.listeners:
            lst.hand_over()
        notify(f"MAINPID={pid}\nREADY=1")
        self.logger.info("upgrade: new generation (pid %d) ready after %.3fs; draining this one (pid %d)",
                         pid, time.monotonic() - started, os.getpid())
        return pid

    def _wait_ready(self, ready_r: int, deadline: float) -> int:
        report = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UpgradeFailed(f"the new generation did not report ready within {self.timeout:g}s "
                                    "(upgrade_timeout): killed it")
            readable, _, _ = select.select([ready_r, self._cancel_r], [], [], remaining)
            if self._cancel_r in readable:
                raise UpgradeFailed("cancelled by a shutdown signal: killed the new generation")
            if ready_r in readable:
                chunk = os.read(ready_r, 64)
                if not chunk:
                    assert self.proc is not None
                    code = self.proc.wait(REAP_TIMEOUT)
                    raise UpgradeFailed(f"the new generation exited with {code} before it was ready "
                                        "(its log above says why)")
                report += chunk
                if report.endswith(b"\n"):
                    return int(report)

    def _kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(REAP_TIMEOUT)


class Upgrader:
    """Starts upgrades on request, one at a time, each in its own thread."""

    def __init__(self, timeout: float, logger: logging.Logger) -> None:
        self.timeout = timeout
        self.logger = logger
        self._lock = threading.Lock()
        self._current: Upgrade | None = None
        #: Called when an upgrade fails (the metrics count it).
        self.on_failed: Callable[[], None] = lambda: None

    def request(self, signame: str, listeners: list[BoundListener], on_ready: Callable[[int], object]) -> None:
        """Upgrade unless one is under way or the previous generation is still draining;
        ``on_ready(new_pid)`` then runs (and should drain this process)."""
        with self._lock:
            if self._current is not None:
                self.logger.warning("%s received during an upgrade: ignored (one at a time)", signame)
                return
            if previous_generation_running():
                self.logger.warning("%s received while the previous generation is still draining: "
                                    "upgrade ignored (at most two generations)", signame)
                return
            self.logger.info("%s received: upgrading", signame)
            self._current = Upgrade(listeners, self.timeout, self.logger)
        threading.Thread(target=self._run, args=(self._current, on_ready), name="gracehttp-upgrade",
                         daemon=True).start()

    def _run(self, upgrade: Upgrade, on_ready: Callable[[int], object]) -> None:
        try:
            pid = upgrade.run()
        except UpgradeFailed as exc:
            self.logger.error("upgrade failed: %s; this process (pid %d) keeps serving", exc, os.getpid())
            self.on_failed()
        except Exception:
            self.logger.exception("upgrade failed; this process (pid %d) keeps serving", os.getpid())
            self.on_failed()
        else:
            on_ready(pid)
        finally:
            with self._lock:
                self._current = None

    def cancel(self) -> None:
        """A shutdown began: an upgrade under way kills its new generation and fails."""
        with self._lock:
            if self._current is not None:
                self._current.cancel()


# -- the new generation's side ---------------------------------------------------------


def report_ready(logger: logging.Logger) -> bool:
    """Tell the old generation this one serves (it then drains); False if not an upgrade child.

    Inherited sockets no listener claimed (the new config dropped an address) are
    closed here, so none lingers with connections no one will accept.
    """
    found = inherit.inheritance()
    fd, found.ready_fd = found.ready_fd, None
    for name in inherit.close_unclaimed():
        logger.warning("upgrade: inherited listener %r is not in this config: closed", name)
    if fd is None:
        return False
    try:
        os.write(fd, b"%d\n" % os.getpid())
    except OSError as exc:  # the old generation gave up on us (and is about to kill us)
        logger.error("upgrade: could not report ready: %s", exc)
    finally:
        os.close(fd)
    return True


def previous_generation_running() -> bool:
    """True while the generation that started this one has not fully exited."""
    fd = inherit.inheritance().parent_fd
    if fd is None:
        return False
    readable, _, _ = select.select([fd], [], [], 0)
    if not readable:
        return True
    try:
        if os.read(fd, 1):
            return True
    except OSError:
        pass
    os.close(fd)
    inherit.inheritance().parent_fd = None
    return False
