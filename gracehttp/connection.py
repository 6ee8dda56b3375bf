"""One client connection: read requests, answer health probes, run the app, keep alive.

Upper layer: imports the parser, writer, health, spool, transport, outgoing and
exchange modules (the app's side of a request is `gracehttp.exchange`).

A thread calls `Connection.serve` when the connection's descriptor is ready; it
moves the connection through the states of `gracehttp.connstate` and returns the
one it leaves it in, which tells the engine what to do next: park it (reading a
head or a body, idle, writing, lingering), queue it for a request thread, or
close it. Nothing here waits for a client except a streamed body or response
the app itself reads or writes: a connection with nothing to read, or a
complete response the client is slow to take, goes back to the engine, so slow
and idle clients pin no request thread. See docs/architecture.rst.
"""

from __future__ import annotations

import math
import socket
import time
from typing import Any

from gracehttp.connstate import (
    ALLOWED,
    CLOSED,
    IDLE,
    IN_APP,
    LINGER_SECONDS,
    LINGERING,
    OVERFLOW_GRACE,
    QUEUED,
    READING_BODY,
    READING_HEAD,
    WRITING,
    ConnState,
    check_move,
)
from gracehttp.errors import ProtocolError
from gracehttp.exchange import CLOSE, FAILED, NEXT, REFUSED, UNREAD, Exchange
from gracehttp.health import is_probe
from gracehttp.http.framing import HeadScanner
from gracehttp.http.parser import RequestHead, parse_head
from gracehttp.http.writer import CONTINUE, error_response, simple_response
from gracehttp.outgoing import Sender
from gracehttp.site import Site
from gracehttp.spool import BodySpool
from gracehttp.state import SHUTTING_DOWN
from gracehttp.transport import RECV_SIZE, Transport
from gracehttp.wsgi import base_environ

#: Pipelined requests answered in one turn before the connection yields to the others.
PIPELINE_TURN = 16


class Connection:
    __slots__ = ("accepted", "after_write", "armed", "buf", "close_after", "deadline", "exchange", "fd",
                 "head_started", "heads", "io", "overflow", "peer", "ready", "requests", "sender",
                 "server_addr", "site", "spool", "state", "yielding")

    def __init__(self, sock: socket.SocketType, site: Site, server_addr: tuple[str, str], peer: Any,
                 tuned: bool = False) -> None:
        self.io = Transport(sock, site, tuned)
        self.fd = self.io.fd
        self.site = site
        self.peer: Any = peer if isinstance(peer, tuple) else None  # a Unix socket's peer has no address
        self.server_addr = server_addr
        self.state = READING_HEAD
        self.accepted = time.monotonic()
        self.deadline = self.accepted + site.read_header_timeout
        #: Admitted past max_connections: closed `OVERFLOW_GRACE` after accept unless it sent
        #: a request head by then (a health probe is answered, then closed).
        self.overflow = False
        #: When the head now awaited (or being read) began to arrive; 0 before its first byte.
        self.head_started = 0.0
        self.buf = b""
        #: The body being collected (READING_BODY), with its head.
        self.spool: BodySpool | None = None
        #: A complete request waiting in the engine's ready queue for a request thread.
        self.ready: tuple[RequestHead, bytes, BodySpool | None] | None = None
        #: The rest of a complete response (WRITING); what follows once it is sent
        #: (None: the next request; LINGERING or CLOSED: the connection ends).
        self.sender = Sender(self.io)
        self.after_write: ConnState | None = None
        self.armed = 0  # the events it was last armed for (negated: re-arm when parked; 0: never)
        self.requests = 0
        self.heads = HeadScanner()
        #: Answer with Connection: close (a connection admitted past max_connections).
        self.close_after = False
        #: Parked with complete requests in `buf` after a turn (armed for writability).
        self.yielding = False
        #: Made at its first request for the app: a flood or a probe never pays for one.
        self.exchange: Exchange | None = None

    # -- the state table -----------------------------------------------------

    def enter(self, new: ConnState, deadline: float | None = None) -> ConnState:
        """Move to `new` (checked against the table) and set its deadline; `deadline`
        overrides the state's own (the drain's grace). Entering LINGERING half-closes."""
        old = self.state
        if new is not old:
            if new not in ALLOWED[old]:
                check_move(old, new)  # raises IllegalTransition, naming the move
            self.state = new
            if new is LINGERING:
                # Half-close (FIN) now, then read until the client closes: closing with
                # unread input would send RST, which can destroy the answer just sent.
                self.io.shutdown_write()
        if deadline is not None:
            self.deadline = deadline
        elif new is IN_APP or new is QUEUED:
            self.deadline = math.inf  # the app's time, or a thread's: no deadline of the server's
        elif new is not old or (new is not IDLE and new is not LINGERING):
            # READING_HEAD, READING_BODY and WRITING count from a start time kept on the
            # connection, so entering them again gives the same deadline unless a new
            # head or response began; IDLE and LINGERING count from entry and keep theirs.
            self.deadline = self._deadline_of(new)
        return new

    def _deadline_of(self, state: ConnState) -> float:
        site = self.site
        if state is IDLE:
            return time.monotonic() + site.idle_timeout
        if state is READING_HEAD:
            if self.overflow:
                return self.accepted + OVERFLOW_GRACE
            if not self.requests:  # a new connection's first head: from accept, whatever it sends
                return self.accepted + site.read_header_timeout
            return (self.head_started or time.monotonic()) + site.read_header_timeout
        if state is READING_BODY:
            return self.head_started + site.read_timeout
        if state is WRITING:
            return self.sender.started + site.write_timeout
        if state is LINGERING:
            return time.monotonic() + LINGER_SECONDS
        return math.inf  # QUEUED, IN_APP (the app's time), CLOSED

    # -- serving -------------------------------------------------------------

    def serve(self, run_app: bool = True) -> ConnState:
        """Serve everything that can be served now; return the state it leaves the
        connection in.

        With `run_app` False (the reserve poller, while every request thread is
        busy) everything is done but calling the app: a request that needs it is
        kept in `ready`, and the connection is QUEUED for a request thread.
        """
        state = self.state
        self.yielding = False
        if state is LINGERING:
            if time.monotonic() >= self.deadline or self.io.drop_input():
                return self.enter(CLOSED)
            return LINGERING
        if state is WRITING:
            after = self._flush()
            if after is not None:
                return after
        elif not self.io.handshaken:
            done = self.io.handshake()
            if done is None:
                return READING_HEAD
            if not done:
                return self.enter(CLOSED)
        ready = self.ready
        if ready is not None:  # queued by the reserve poller: run it now
            self.ready = None
            self.enter(IN_APP)
            after = self._run(*ready)
            if after is not None:
                return after
            self.head_started = time.monotonic() if self.buf else 0.0
        return self._read(run_app)

    def _read(self, run_app: bool) -> ConnState:
        """Read and answer requests until nothing more can be done without waiting."""
        site = self.site
        limits = site.limits
        buf = self.buf
        answered = self.requests
        # A plain socket that gave less than a full read is drained: no second read to
        # learn it (TLS may hold decrypted bytes that epoll does not show).
        drained = False
        plain = not self.io.tls
        while True:
            spool = self.spool
            if spool is not None:  # a body being collected: take what has arrived
                if time.monotonic() > self.deadline:
                    # Checked here too: a client sending flat out never lets this loop wait.
                    return self.reject(ProtocolError(408, "read_timeout", "request body not received in time"))
                arrived = None if drained else self.io.recv_nowait()
                if arrived is None:
                    return READING_BODY
                drained = plain and len(arrived) < RECV_SIZE
                if not arrived:  # the client stopped sending mid-body (it may still read)
                    return self.reject(ProtocolError(400, "incomplete_body", "request body incomplete"))
                try:
                    spool.feed(arrived)
                except ProtocolError as exc:  # bad chunk framing, or past max_body_bytes
                    return self.reject(exc)
                if not spool.done and not spool.full:
                    continue
                head = spool.head
                self.spool = None
                buf = b""
            else:
                end = -1
                if buf:
                    try:
                        buf, end = self.heads.find(buf, limits)
                    except ProtocolError as exc:
                        return self.reject(exc)
                if end < 0:
                    data = None if drained else self.io.recv_nowait()
                    if data is None:
                        self.buf = buf
                        if buf:
                            return self.enter(READING_HEAD)
                        # Nothing of a request yet. A connection that has sent none stays
                        # READING_HEAD: the drain must not close it under a client about to send.
                        if not self.requests:
                            return READING_HEAD
                        if answered == self.requests:
                            # Woken, but no request came of it (empty lines, part of a TLS
                            # record): the state and deadline it had stand, the drain's grace
                            # included (READING_HEAD after a sweep), so none is extended.
                            return self.state if self.state is READING_HEAD else self.enter(IDLE)
                        return self.enter(IDLE, time.monotonic() + site.idle_timeout)
                    if not data:
                        if buf.strip():
                            self.reject(ProtocolError(400, "incomplete_head", "request head incomplete"))
                        return self.enter(CLOSED)
                    drained = plain and len(data) < RECV_SIZE
                    if buf:
                        self.heads.grew(len(buf))
                    else:
                        self.head_started = time.monotonic()
                    buf += data
                    continue
                try:
                    head = parse_head(buf[:end], limits)
                except ProtocolError as exc:
                    return self.reject(exc)
                buf = buf[end:]
                if self.overflow and not (site.health and is_probe(head, site.probe_paths)):
                    if head.chunked or (head.content_length or 0) > len(buf):
                        # Past max_connections nothing waits on a client: no slot to collect
                        # a body in. A clear answer; the client may retry.
                        return self._refuse(simple_response(503, b"server busy\n", close=True,
                                                            extra=(("Retry-After", "1"),),
                                                            server=site.server_header))
                    # A complete request: served like any other, then the connection closes,
                    # so it never becomes one more waiting on its client.
                    self.overflow = False
                    self.close_after = True
                    site.promote(self)
                max_body = limits.max_body_bytes
                if max_body is not None and (head.content_length or 0) > max_body:
                    # Refused before anything is collected (and before 100 Continue).
                    return self.reject(ProtocolError(413, "body_too_large", "request body too large"))
                if head.chunked or (head.content_length or 0) > len(buf):
                    # Not all here (or chunked): collect it parked before the app runs, so a
                    # slow sender holds no thread. Expect: 100-continue is answered now, never
                    # later, when the response may have begun.
                    if head.expect_continue:
                        try:
                            if self.io.send_nowait(CONTINUE) != len(CONTINUE):
                                return self.enter(CLOSED)  # it reads nothing of what it is sent
                        except OSError:
                            return self.enter(CLOSED)
                    spool = self.spool = BodySpool(head, max_body, limits.max_header_bytes, site.max_spool_bytes)
                    self.buf = b""
                    self.enter(READING_BODY)
                    try:
                        spool.feed(buf)
                    except ProtocolError as exc:
                        return self.reject(exc)
                    buf = b""
                    if not spool.done and not spool.full:
                        continue
                    self.spool = None
            after = self._answer(head, buf, spool, run_app)
            if after is not None:
                return after
            # Keep-alive was promised, so even in the drain a pipelined request is answered
            # (with Connection: close) and an idle connection gets the drain's grace.
            buf = self.buf
            if not buf:  # nothing pipelined
                self.head_started = 0.0
                if drained or not plain:  # idle until the client sends (no read to learn it)
                    return self.enter(IDLE, time.monotonic() + site.idle_timeout)
                continue  # a full read: more may wait, and the epoll set reports only new bytes
            self.head_started = time.monotonic()
            if self.requests - answered >= PIPELINE_TURN:
                # A client pipelining many requests gets this many per turn, then goes to
                # the back of the line: parked until its socket is writable (at once, if it
                # reads its answers), behind every connection that was ready before it.
                self.buf, self.yielding = buf, True
                return self.enter(READING_HEAD)

    def _answer(self, head: RequestHead, rest: bytes, spool: BodySpool | None,
                run_app: bool) -> ConnState | None:
        """Answer one request whose body is in `rest` (what follows the head) or `spool`;
        None to go on with the connection, whose unread bytes are then in `buf`."""
        site = self.site
        self.requests += 1
        if spool is None and head.path in site.probe_paths and site.health and is_probe(head, site.probe_paths):
            # Health probes never need a request thread: answered here, on any thread.
            keep = head.keep_alive and site.keep_alive and not site.closing and not self.overflow
            self.buf = rest
            try:
                self.sender.send(site.answer_probe(head, keep, self.peer))
            except OSError:
                return self.enter(CLOSED)
            return self._after_response(None if keep else LINGERING)
        if site.drain_reject and site.lifecycle.state in SHUTTING_DOWN:
            return self._refuse(simple_response(
                503, b"shutting down\n", close=True, extra=(("Retry-After", "5"),), server=site.server_header))
        if not run_app:
            self.ready = (head, rest, spool)
            return self.enter(QUEUED)
        self.enter(IN_APP)
        return self._run(head, rest, spool)

    def _after_response(self, end: ConnState | None) -> ConnState | None:
        """A response was handed over: WRITING if the client has not taken all of it
        (then `end` follows), else `end`, or None to go on with the next request."""
        sender = self.sender
        if sender.pending:
            self.after_write = end
            return self.enter(WRITING)
        if sender.short:  # a file that shrank: its length was promised, so only a close tells
            sender.short = False
            end = LINGERING if self.buf else CLOSED
        return None if end is None else self.enter(end)

    def _flush(self) -> ConnState | None:
        """Send more of a parked response; WRITING while some is left, the state that
        follows it once sent (None: go on with the next request)."""
        sender = self.sender
        try:
            if time.monotonic() >= self.deadline:  # write_timeout: the client took too long
                sender.drop()
                return self.enter(CLOSED)
            if not sender.flush():
                return WRITING
        except OSError:
            sender.drop()
            return self.enter(CLOSED)
        after = self._after_response(self.after_write)
        if after is None:
            self.head_started = time.monotonic() if self.buf else 0.0
        return after

    def _new_exchange(self) -> Exchange:
        peer, (host, port) = self.peer, self.server_addr
        env = base_environ(host, port, str(peer[0]) if peer else "", str(peer[1]) if peer else "",
                           "https" if self.io.tls else "http", multiprocess=self.site.multiprocess,
                           script_name=self.site.root_path)
        self.exchange = Exchange(self.site, env, lambda: self.io.recv_until(self.head_started + self.site.read_timeout),
                                 self.io.send, self.sender.send, self.sender.send_file)
        return self.exchange

    def _run(self, head: RequestHead, rest: bytes, spool: BodySpool | None) -> ConnState | None:
        """Run the app for one request (state IN_APP); None to go on with the connection."""
        try:
            exchange = self.exchange or self._new_exchange()
            outcome, unread = exchange.run(head, rest, spool, self.close_after)
        finally:
            if spool is not None:
                spool.close()
        if self.io.rcv_timeout != self.site.read_timeout:  # a body read with its deadline changed it
            self.io.reset_read_timeout()
        if outcome is NEXT:
            self.buf = unread
            sender = self.sender
            if sender.pending or sender.short:
                return self._after_response(None)
            return None  # the usual case: all sent, go on with the next request
        if outcome is CLOSE:
            # A client that sent more may still be sending: linger, not risk a reset.
            self.buf = unread
            return self._after_response(LINGERING if unread else CLOSED)
        if outcome is UNREAD:
            return self._after_response(LINGERING)
        if outcome is REFUSED:
            assert exchange.error is not None
            return self.reject(exchange.error)
        if outcome is FAILED:  # with its request id, which the log line of the failure names
            rid = exchange.request_id
            return self._refuse(error_response(500, "internal server error", server=self.site.server_header,
                                               extra=(("X-Request-ID", rid),) if rid else ()))
        self.sender.drop()  # ABANDON: the response cannot be finished
        return self.enter(CLOSED)

    def reject(self, exc: ProtocolError) -> ConnState:
        """Answer a request the server refuses (counted by reason) and close lingering."""
        if self.site.metrics is not None:
            self.site.metrics.bad_request(exc.reason)
        return self._refuse(error_response(exc.status, exc.detail, server=self.site.server_header))

    def _refuse(self, response: bytes) -> ConnState:
        """A closing answer, sent as far as the client takes it now, then a lingering close
        (so the answer is not lost to a reset while the client is still sending)."""
        self.io.send_quietly(response)
        return self.enter(LINGERING)

    def has_input(self) -> bool:
        return bool(self.buf.strip()) or self.io.has_input()

    def close(self) -> None:
        self.state = CLOSED  # a forcible close may come from any state
        if self.spool is not None:
            self.spool.close()
        if self.ready is not None and self.ready[2] is not None:
            self.ready[2].close()
        self.sender.drop()
        exchange, self.exchange = self.exchange, None  # it refers to this connection: freed now, not by the gc
        if exchange is not None:
            exchange.close()  # and its responder to it
        self.io.close()
