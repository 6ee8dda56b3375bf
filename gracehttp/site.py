"""`Site`: what every connection of one engine shares (settings, app, lifecycle,
counters, the exception types that mean "nothing yet" or "gone" for its sockets).

Upper layer, below `connection`: imports the parser's `Limits`, accesslog, metrics,
inflight and state. Built once per engine by `gracehttp.sites`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gracehttp.accesslog import AccessLog
from gracehttp.http.parser import Limits
from gracehttp.inflight import InFlight
from gracehttp.metrics import Metrics
from gracehttp.proxy import TrustedProxies
from gracehttp.state import Lifecycle

if TYPE_CHECKING:
    import ssl


def timeval(seconds: float) -> bytes:
    sec = int(seconds)
    return struct.pack("ll", sec, int((seconds - sec) * 1e6))


class Site:
    """What every connection of one server shares: settings, app, lifecycle, counters."""

    def __init__(self, *, app: Callable[..., Iterable[bytes]], limits: Limits, lifecycle: Lifecycle,
                 inflight: InFlight, logger: logging.Logger, server_header: str | None,
                 keep_alive: bool, health: bool, drain_reject: bool, read_header_timeout: float,
                 read_timeout: float, write_timeout: float, idle_timeout: float,
                 tls: ssl.SSLContext | None, metrics: Metrics | None = None,
                 access_log: AccessLog | None = None, track_requests: bool = False,
                 max_spool_bytes: int | None = None, multiprocess: bool = False,
                 proxies: TrustedProxies | None = None, root_path: str = "", forwarded_host: bool = False) -> None:
        self.app = app
        #: Peers whose X-Forwarded-* headers count (None: proxy_headers off).
        self.proxies = proxies
        #: X-Forwarded-Host and -Port count too.
        self.forwarded_host = forwarded_host
        #: SCRIPT_NAME of every request, and the prefix taken off PATH_INFO.
        self.root_path = root_path
        #: Other processes serve the same app at once (a worker of ``workers > 1``).
        self.multiprocess = multiprocess
        self.metrics = metrics
        self.access_log = access_log
        #: With debug on: thread ident -> (method, target, start) of the requests being served.
        self.active: dict[int, tuple[str, str, float]] | None = {} if track_requests else None
        self.limits = limits
        #: Body bytes collected parked before the app runs (None: the whole body).
        self.max_spool_bytes = max_spool_bytes
        self.lifecycle = lifecycle
        self.inflight = inflight
        self.logger = logger
        self.server_header = server_header
        self.keep_alive = keep_alive
        self.health = health
        self.drain_reject = drain_reject
        self.read_header_timeout = read_header_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.idle_timeout = idle_timeout
        self.tls = tls
        #: Called when a connection admitted past max_connections sends a request to
        #: serve (the engine counts it as an ordinary connection from then on).
        self.promote: Callable[[object], None] = lambda conn: None
        #: Set when the drain begins: responses carry Connection: close from then on.
        self.closing = False
        #: "Nothing to read yet": a TLS socket says it with SSLWantReadError. ssl is
        #: imported only when TLS is on, to keep it out of plain servers' memory.
        self.want_read: tuple[type[BaseException], ...] = (BlockingIOError, InterruptedError)
        #: "The client is gone": a reset, or a TLS stream cut without close_notify.
        self.gone: tuple[type[BaseException], ...] = (ConnectionError,)
        #: A handshake step that found the send buffer full.
        self.want_write: tuple[type[BaseException], ...] = ()
        if tls is not None:
            import ssl

            self.want_read += (ssl.SSLWantReadError,)
            # Any other TLS error on a read (a bad record MAC, a failed decryption) ends
            # the connection too; it is the client's doing, not worth a traceback.
            self.gone += (ssl.SSLError,)
            self.want_write = (ssl.SSLWantWriteError,)
        #: "The socket takes nothing now" for a non-blocking write (a TLS write may
        #: need to read first: a key update).
        self.want_write_any: tuple[type[BaseException], ...] = (*self.want_read, *self.want_write)
        #: What a blocking read raises when SO_RCVTIMEO expires.
        self.read_timed_out: tuple[type[BaseException], ...] = (*self.want_read, TimeoutError)
        self.rcvtimeo = timeval(read_timeout)
        self.sndtimeo = timeval(write_timeout)
