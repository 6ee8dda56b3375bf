"""`Site`: what every connection of one engine shares (settings, app, lifecycle,
counters, the exception types that mean "nothing yet" or "gone" for its sockets).

Upper layer, below `connection`: imports the parser, accesslog, health, metrics,
inflight and state. Built once per engine by `gracehttp.sites`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gracehttp.accesslog import AccessLog, probe_environ
from gracehttp.closer import Closer
from gracehttp.health import probe_paths, probe_response
from gracehttp.http.parser import Limits, RequestHead
from gracehttp.inflight import InFlight
from gracehttp.metrics import Metrics
from gracehttp.proxy import TrustedProxies
from gracehttp.state import Lifecycle
from gracehttp.watchdog import Running

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
                 proxies: TrustedProxies | None = None, root_path: str = "", forwarded_host: bool = False,
                 health_prefix: str = "", request_id: bool = False, log_probes: bool = False) -> None:
        self.app = app
        #: Request paths answered as health probes, each to its health path.
        self.probe_paths = probe_paths(health_prefix)
        #: Give each request an X-Request-ID (`gracehttp.requestid`).
        self.request_id = request_id
        #: The access log also writes the probes answered before the app.
        self.log_probes = log_probes
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
        #: With debug or request_timeout on: thread ident -> the request it serves.
        self.active: dict[int, Running] | None = {} if track_requests else None
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
        #: Where a leader's closing answers wait for their FINs (`gracehttp.closer`); set
        #: by the engine.
        self.closer: Closer | None = None
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

    def answer_probe(self, head: RequestHead, keep_alive: bool, peer: tuple[Any, ...] | None) -> bytes:
        """The whole response to a health probe (`health.is_probe`), logged when asked:
        probes come every few seconds from every checker, so by default they are not."""
        status, sent, data = probe_response(head, self.probe_paths[head.path], self.lifecycle,
                                            self.inflight.requests, keep_alive, self.server_header)
        if self.log_probes and self.access_log is not None:
            env = probe_environ(head.method, head.target, head.version, str(peer[0]) if peer else "", head.headers)
            self.access_log(env, status, sent, 0.0)
        return data
