"""The FINs of a run of ``Connection: close`` answers, sent together after the run
rather than one between each app call and the next.

Bottom layer: imports `leadership` only.

Why: a closing response's last bytes are sent with ``MSG_MORE`` and wait in the
socket for the FIN that pushes them (`gracehttp.outlet.SendFinal`). Pushing them
runs the network stack, on loopback the client's side of it too, and wakes the
client's thread (on a virtual machine whose idle CPU halts, an exit to the
hypervisor). Done between two app calls, that work also evicts the app's code and
data from the CPU's caches: Flask's hello world cost 41 us a call in a loop, 68-74 us
with one loopback connection opened, answered and closed between two calls. So the
leader, which serves runs of requests (an accept batch, its poll's events, the ready
queue), hands each such socket to the engine's `Closer`, and the held FINs go out
together before it polls again: the app calls run back to back, and so do the FINs,
and one wake-up of the client takes several answers (Flask ``Connection: close``,
wrk -c50: 7,280 -> 8,250 requests/s, 141 -> 122 us of CPU a request).

Bounds: a socket is held at most `HOLD_SECONDS` (looked at after each connection a
thread serves: plus the one being served then), and at most `HOLD_MAX` are held.
Whoever leads next flushes what is held as it takes the role, and a leader before
each poll; a demoted leader flushes before it serves anything more. So a leader
stuck in a slow app, or in its ``close()``, holds them no longer than the watchdog
takes to hand its role on. Only the thread whose turn leads holds (`batching`, and
looked at again at each hold): any other sends its FIN at once. An app that forks
without exec while sockets are held gives its child copies of them: their FINs
still go (a shutdown acts on the socket, not the descriptor), but the descriptors
live until the child exits, as `gracehttp.parking` says of a connection's own.

Closing takes two parties: the FIN must go before the descriptor is closed (a close
with client bytes unread resets the connection and drops the answer; a descriptor a
forked child inherited sends no FIN at the close), and the connection must be done
with the socket (a lingering one still reads it). The connection `release`s a held
socket when it closes: if the FIN is still to go, the closer closes the socket after
it; if it went, the connection closes the socket itself. A flush holds the lock
while it sends and closes, so a connection never closes a socket a flush is about
to shut down (whose number a new connection could have taken by then).

The drain does not count held sockets: a held FIN belongs to a request that has
finished, and the leader that holds it flushes before it polls again, within
microseconds once nothing is left to serve; the engine flushes what is left
before it closes connections forcibly and when it stops.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sized

from gracehttp.leadership import Leadership, Turn

#: The longest a socket waits for the others' FINs (looked at after each connection a
#: thread serves, so plus that one's time).
HOLD_SECONDS = 0.001
#: The most sockets held at once. A fast app gains little from a longer run, and each
#: held client waits: with wrk's 50 clients on hello world, 32 cost more than 8.
HOLD_MAX = 8


class _Here(threading.local):
    #: The turn this thread leads with (`batching`): its closing answers' FINs may be
    #: held while the turn leads.
    turn: Turn | None = None


class Closer:
    def __init__(self, leadership: Leadership, *queues: Sized) -> None:
        """`queues`: the work a leader does before it polls again (events its poll
        returned, requests queued); a FIN is held only while some is waiting, since
        only then is there a run to batch: a lone client gets its FIN at once."""
        self._leads = leadership.leads
        self._queues = queues
        #: Taken by `release` and by a flush (see the module's docstring).
        self._lock = threading.Lock()
        #: The held sockets, oldest first, each with whether its connection let go of it.
        self.held: dict[socket.SocketType, bool] = {}
        #: When the oldest held socket came (``time.monotonic``).
        self._since = 0.0
        self.here = _Here()
        #: Sockets held so far (read by the tests).
        self.holds = 0

    def batching(self, turn: Turn | None) -> None:
        """This thread leads with `turn` (its closing answers may be held while the turn
        leads), or None: it does not."""
        self.here.turn = turn

    def hold(self, sock: socket.SocketType) -> bool:
        """`sock` holds a closing answer, sent with MSG_MORE: True if its FIN goes with
        the next batch (its connection must then `release` it when it closes), False
        if the caller sends it now."""
        turn = self.here.turn
        if turn is None or not self._leads(turn) or not any(self._queues):
            return False
        held = self.held
        if not held:
            self._since = time.monotonic()
        held[sock] = False  # one store, atomic: a flush takes it now or the next time
        self.holds += 1
        return True

    def release(self, sock: socket.SocketType) -> bool:
        """The connection closes: True if the closer closes `sock` after its FIN, False
        if the FIN went and the caller closes it."""
        with self._lock:
            if sock not in self.held:
                return False
            self.held[sock] = True
        return True

    def flush_due(self) -> None:
        """Flush if the oldest held socket has waited `HOLD_SECONDS`, or `HOLD_MAX` wait."""
        if len(self.held) >= HOLD_MAX or time.monotonic() - self._since >= HOLD_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Send every held socket's FIN (with its answer), and close those let go of."""
        held = self.held
        with self._lock:
            for sock, released in list(held.items()):  # held meanwhile: left for the next one
                del held[sock]
                try:  # noqa: SIM105 (contextlib.suppress is three Python calls a connection)
                    sock.shutdown(socket.SHUT_WR)
                except OSError:  # the client is gone: the close still frees the descriptor
                    pass
                if released:
                    try:  # noqa: SIM105
                        sock.close()
                    except OSError:
                        pass
