"""One client connection: read requests, answer health probes, run the app, keep alive.

Upper layer: imports the parser, writer, WSGI, response and health modules.
A worker thread calls `Connection.serve` when the connection is readable; it
returns what the engine should do next (park it idle or mid-head, linger-close
it, close it). Nothing here blocks waiting for a *next* request: a connection
with nothing to read goes back to the engine, so idle and slow clients never
pin a request thread.

A request body that has not all arrived with its head is collected while the
connection is parked (`gracehttp.spool`), so the app runs only once it is whole.
The socket primitives are in `gracehttp.transport`, the base class.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from gracehttp.errors import ProtocolError
from gracehttp.health import HEALTH_PATHS, answer
from gracehttp.http.framing import BodyFramer
from gracehttp.http.parser import MAX_LEADING_CRLF, RequestHead, find_head_end, parse_head
from gracehttp.http.writer import CONTINUE, error_response, simple_response
from gracehttp.response import Responder, run_app
from gracehttp.site import Site
from gracehttp.spool import BodySpool
from gracehttp.state import State
from gracehttp.transport import CLOSE, LINGER, PARK_HEAD, PARK_IDLE, Transport
from gracehttp.wsgi import Body, base_environ, build_environ

#: An unread request body up to this size is read and dropped to keep the
#: connection; a larger one closes it (reading it could take long).
DISCARD_LIMIT = 65536
_HEALTH = frozenset(p.encode() for p in HEALTH_PATHS)
_SHUTTING_DOWN = frozenset({State.DRAINING, State.STOPPING, State.STOPPED})


class Connection(Transport):
    __slots__ = ("blank_lines", "body_wait", "buf", "closing", "deadline", "env", "pending", "registered", "requests",
                 "scanned", "spool")

    def __init__(self, sock: socket.socket, site: Site, server_addr: tuple[str, str], peer: Any) -> None:
        super().__init__(sock, site)
        remote = (str(peer[0]), str(peer[1])) if sock.family != socket.AF_UNIX else ("", "")
        self.env = base_environ(server_addr[0], server_addr[1], remote[0], remote[1],
                                "https" if self.tls else "http")
        self.buf = b""
        #: Parked while a body is collected (`spool`, for the head `pending`): the
        #: deadline is then ``read_timeout`` from the head's first byte.
        self.body_wait = False
        self.spool: BodySpool | None = None
        self.pending: RequestHead | None = None
        self.deadline = time.monotonic() + site.read_header_timeout
        self.registered = False
        self.requests = 0
        #: Empty lines received before the request line now awaited.
        self.blank_lines = 0
        #: How far `buf` was searched for the end of the head without finding it.
        self.scanned = 0
        self.closing = lambda: site.closing

    # -- the request loop ----------------------------------------------------

    def serve(self) -> int:
        """Serve every complete request available; return what to do with the connection."""
        if self.mode == LINGER:
            return CLOSE if time.monotonic() >= self.deadline else self.linger_read()
        if not self.handshaken:
            action = self.handshake()
            if action is not None:
                return action
        site = self.site
        limits = site.limits
        buf = self.buf
        while True:
            spool = self.spool
            if spool is not None:  # a body being collected: take what has arrived
                if time.monotonic() > self.head_started + site.read_timeout:
                    # Bounded also for a client that keeps the socket buffer full: this
                    # loop may never see "nothing yet", so the deadline is checked here.
                    return self._reject(ProtocolError(408, "read_timeout", "request body not received in time"))
                arrived = self.recv_nowait()
                if arrived is None:
                    return PARK_HEAD
                if not arrived:  # the client stopped sending mid-body (it may still read)
                    return self._reject(ProtocolError(400, "incomplete_body", "request body incomplete"))
                try:
                    spool.feed(arrived)
                except ProtocolError as exc:  # bad chunk framing, or past max_body_bytes
                    return self._reject(exc)
                if not spool.done and not spool.full:
                    continue
                assert self.pending is not None
                head = self.pending
                self.pending, self.spool, self.body_wait = None, None, False
                buf = b""
            else:
                if buf[:2] == b"\r\n":
                    # Empty lines before a request line are ignored (RFC 9112 section 2.2),
                    # a bounded number of them: dropped here, so a stray CRLF after a
                    # request leaves the connection idle, not holding a begun request.
                    i = 2
                    while buf.startswith(b"\r\n", i) and i <= 2 * MAX_LEADING_CRLF:
                        i += 2
                    self.blank_lines += i // 2
                    if self.blank_lines > MAX_LEADING_CRLF:
                        return self._reject(ProtocolError(400, "bad_request_line", "too many empty lines"))
                    buf, self.scanned = buf[i:], 0
                try:
                    end = find_head_end(buf, limits, self.scanned) if buf else -1
                except ProtocolError as exc:
                    return self._reject(exc)
                if end < 0:
                    data = self.recv_nowait()
                    if data is None:
                        self.buf = buf
                        # A connection that has not sent its first request is not idle: the
                        # drain must not close it under a client that is about to send.
                        return PARK_IDLE if not buf and self.requests else PARK_HEAD
                    if not data:
                        if buf.strip():
                            self._reject(ProtocolError(400, "incomplete_head", "request head incomplete"))
                        return CLOSE
                    if not buf:
                        self.head_started = time.monotonic()
                    # Scan only the new bytes (and the three before them, for a CRLFCRLF
                    # split across reads): a head arriving a byte at a time stays linear.
                    self.scanned = max(0, len(buf) - 3)
                    buf += data
                    continue
                self.scanned = 0
                self.blank_lines = 0
                try:
                    head = parse_head(buf[:end], limits)
                except ProtocolError as exc:
                    return self._reject(exc)
                buf = buf[end:]
                max_body = limits.max_body_bytes
                if max_body is not None and (head.content_length or 0) > max_body:
                    # Refused before anything is collected (and before 100 Continue).
                    return self._reject(ProtocolError(413, "body_too_large", "request body too large"))
                if head.chunked or (head.content_length or 0) > len(buf):
                    # Not all here (or chunked, whose end only decoding finds): collect it
                    # parked before the app runs, so a slow sender holds no thread. A client
                    # that sent Expect: 100-continue is told to go on first; it is never told
                    # so later, once the response may have begun.
                    if head.expect_continue:
                        try:
                            self.send(CONTINUE)
                        except OSError:
                            return CLOSE
                    spool = self.spool = BodySpool(head, max_body, limits.max_header_bytes, site.max_spool_bytes)
                    self.pending, self.body_wait, self.buf = head, True, b""
                    try:
                        spool.feed(buf)
                    except ProtocolError as exc:
                        return self._reject(exc)
                    buf = b""
                    if not spool.done and not spool.full:
                        continue
                    self.pending, self.spool, self.body_wait = None, None, False
            action = self._answer(head, buf, spool)
            if action is not None:
                return action
            # The response promised keep-alive, so even in the drain the client may send
            # again: a pipelined request is answered (with Connection: close), and an idle
            # connection gets the drain's grace (`Engine._sweep`), never a close under it.
            buf = self.buf
            self.head_started = 0.0
            if buf:
                self.head_started = time.monotonic()
                continue
            self.buf = b""
            return PARK_IDLE

    def _answer(self, head: RequestHead, rest: bytes, spool: BodySpool | None) -> int | None:
        """Answer one request whose body is in `rest` (what follows the head) or `spool`;
        None to go on with the connection, whose unread bytes are then in `buf`."""
        site = self.site
        self.requests += 1
        if (site.health and head.path in _HEALTH and head.method in ("GET", "HEAD") and spool is None
                and not head.content_length):
            keep = head.keep_alive and site.keep_alive and not site.closing
            status, ctype, body = answer(head.path.decode(), site.lifecycle, site.inflight.requests)
            try:
                self.send(simple_response(status, body, content_type=ctype, close=not keep,
                                          head_only=head.method == "HEAD", server=site.server_header))
            except OSError:
                return CLOSE
            self.buf = rest
            return None if keep else LINGER
        if site.drain_reject and site.lifecycle.state in _SHUTTING_DOWN:
            self.send_quietly(simple_response(
                503, b"shutting down\n", close=True, extra=(("Retry-After", "5"),), server=site.server_header))
            return LINGER
        try:
            return self._exchange(head, rest, spool)
        finally:
            if spool is not None:
                spool.close()

    def _exchange(self, head: RequestHead, rest: bytes, spool: BodySpool | None) -> int | None:
        """Run the app for one request; None to go on with the connection."""
        site = self.site
        keep_alive = head.keep_alive and site.keep_alive and not site.closing
        limits = site.limits
        if spool is None:  # the whole body (if any) arrived with the head, in `rest`
            framer = BodyFramer(head, limits.max_body_bytes, limits.max_header_bytes)
            body = Body(framer, self.recv_body, framer.feed(rest))
        else:  # collected parked: all of it, or the first `max_spool_bytes` (the rest streams)
            body = Body(spool.framer, self.recv_body, stored=spool.read)
        environ = build_environ(self.env, head, body)
        self.reset_read_timeout()
        # A body still arriving when the response starts may never be read: say
        # Connection: close in the head rather than surprise the client with a close.
        closing = self.closing if body.finished else (lambda: site.closing or not body.finished)
        responder = Responder(self.send, None if self.tls else self.sendfile, head, keep_alive,
                              site.server_header, closing)
        inflight = site.inflight
        inflight.request_started()
        started = time.perf_counter()
        active = site.active
        if active is not None:
            active[threading.get_ident()] = (head.method, head.target.decode("latin-1")[:200], time.monotonic())
        try:
            run_app(site.app, environ, responder)
        except ProtocolError as exc:
            self._account(environ, responder.code if responder.headers_sent else exc.status, 0, started)
            if responder.headers_sent:
                return CLOSE
            return self._reject(exc)
        except OSError:
            self._account(environ, responder.code or 499, responder.sent, started)
            return CLOSE  # the client went away or stopped reading (write_timeout)
        except BaseException:  # SystemExit or KeyboardInterrupt from an app too: never kill the thread
            site.logger.exception("error in WSGI app %s %s",
                                  head.method, head.target.decode("latin-1")[:200])
            self._account(environ, responder.code if responder.headers_sent else 500, responder.sent, started)
            if responder.headers_sent:
                return CLOSE
            self.send_quietly(error_response(500, "internal server error", server=site.server_header))
            return LINGER
        else:
            self._account(environ, responder.code, responder.sent, started)
            if responder.overran:
                site.logger.warning("WSGI app sent more than its Content-Length (%s) for %s %s: cut there, "
                                    "connection closed", responder.length, head.method,
                                    head.target.decode("latin-1")[:200])
        finally:
            inflight.request_finished()
            if active is not None:
                active.pop(threading.get_ident(), None)
        if not body.finished:
            try:
                if not body.discard(DISCARD_LIMIT):
                    return LINGER
            except (ProtocolError, OSError):
                return LINGER
        # What the client sent past this request: a pipelined one. If there is any, the
        # client may still be sending, so a close lingers instead of risking a reset.
        unread = body.leftover()
        if not responder.keep_alive:
            return CLOSE if not unread else LINGER
        self.buf = unread
        return None

    def _account(self, environ: dict[str, Any], status: int, length: int, started: float) -> None:
        """Metrics and the access log for one answered request (nothing when both are off)."""
        site = self.site
        if site.metrics is None and site.access_log is None:
            return
        duration = time.perf_counter() - started
        if site.metrics is not None:
            site.metrics.observe(environ["REQUEST_METHOD"], status, duration)
        if site.access_log is not None:
            site.access_log(environ, status, length, duration)

    def _reject(self, exc: ProtocolError) -> int:
        if self.site.metrics is not None:
            self.site.metrics.bad_request(exc.reason)
        self.send_quietly(error_response(exc.status, exc.detail, server=self.site.server_header))
        return LINGER

    def expire(self) -> int:
        """A parked connection's deadline passed: a begun head gets 408 and a lingering
        close (so the 408 is not lost to a reset); anything else just closes."""
        begun = self.buf.strip() or self.spool is not None or self.has_input()
        if self.mode == PARK_HEAD and self.handshaken and begun:
            reason, detail = ("read_timeout", "request body not received in time") if self.body_wait else \
                ("header_timeout", "request header timeout")
            if self.site.metrics is not None:
                self.site.metrics.bad_request(reason)
            self.send_quietly(error_response(408, detail, server=self.site.server_header))
            return LINGER
        return CLOSE

    def has_input(self) -> bool:
        return bool(self.buf.strip()) or super().has_input()

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
        super().close()
