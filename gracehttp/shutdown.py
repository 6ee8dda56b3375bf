"""The graceful shutdown sequence (docs/architecture.rst), and its report.

Upper layer: imports `state`, `inflight`, `engine`, `callbacks`.

Every wait takes its time from one monotonic deadline set when the signal
arrived: the drain waits on the in-flight condition (woken by the last request
to finish, not polled), waking once a second only to log progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gracehttp.callbacks import Callbacks
from gracehttp.engine import Engine
from gracehttp.inflight import InFlight
from gracehttp.state import Lifecycle, State

#: How long request threads get to leave once woken at STOPPING, after a drain that
#: finished: they are all idle then and leave at once, so this is only a bound.
THREAD_STOP_GRACE = 1.0
#: The same after a drain that ended with requests still in the app. Those had their
#: `drain_timeout` and are abandoned, not waited for: a wait for them here would stretch
#: the sequence past its documented budget. The idle threads get this long to leave, so
#: that the log names only the busy ones (they leave within a few ms on 2 cores).
IDLE_THREAD_EXIT = 0.1


@dataclass
class ShutdownReport:
    """What the graceful sequence achieved: whether every request drained, how many were
    left, how long it took, and the shutdown callbacks that failed."""

    drained: bool
    in_flight_left: int
    duration: float
    callback_errors: list[BaseException] = field(default_factory=list)


@dataclass
class ShutdownPlan:
    drain_delay: float
    drain_timeout: float
    shutdown_timeout: float
    drain_reject: bool
    #: After an upgrade: the new generation already serves the same sockets, so no
    #: `drain_delay` for load balancers, and the admin listener is left to it at once.
    handoff: bool = False


def run_sequence(*, plan: ShutdownPlan, started: float, lifecycle: Lifecycle, engine: Engine | None,
                 inflight: InFlight, callbacks: Callbacks, abort: threading.Event,
                 logger: logging.Logger, admin: Engine | None = None,
                 on_drained: Callable[[float], None] | None = None) -> ShutdownReport:
    """Drain, stop and run callbacks; `started` is the monotonic time of the signal.

    The `admin` engine keeps answering (metrics, readiness, debug) through the
    drain and stops with the main one at STOPPING.
    """
    drain_deadline = started + plan.drain_timeout
    final_deadline = started + plan.shutdown_timeout
    drained = True
    if plan.handoff and lifecycle.advance(State.DRAINING):
        logger.info("handing over to the new generation: draining")
        if admin is not None:
            admin.stop_accepting(final=False)
    elif lifecycle.advance(State.DRAINING):
        logger.info("shutting down: readiness is now 503; draining")
        if plan.drain_delay > 0 and not abort.is_set():
            abort.wait(max(0.0, min(started + plan.drain_delay, drain_deadline) - time.monotonic()))
    if engine is not None:
        engine.close_idle()  # from here on responses carry Connection: close
        if not plan.drain_reject:
            engine.stop_accepting(final=not plan.handoff)
        while True:
            pending = inflight.pending
            if pending:
                logger.info("waiting for %d in-flight requests", pending)
            if inflight.wait_idle(min(drain_deadline, time.monotonic() + 1.0)):
                break
            if abort.is_set() or time.monotonic() >= drain_deadline:
                drained = False
                break
    left = inflight.requests
    if on_drained is not None:
        on_drained(time.monotonic() - started)
    if not drained:
        logger.warning("drain ended with %d requests still in flight", left)
    lifecycle.advance(State.STOPPING)
    if engine is not None:
        grace = THREAD_STOP_GRACE if drained else IDLE_THREAD_EXIT
        engine.stop_accepting(final=not plan.handoff)
        engine.close_all()
        stuck = engine.stop(min(final_deadline, time.monotonic() + grace))
        if admin is not None:
            admin.stop_accepting(final=not plan.handoff)
            admin.close_all()
            stuck += admin.stop(min(final_deadline, time.monotonic() + grace))
        if stuck:
            logger.warning("%d request threads still busy were abandoned: %s", len(stuck), ", ".join(stuck))
    errors = callbacks.run(final_deadline, logger)
    lifecycle.advance(State.STOPPED)
    duration = time.monotonic() - started
    logger.info("stopped in %.3fs (drained=%s, callbacks failed=%d)", duration, drained, len(errors))
    return ShutdownReport(drained=drained, in_flight_left=left, duration=duration, callback_errors=errors)
