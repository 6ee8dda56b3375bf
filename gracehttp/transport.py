"""One connection's socket I/O, plain or TLS, each wait bounded by a deadline.

Upper layer, below `connection` (which has one): imports `site`, `errors` and `closer`.

Plain sockets are in blocking mode with SO_RCVTIMEO/SO_SNDTIMEO set once at
accept, so the waits a streamed body or response needs are bounded without
Python's poll-before-every-call timeout path; ``MSG_DONTWAIT`` gives the
non-blocking reads and writes used everywhere else.

TLS sockets stay non-blocking from accept on. A TLS record may arrive in pieces,
and a blocking read would wait inside OpenSSL for the rest of it: a client
dribbling a record a byte at a time would hold a request thread. Non-blocking,
"nothing yet" is `SSLWantReadError` and the connection is parked like a slow
plain one; the reads and writes that must wait (a body the app streams, a
streamed response) wait in ``poll`` with their deadline.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

from gracehttp.closer import Closer
from gracehttp.errors import ProtocolError
from gracehttp.site import Site, timeval

RECV_SIZE = 65536
#: Unsent bytes a socket queues while it sends a file (TCP_NOTSENT_LOWAT); see `pace`.
FILE_NOTSENT = 262144
_NOTSENT: int | None = getattr(socket, "TCP_NOTSENT_LOWAT", None)
#: Bytes a lingering connection drops in one turn before it is parked again.
LINGER_READ = 16 * RECV_SIZE


@functools.cache
def _system_notsent() -> int:
    """The system's TCP_NOTSENT_LOWAT for sockets that set none (unbounded by default).
    Read once per process, not per file: a change to the sysctl needs a restart."""
    try:
        with open("/proc/sys/net/ipv4/tcp_notsent_lowat") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 2**32 - 1


class Transport:
    __slots__ = ("fd", "handshaken", "held", "rcv_timeout", "site", "sock", "tls")

    def __init__(self, sock: socket.SocketType, site: Site, tuned: bool = False) -> None:
        """`tuned`: the socket has TCP_NODELAY and the site's timeouts already (set on
        the listening socket, which accepted sockets inherit)."""
        self.site = site
        self.fd = sock.fileno()
        if not tuned:
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, site.rcvtimeo)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, site.sndtimeo)
        self.tls = site.tls is not None
        self.handshaken = not self.tls
        if site.tls is not None:
            # The C socket type wraps as `socket.socket` does (ssl uses only its C methods).
            sock = site.tls.wrap_socket(sock, server_side=True,  # type: ignore[arg-type]
                                        do_handshake_on_connect=False)
            sock.setblocking(False)
        self.sock = sock
        self.rcv_timeout = site.read_timeout  # the SO_RCVTIMEO now set on the socket
        #: The closer that holds this socket's FIN (`send_fin`), until `close` lets go of it.
        self.held: Closer | None = None

    # -- reading -------------------------------------------------------------------

    def recv_nowait(self) -> bytes | None:
        """Bytes available now, ``b""`` at end of stream, None if nothing has arrived."""
        try:
            if self.tls:
                return self.sock.recv(RECV_SIZE)
            return self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except self.site.want_read:
            return None
        except self.site.gone:
            return b""  # a reset (the client aborted, or closed with unread data): it is closed

    def recv_until(self, deadline: float) -> bytes:
        """A waiting read for a body the app streams, bounded by `deadline` (408 past it)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolError(408, "read_timeout", "request not received in time")
        if self.tls:
            try:
                data: bytes = self._tls_call(self.sock.recv, RECV_SIZE, deadline=deadline)
            except TimeoutError:
                raise ProtocolError(408, "read_timeout", "request body not received in time") from None
            return data
        if remaining < self.rcv_timeout - 1.0:
            # Tighten the per-read timeout only when it matters (a syscall), so the whole
            # request stays within its deadline; `reset_read_timeout` restores it.
            self.rcv_timeout = remaining
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(remaining))
        try:
            return self.sock.recv(RECV_SIZE)
        except self.site.read_timed_out:
            raise ProtocolError(408, "read_timeout", "request body not received in time") from None

    def reset_read_timeout(self) -> None:
        """Restore the site's read timeout after `recv_until` tightened it. The caller checks
        ``rcv_timeout`` first: once per request, and nearly always nothing to do."""
        self.rcv_timeout = self.site.read_timeout
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self.site.rcvtimeo)

    def has_input(self) -> bool:
        """True if a request has (at least partly) arrived, without consuming it."""
        try:
            if self.tls and self.sock.pending():  # type: ignore[attr-defined]
                return True
            # For TLS, the raw bytes under the TLS layer: any means the client is sending.
            return bool(socket.socket.recv(self.sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False

    # -- writing -------------------------------------------------------------------

    def send(self, data: bytes, last: bool = False) -> None:
        """A waiting write (a streamed response): each wait bounded by ``write_timeout``.
        `last`: the last bytes of a response the connection closes after, sent with the
        FIN in one segment (`gracehttp.outlet.SendFinal` says why)."""
        if not self.tls:
            if not last:
                self.sock.sendall(data)
                return
            self.sock.sendall(data, socket.MSG_MORE)
            self.send_fin()  # all sent: they leave with the FIN
            return
        view = memoryview(data)
        while view:
            # write_timeout bounds each wait for the client to make room, as SO_SNDTIMEO does.
            sent: int = self._tls_call(self.sock.send, view, deadline=time.monotonic() + self.site.write_timeout)
            view = view[sent:]

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Send what the socket takes now; the count (0 when it takes nothing).
        Raises OSError when the client is gone."""
        try:
            if self.tls:
                return int(self.sock.send(data))
            return self.sock.send(data, socket.MSG_DONTWAIT)
        except self.site.want_write_any:
            return 0

    @contextlib.contextmanager
    def nonblocking(self) -> Iterator[None]:
        """Plain sockets only: non-blocking for the block, for `sendfile_nowait`."""
        os.set_blocking(self.fd, False)
        try:
            yield
        finally:
            os.set_blocking(self.fd, True)

    def pace(self) -> int | None:
        """Hold at most `FILE_NOTSENT` unsent bytes in the socket while a file goes out;
        the socket's own setting to put back with `unpace` after it, or None when it
        was left alone (not TCP, or already as tight: the listener's or the system's).

        Why: ``sendfile`` is cheap enough that the server gets ahead of its client and
        fills the socket's send buffer (megabytes) with data the window does not admit
        yet. The kernel then transmits that backlog as the client's acknowledgements
        come in, on the CPU of whoever processes them: on one host, the client's (a
        proxy, a sidecar, a load generator), which spent twice the CPU per MiB
        received, halving the rate. Holding the rest back keeps that work in the
        server's own ``sendfile`` calls and bounds what a slow client pins in the
        kernel; the socket reports writable again when half of it has gone. The bound
        is not smaller because each refill needs a turn of a request thread, which may
        wait for the GIL while the app runs: what is queued must cover that wait. Not
        for bytes in memory: their ``send`` copies, which keeps the server behind its
        client anyway, and more, smaller sends cost more Python."""
        if _NOTSENT is None or self.sock.family == socket.AF_UNIX:
            return None
        try:
            own = self.sock.getsockopt(socket.IPPROTO_TCP, _NOTSENT)
            if 0 < own <= FILE_NOTSENT or (own == 0 and _system_notsent() <= FILE_NOTSENT):
                return None
            self.sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT, FILE_NOTSENT)
        except OSError:  # a TCP socket without the option (MPTCP, a sandboxed kernel)
            return None
        return own

    def unpace(self, own: int) -> None:
        """Put back the setting `pace` replaced (0: the system's)."""
        assert _NOTSENT is not None
        with contextlib.suppress(OSError):  # a closed socket needs none
            self.sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT, own)

    def sendfile_nowait(self, fd: int, offset: int, count: int) -> int | None:
        """Send up to `count` bytes of file `fd` from `offset` without waiting (plain
        sockets, inside `nonblocking`: sendfile has no per-call "don't wait" flag); the
        count sent, 0 at the file's end, None when the socket takes nothing now.
        Raises OSError when the client is gone."""
        try:
            return os.sendfile(self.fd, fd, offset, count)
        except (BlockingIOError, InterruptedError):
            return None

    def send_quietly(self, data: bytes) -> None:
        """Best-effort send of an error page to a client that may be gone or not reading."""
        with contextlib.suppress(OSError):
            self.send_nowait(data)

    def _tls_call(self, op: Any, arg: Any, deadline: float) -> Any:
        """``op(arg)`` on the non-blocking TLS socket, waiting in poll while OpenSSL wants
        to read or write (a renegotiation or key update may want either); TimeoutError
        at `deadline`."""
        while True:
            try:
                return op(arg)
            except self.site.want_read:
                events = select.POLLIN
            except self.site.want_write:
                events = select.POLLOUT
            remaining = deadline - time.monotonic()
            poller = select.poll()
            poller.register(self.fd, events)
            if remaining <= 0 or not poller.poll(remaining * 1000):
                raise TimeoutError("TLS peer too slow")

    # -- the TLS handshake ---------------------------------------------------------------

    def handshake(self) -> bool | None:
        """One step of the TLS handshake: True once done, None while it waits for the
        client (the connection is parked, bounded by ``read_header_timeout``, instead
        of holding a request thread), False if it failed (close)."""
        try:
            self.sock.do_handshake()  # type: ignore[attr-defined]
        except self.site.want_read:
            return None
        except self.site.want_write:
            try:  # a full send buffer mid-handshake: finish it bounded by write_timeout
                self._tls_call(lambda _: self.sock.do_handshake(), None,  # type: ignore[attr-defined]
                               deadline=time.monotonic() + self.site.write_timeout)
            except (OSError, ValueError):
                return False
        except (OSError, ValueError):
            return False  # not TLS (plain HTTP on this port), or a bad hello: a clean close
        self.handshaken = True
        return True

    # -- closing ---------------------------------------------------------------------------

    def shutdown_write(self) -> None:
        """Half-close: send FIN, keep reading. Closing a socket with unread input makes
        the kernel send RST, which can destroy the response the client has not read
        yet; a lingering close avoids that."""
        try:  # noqa: SIM105 (contextlib.suppress is three Python calls, once per closing response)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def send_fin(self) -> None:
        """The last answer is all in the socket, sent with MSG_MORE: the FIN that pushes it
        goes now, or, on a leader, with the others it holds (`gracehttp.closer`)."""
        closer = self.site.closer
        if closer is not None and closer.hold(self.sock):
            self.held = closer
        else:
            self.shutdown_write()

    def drop_input(self) -> bool:
        """Read and drop what a lingering client sent; True once it closed. At most
        `LINGER_READ` bytes a turn: a client sending flat out must not keep a thread
        here past the linger's deadline (checked between turns)."""
        try:
            for _ in range(LINGER_READ // RECV_SIZE):
                if not self.sock.recv(RECV_SIZE, 0 if self.tls else socket.MSG_DONTWAIT):
                    return True
        except self.site.want_read:
            return False
        except OSError:
            return True
        return False

    def close(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            if held.release(self.sock):
                return  # closed after its FIN, with the others held
        try:  # noqa: SIM105 (as in `shutdown_write`: once per connection)
            self.sock.close()
        except OSError:
            pass
