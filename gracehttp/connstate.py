"""A client connection's states as one table: the moves allowed, each state's
deadline and its owner.

Bottom layer: imports only `gracehttp.errors`.

Go's net/http names each connection state (new, active, idle, closed) and h11
keeps every transition in one table; gracehttp does both, so that what bounds
a connection in each state is written down once, here, and checked on every
move (`Connection.enter`). docs/architecture.rst shows the same table.

Deadlines are absolute, set when the state is entered, and never extended by
what the client sends: a state entered again from itself keeps its deadline.
"""

from __future__ import annotations

import enum

from gracehttp.errors import IllegalTransition


class ConnState(enum.IntEnum):
    #: Waiting for a request head, or part of one has arrived.
    READING_HEAD = 0
    #: The head is in; its body is being collected while the connection is parked.
    READING_BODY = 1
    #: A complete request waits in the ready queue for a free request thread.
    QUEUED = 2
    #: A request thread runs the app for this connection's request.
    IN_APP = 3
    #: A complete response (bytes, or a file) is being sent from the parked connection.
    WRITING = 4
    #: Keep-alive: between requests, nothing received.
    IDLE = 5
    #: Half-closed after a closing answer, reading until the client closes.
    LINGERING = 6
    CLOSED = 7


READING_HEAD, READING_BODY, QUEUED, IN_APP, WRITING, IDLE, LINGERING, CLOSED = ConnState
_S = ConnState
#: Where a request can begin: it waits for more of its head or body, is queued, runs
#: the app, or is answered without it (WRITING, if the client is slow to take the
#: answer), or refused (LINGERING), or the client goes (CLOSED).
_BEGIN = frozenset({_S.READING_HEAD, _S.READING_BODY, _S.QUEUED, _S.IN_APP, _S.WRITING, _S.LINGERING, _S.CLOSED})
#: Every allowed move. A state may follow itself: more bytes arrived but not enough,
#: or (IN_APP, IDLE) the next request was answered. READING_HEAD -> IDLE follows an
#: answer given without the app (a health probe); IDLE -> READING_HEAD is also the
#: drain's grace for a connection whose client may be sending (see `parking`).
TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    _S.READING_HEAD: _BEGIN | {_S.IDLE},
    _S.READING_BODY: frozenset({_S.READING_BODY, _S.QUEUED, _S.IN_APP, _S.LINGERING, _S.CLOSED}),
    _S.QUEUED: frozenset({_S.IN_APP, _S.CLOSED}),
    _S.IN_APP: _BEGIN | {_S.IDLE},
    _S.WRITING: _BEGIN | {_S.IDLE},
    _S.IDLE: _BEGIN | {_S.IDLE},
    _S.LINGERING: frozenset({_S.LINGERING, _S.CLOSED}),
    _S.CLOSED: frozenset(),
}

#: A lingering close waits at most this long for the client to close its side.
LINGER_SECONDS = 2.0
#: How long a connection admitted past max_connections has to send its request head
#: (real clients and health probes send it at once); it is closed otherwise.
OVERFLOW_GRACE = 0.25

#: What bounds each state: the deadline set on entry (from the server's settings).
DEADLINES: dict[ConnState, str] = {
    _S.READING_HEAD: "read_header_timeout from the head's first byte (from accept for a new connection; "
                     f"{OVERFLOW_GRACE:g} s from accept past max_connections)",
    _S.READING_BODY: "read_timeout from the head's first byte, checked on every read",
    _S.QUEUED: "none of its own: it is served in arrival order as threads free up; a forcible stop closes it",
    _S.IN_APP: "the app's; every wait of a streamed body or response is bounded by read_timeout/write_timeout",
    _S.WRITING: "write_timeout from the start of the response",
    _S.IDLE: "idle_timeout from the end of the last response",
    _S.LINGERING: f"{LINGER_SECONDS:g} s from the closing answer",
    _S.CLOSED: "-",
}

#: Who may move a connection out of each state.
OWNERS: dict[ConnState, str] = {
    _S.READING_HEAD: "the parked set (a thread while it reads)",
    _S.READING_BODY: "the parked set (a thread while it reads)",
    _S.QUEUED: "the ready queue, until a request thread pops it",
    _S.IN_APP: "the request thread that runs the app",
    _S.WRITING: "the parked set (a thread while it sends)",
    _S.IDLE: "the parked set",
    _S.LINGERING: "the parked set",
    _S.CLOSED: "nobody",
}

#: Parked states whose connection carries a begun request, which the drain waits for
#: (QUEUED and IN_APP ones are counted busy instead).
PARKED_BEGUN = frozenset({_S.READING_HEAD, _S.READING_BODY, _S.WRITING})

#: `TRANSITIONS` indexed by state number, for the per-request check.
ALLOWED = tuple(TRANSITIONS[s] for s in ConnState)


def check_move(old: ConnState, new: ConnState) -> None:
    """Raise `IllegalTransition` unless the table allows ``old -> new``."""
    if new not in ALLOWED[old]:
        raise IllegalTransition(f"connection {old.name} -> {new.name} is not allowed")


def table_rst() -> str:
    """The connection state table for docs/architecture.rst, derived from the dicts above."""
    rows = [("state", "moves to", "deadline", "owner")]
    for state in ConnState:
        moves = ", ".join(t.name for t in ConnState if t in TRANSITIONS[state] and t is not state) or "(final)"
        rows.append((f"``{state.name}``", moves, DEADLINES[state], OWNERS[state]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)).rstrip(), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows[1:]]
    lines.append(rule)
    return "\n".join(lines)
