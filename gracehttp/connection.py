"""One client connection: read requests, answer health probes, run the app, keep alive.

Upper layer: imports the parser, writer, WSGI, response and health modules.
A worker thread calls `Connection.serve` when the connection is readable; it
returns what the engine should do next (park it idle or mid-head, linger-close
it, close it). Nothing here blocks waiting for a *next* request: a connection
with nothing to read goes back to the engine, so idle and slow clients never
pin a request thread.

Sockets are in blocking mode with SO_RCVTIMEO/SO_SNDTIMEO set once at accept,
so reads and writes are bounded without Python's poll-before-every-call timeout
path; ``MSG_DONTWAIT`` gives the non-blocking read used to look for more data.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from gracehttp.errors import ProtocolError
from gracehttp.health import HEALTH_PATHS, answer
from gracehttp.http.parser import find_head_end, parse_head
from gracehttp.http.writer import CONTINUE, error_response, simple_response
from gracehttp.response import Responder, run_app
from gracehttp.site import Site, timeval
from gracehttp.state import State
from gracehttp.wsgi import Body, base_environ, build_environ

if TYPE_CHECKING:
    pass

# What `serve` asks the engine to do next.
PARK_IDLE, PARK_HEAD, LINGER, CLOSE = range(4)

RECV_SIZE = 65536
#: An unread request body up to this size is read and dropped to keep the
#: connection; a larger one closes it (reading it could take long).
DISCARD_LIMIT = 65536
#: Request bodies up to this size are received while parked before the app runs, so a
#: slow sender holds no thread; larger ones stream to the app as it reads.
BODY_BUFFER = 65536
_HEALTH = frozenset(p.encode() for p in HEALTH_PATHS)
_SHUTTING_DOWN = frozenset({State.DRAINING, State.STOPPING, State.STOPPED})


class Connection:
    __slots__ = (
        "body_wait",
        "buf",
        "closing",
        "deadline",
        "env",
        "fd",
        "handshaken",
        "head_started",
        "mode",
        "rcv_timeout",
        "registered",
        "requests",
        "site",
        "sock",
        "tls",
    )

    def __init__(self, sock: socket.socket, site: Site, server_addr: tuple[str, str], peer: Any) -> None:
        self.site = site
        self.fd = sock.fileno()
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            remote = (str(peer[0]), str(peer[1]))
        else:
            remote = ("", "")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, site.rcvtimeo)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, site.sndtimeo)
        self.tls = site.tls is not None
        self.handshaken = not self.tls
        if site.tls is not None:
            sock = site.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self.sock = sock
        self.env = base_environ(server_addr[0], server_addr[1], remote[0], remote[1],
                                "https" if self.tls else "http")
        self.buf = b""
        self.body_wait = False
        self.head_started = 0.0
        self.deadline = time.monotonic() + site.read_header_timeout
        self.mode = PARK_HEAD
        self.registered = False
        self.requests = 0
        self.rcv_timeout = site.read_timeout  # the SO_RCVTIMEO now set on the socket
        self.closing = lambda: site.closing

    # -- socket primitives -------------------------------------------------

    def recv_nowait(self) -> bytes | None:
        """Bytes available now, ``b""`` at end of stream, None if nothing has arrived."""
        try:
            if self.tls:
                # A TLS record may arrive in pieces; block (bounded by SO_RCVTIMEO) rather
                # than track partial records here.
                return self.sock.recv(RECV_SIZE)
            return self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except self.site.want_read:
            return None
        except self.site.gone:
            return b""  # a reset (the client aborted, or closed with unread data): it is closed

    def recv_body(self) -> bytes:
        """A blocking read for the request body, bounded by ``read_timeout``."""
        remaining = self.head_started + self.site.read_timeout - time.monotonic()
        if remaining <= 0:
            raise ProtocolError(408, "read_timeout", "request not received in time")
        if remaining < self.rcv_timeout - 1.0:
            # Tighten the per-read timeout only when it matters (a syscall), so the whole
            # request stays within read_timeout; `_exchange` restores it for the next one.
            self.rcv_timeout = remaining
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(remaining))
        try:
            return self.sock.recv(RECV_SIZE)
        except self.site.read_timed_out:
            raise ProtocolError(408, "read_timeout", "request body not received in time") from None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def sendfile(self, file: Any, offset: int, count: int) -> int:
        return self.sock.sendfile(file, offset, count)

    def send_quietly(self, data: bytes) -> None:
        """Best-effort send of an error page to a client that may be gone or not reading."""
        try:
            if self.tls:
                self.sock.sendall(data)
            else:
                self.sock.send(data, socket.MSG_DONTWAIT)
        except OSError:
            pass

    def _handshake(self) -> int | None:
        """One step of the TLS handshake; None once it is done.

        Non-blocking, so a client that connects and sends nothing (or half a
        ClientHello) is parked like a slow header sender, bounded by
        ``read_header_timeout``, instead of holding a request thread.
        """
        sock: Any = self.sock
        sock.setblocking(False)
        try:
            sock.do_handshake()
        except self.site.want_read:
            return PARK_HEAD
        except self.site.want_write:
            sock.setblocking(True)  # a full send buffer mid-handshake: finish it bounded by SO_SNDTIMEO
            try:
                sock.do_handshake()
            except (OSError, ValueError):
                return CLOSE
        except (OSError, ValueError):
            return CLOSE  # not TLS (plain HTTP on this port), or a bad hello: a clean close
        finally:
            sock.setblocking(True)  # request reads block, bounded by SO_RCVTIMEO
        self.handshaken = True
        return None

    # -- the request loop ----------------------------------------------------

    def serve(self) -> int:
        """Serve every complete request available; return what to do with the connection."""
        site = self.site
        if self.mode == LINGER:
            return self._linger_read()
        if not self.handshaken:
            action = self._handshake()
            if action is not None:
                return action
        limits = site.limits
        buf = self.buf
        while True:
            try:
                end = find_head_end(buf, limits) if buf else -1
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
                buf += data
                continue
            try:
                head = parse_head(buf[:end], limits)
            except ProtocolError as exc:
                return self._reject(exc)
            need = head.content_length
            if need and len(buf) - end < need <= BODY_BUFFER and not head.expect_continue and not self.tls:
                # A small body not all here yet: wait for the rest parked, like a slow head,
                # so a slow body sender holds no thread (bounded by read_timeout). The head
                # is parsed again when the rest arrives: only slow clients pay for it.
                data = self.recv_nowait()
                if data is None:
                    self.buf = buf
                    self.body_wait = True
                    return PARK_HEAD
                if not data:  # the client stopped sending mid-body (it may still read)
                    return self._reject(ProtocolError(400, "incomplete_body", "request body incomplete"))
                buf += data
                continue
            self.body_wait = False
            buf = buf[end:]
            self.requests += 1
            if site.health and head.path in _HEALTH and head.method in ("GET", "HEAD"):
                keep = head.keep_alive and site.keep_alive and not site.closing
                status, ctype, body = answer(head.path.decode(), site.lifecycle, site.inflight.requests)
                try:
                    self.send(simple_response(status, body, content_type=ctype, close=not keep,
                                              head_only=head.method == "HEAD", server=site.server_header))
                except OSError:
                    return CLOSE
                if not keep:
                    return LINGER
            else:
                if site.drain_reject and site.lifecycle.state in _SHUTTING_DOWN:
                    self.send_quietly(simple_response(
                        503, b"shutting down\n", close=True, extra=(("Retry-After", "5"),),
                        server=site.server_header))
                    return LINGER
                result = self._exchange(head, buf)
                if result is not None:
                    return result
                buf = self.buf
            # The response promised keep-alive, so even in the drain the client may send
            # again: a pipelined request is answered (with Connection: close), and an idle
            # connection gets the drain's grace (`Engine._sweep`), never a close under it.
            self.head_started = 0.0
            if buf:
                self.head_started = time.monotonic()
                continue
            self.buf = b""
            return PARK_IDLE

    def _exchange(self, head: Any, rest: bytes) -> int | None:
        """Run the app for one request; None to go on with the connection."""
        site = self.site
        keep_alive = head.keep_alive and site.keep_alive and not site.closing
        before_read = (lambda: self.send(CONTINUE)) if head.expect_continue else None
        body = Body(rest, self.recv_body, head, site.limits.max_body_bytes, before_read,
                    site.limits.max_header_bytes)
        environ = build_environ(self.env, head, body)
        if self.rcv_timeout != site.read_timeout:
            self.rcv_timeout = site.read_timeout
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, site.rcvtimeo)
        responder = Responder(self.send, None if self.tls else self.sendfile, head, keep_alive,
                              site.server_header, self.closing)
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
        if not responder.keep_alive:
            return CLOSE if not body.leftover() else LINGER
        self.buf = body.leftover()
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

    def begin_linger(self) -> None:
        """Half-close: send FIN, then read and drop input until the client closes.

        Closing a socket with unread input makes the kernel send RST, which can
        destroy the response the client has not read yet; lingering avoids that.
        """
        self.mode = LINGER
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def _linger_read(self) -> int:
        try:
            while True:
                data = self.sock.recv(RECV_SIZE, 0 if self.tls else socket.MSG_DONTWAIT)
                if not data:
                    return CLOSE
        except self.site.want_read:
            return LINGER
        except OSError:
            return CLOSE

    def expire(self) -> int:
        """A parked connection's deadline passed: a begun head gets 408 and a lingering
        close (so the 408 is not lost to a reset); anything else just closes."""
        if self.mode == PARK_HEAD and self.handshaken and (self.buf.strip() or self.has_input()):
            reason, detail = ("read_timeout", "request body not received in time") if self.body_wait else \
                ("header_timeout", "request header timeout")
            if self.site.metrics is not None:
                self.site.metrics.bad_request(reason)
            self.send_quietly(error_response(408, detail, server=self.site.server_header))
            return LINGER
        return CLOSE

    def has_input(self) -> bool:
        """True if a request has (at least partly) arrived, without consuming it."""
        if self.buf:
            return True
        try:
            if self.tls:
                return bool(self.sock.pending())  # type: ignore[attr-defined]
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

