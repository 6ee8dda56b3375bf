"""The server lifecycle as one table, and the only object allowed to change it.

Bottom layer: imports only `gracehttp.errors`.

Readiness is derived here (``state is READY and not drained``) so that nothing
else in the package keeps a second boolean that could disagree with it.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable

from gracehttp.errors import IllegalTransition


class State(enum.Enum):
    """Where a server is in its life; the allowed moves are `TRANSITIONS`."""

    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"


#: Read on the request path (readiness, the drain's refusals): through the class, an
#: enum member costs a call of the enum metaclass's ``__getattr__`` on Python 3.11.
_READY = State.READY
SHUTTING_DOWN = frozenset({State.DRAINING, State.STOPPING, State.STOPPED})

#: Every allowed move. STARTING -> STOPPING covers a bind or start failure and
#: READY -> STOPPING a forcible ``close()``; NEW -> STOPPED closes a server
#: that never started.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.STARTING, State.STOPPED}),
    State.STARTING: frozenset({State.READY, State.STOPPING}),
    State.READY: frozenset({State.DRAINING, State.STOPPING}),
    State.DRAINING: frozenset({State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.STOPPED: frozenset(),
}


class Lifecycle:
    """Holds the current state; transitions are atomic and checked against the table."""

    def __init__(self, shared_drain: bytearray | memoryview | None = None) -> None:
        self._state = State.NEW
        #: One byte, 1 when drained. With workers it is a shared memory page made by the
        #: supervisor before forking, so a POST /drain answered by one worker drains all.
        self._drain_flag: bytearray | memoryview = shared_drain if shared_drain is not None else bytearray(1)
        self._cond = threading.Condition()
        self._listeners: list[Callable[[State, State], None]] = []
        #: Every request thread is stuck in the app past request_timeout: liveness fails.
        self.stuck = False

    @property
    def state(self) -> State:
        return self._state

    @property
    def drained(self) -> bool:
        return self._drain_flag[0] == 1

    @property
    def is_ready(self) -> bool:
        return self._state is _READY and self._drain_flag[0] == 0

    @property
    def is_shutting_down(self) -> bool:
        return self._state in SHUTTING_DOWN

    def on_change(self, listener: Callable[[State, State], None]) -> None:
        """Call ``listener(old, new)`` after every transition (metrics, notify)."""
        self._listeners.append(listener)

    def to(self, new: State) -> State:
        """Move to `new`; raise `IllegalTransition` if the table forbids it."""
        with self._cond:
            old = self._state
            if new not in TRANSITIONS[old]:
                raise IllegalTransition(f"{old.name} -> {new.name} is not allowed")
            self._state = new
            self._cond.notify_all()
        for listener in self._listeners:
            listener(old, new)
        return old

    def advance(self, new: State) -> bool:
        """Like `to`, but return False instead of raising when not allowed."""
        try:
            self.to(new)
        except IllegalTransition:
            return False
        return True

    def set_drained(self, drained: bool) -> None:
        with self._cond:
            self._drain_flag[0] = 1 if drained else 0
            self._cond.notify_all()


def transitions_rst() -> str:
    """The list of lifecycle moves in docs/lifecycle.rst, derived from `TRANSITIONS`."""
    lines = []
    for state, targets in TRANSITIONS.items():
        moves = ", ".join(t.name for t in State if t in targets) or "(final)"
        lines.append(f"- ``{state.name}`` → {moves}")
    return "\n".join(lines)
