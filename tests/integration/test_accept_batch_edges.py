"""The edges of an accept batch: connections taken from the kernel's queue together, the
requests of the first `READ_AT_ONCE` after the first read at once, the rest parked unread.

Two promises of that path, tried with real sockets against a real server:

- a client that trickles its request head, accepted in the same batch as ordinary
  clients, delays none of them, and is cut at ``read_header_timeout`` from its accept
  whatever it dribbles;
- SIGTERM (a real signal, to a server process) arriving just as a batch was accepted:
  the drain waits for every connection of the batch, each is answered whole, and the
  process exits 0 within its drain timeout.

A batch is made certain by queueing every connection before the server looks at its
listener: in-process, the connections wait in the queue of a listening socket the
server is then started on (``Config.listeners``); in a server process, the process is
held with SIGSTOP while they connect and send, and resumed with SIGCONT.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from typing import Any

import pytest

from gracehttp.engine import READ_AT_ONCE
from tests.helpers import connect, read_response, read_until_close, running, wait_until
from tests.process.conftest import ServerProcess


def _served_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# -- a trickler in a batch ----------------------------------------------------------

#: Connections in the batch, the trickler among them.
BATCH = 40
HEADER_TIMEOUT = 1.0
#: Every ordinary client has its answer within this long of the server's start.
PROMPT = 0.4
#: The housekeeper looks every quarter of the shortest timeout (`Parking.tick`): the cut
#: comes at most that long after the deadline; the rest is slack for a loaded machine.
CUT_SLACK = HEADER_TIMEOUT / 4 + 0.75
#: The trickler's pace: one byte per this many seconds, for at most `TRICKLE_FOR`.
TRICKLE_EVERY = 0.05
TRICKLE_FOR = 5.0


class Trickler:
    """A client that sends a request head a byte at a time and never finishes it; it
    notes when the server cut it (an answer, a FIN or a reset) and what it received."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.cut_at: float | None = None
        self.received = b""
        self.sent = 0
        self.how = ""
        #: Set by the test when it ends early: the thread leaves before the socket closes.
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="trickler", daemon=True)

    def _run(self) -> None:
        sock = self.sock
        sock.setblocking(False)
        stop = time.monotonic() + TRICKLE_FOR
        while time.monotonic() < stop and not self.stop.is_set():
            try:
                sock.send(b"a")  # within a header value: the head never ends
                self.sent += 1
            except BlockingIOError:
                pass
            except OSError as exc:  # reset by the server
                self._cut(f"send failed: {exc!r}")
                return
            readable, _, _ = select.select([sock], [], [], TRICKLE_EVERY)  # the client's pace, and its look
            if readable:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._cut(f"recv failed: {exc!r}")
                    return
                self._cut("answered" if data else "closed")
                self.received = data
                if data:  # the rest of the answer, up to the server's close
                    sock.setblocking(True)
                    self.received += read_until_close(sock, 3.0)
                return

    def _cut(self, how: str) -> None:
        self.cut_at = time.monotonic()
        self.how = how


@pytest.mark.parametrize(
    "position",
    [0, 5, READ_AT_ONCE + 3],
    ids=["served-by-the-batch-thread", "read-at-once", "parked-unread"],
)
def test_a_trickler_in_a_batch_delays_no_one_and_is_cut_at_its_header_deadline(position: int) -> None:
    """40 connections queued before the server looks: one trickles its head a byte at a
    time (the first of the batch, one read at once, or one parked unread), the others
    sent a whole request. Every other one is answered at once, and the trickler is cut
    at read_header_timeout from its accept (408, or a close), its bytes notwithstanding."""
    assert position < BATCH - 1
    pre = socket.create_server(("127.0.0.1", 0), backlog=2 * BATCH)  # served by the server, which closes it
    port = pre.getsockname()[1]
    socks: list[socket.socket] = []
    trickler: Trickler | None = None
    try:
        for _ in range(BATCH):  # all in the listener's queue: nothing accepts yet
            socks.append(connect(port, timeout=5))
        for i, sock in enumerate(socks):
            if i == position:
                sock.sendall(b"GET /trickle HTTP/1.1\r\nHost: t\r\nX-Pad: ")
            else:
                sock.sendall(b"GET /c%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
        trickler = Trickler(socks[position])
        trickler.thread.start()
        began = time.monotonic()  # before the accept: the trickler's deadline is later than this + timeout
        with running(_served_app, listeners=(pre,), read_header_timeout=HEADER_TIMEOUT) as server:
            answered: list[float] = []
            for i, sock in enumerate(socks):
                if i == position:
                    continue
                sock.settimeout(max(0.1, began + 5 - time.monotonic()))  # 5 s for them all
                resp = read_response(sock)
                answered.append(time.monotonic() - began)
                assert (resp.status, resp.body) == (200, b"/c%d" % i)
            trickler.thread.join(TRICKLE_FOR + 5)
            assert not trickler.thread.is_alive()
            assert wait_until(lambda: server.in_flight == 0, 2), server.in_flight
    finally:
        if trickler is not None:
            trickler.stop.set()
            trickler.thread.join(5)
        for sock in socks:
            sock.close()
        pre.close()
    assert trickler is not None
    assert max(answered) < PROMPT, f"ordinary clients waited behind the trickler: {max(answered):.3f}s"
    assert trickler.cut_at is not None, f"never cut after {trickler.sent} bytes in {TRICKLE_FOR}s"
    cut = trickler.cut_at - began
    assert HEADER_TIMEOUT <= cut < HEADER_TIMEOUT + CUT_SLACK, (cut, trickler.how, trickler.sent)
    # Cut while it was still sending: its bytes did not extend the deadline, nor did they stop.
    assert trickler.sent >= (HEADER_TIMEOUT / TRICKLE_EVERY) / 2, trickler.sent
    if trickler.received:
        assert trickler.received.startswith(b"HTTP/1.1 408 "), trickler.received[:200]
        assert b"\r\nConnection: close\r\n" in trickler.received


# -- SIGTERM just after a batch was accepted ----------------------------------------

DRAIN_TIMEOUT = 5.0
#: Each request spends this long in the app: the batch is still being served at SIGTERM.
APP_SECONDS = 0.08


def _stopped(pid: int) -> bool:
    """True once the process is stopped by a signal (state T in /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "T"


@pytest.mark.parametrize("held", [True, False], ids=["queued-while-stopped", "as-they-come"])
def test_sigterm_just_after_a_batch_was_accepted_drains_every_request(held: bool) -> None:
    """40 connections each send a whole request at once, and SIGTERM follows at once:
    every one gets a complete 200 (none reset or cut short: the drain counts a connection
    from before its accept), and the process exits 0 before its drain timeout.

    `held`: the server process is stopped (SIGSTOP) while they connect and send, so all
    40 are in one batch, taken as it resumes (SIGCONT) with SIGTERM right behind; else
    they land as they come, and SIGTERM follows the last one sent."""
    srv = ServerProcess({"drain_timeout": DRAIN_TIMEOUT})
    pid = srv.proc.pid
    socks: list[socket.socket] = []
    try:
        if held:
            os.kill(pid, signal.SIGSTOP)
            assert wait_until(lambda: _stopped(pid), 5), "the server process did not stop"
        for _ in range(BATCH):
            socks.append(connect(srv.port, timeout=10))
        for sock in socks:
            sock.sendall(b"GET /slow?t=%g HTTP/1.1\r\nHost: t\r\n\r\n" % APP_SECONDS)
        if held:
            os.kill(pid, signal.SIGCONT)
        sent = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        results: list[Any] = []
        for sock in socks:
            try:
                sock.settimeout(max(0.1, sent + DRAIN_TIMEOUT + 1 - time.monotonic()))  # one bound for them all
                resp = read_response(sock)
                results.append((resp.status, resp.body, resp.headers.get("connection")))
            except Exception as exc:  # recorded: the assertion names what failed
                results.append(exc)
        code = srv.proc.wait(DRAIN_TIMEOUT + 5)
        exited = time.monotonic()
    finally:
        for sock in socks:
            sock.close()
        if srv.proc.poll() is None:
            srv.proc.kill()  # SIGKILL ends a stopped process too
            srv.proc.wait(5)
    failed = [(i, r) for i, r in enumerate(results) if not isinstance(r, tuple) or r[:2] != (200, b"done")]
    assert not failed, f"{len(failed)} of {BATCH} requests failed: {failed}\n{''.join(srv.stderr)}"
    # SIGTERM came while the batch was served: the drain had begun before some answers.
    assert any(r[2] == "close" for r in results), results
    names = [text for _, text in srv.events()]
    assert "report drained=True left=0 errors=0" in names, (names, "".join(srv.stderr))
    assert code == 0, "".join(srv.stderr)
    assert exited - sent < DRAIN_TIMEOUT, f"SIGTERM to exit took {exited - sent:.2f}s"
