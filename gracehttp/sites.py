"""The two engines a server runs, assembled from its `Config`: the main one (the app,
health endpoints, limits, timeouts, TLS, metrics, access log) and the admin one.

Upper layer: imports `connection` and `engine`, and the middle layer. Kept apart
from `server` so that module is only the lifecycle: what to run, not how to wire it.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from gracehttp.accesslog import AccessLog
from gracehttp.admin import AdminApp
from gracehttp.config import Config
from gracehttp.debug import MAX_PROFILE_SECONDS
from gracehttp.engine import Engine
from gracehttp.http.parser import Limits
from gracehttp.inflight import InFlight
from gracehttp.metrics import Metrics
from gracehttp.proxy import TrustedProxies
from gracehttp.site import Site
from gracehttp.state import Lifecycle

#: Request threads of the admin listener: its own budget, apart from the main pool.
ADMIN_THREADS = 4
#: Connections the admin listener holds at most.
ADMIN_CONNECTIONS = 64


def main_engine(cfg: Config, app: Callable[..., Iterable[bytes]], lifecycle: Lifecycle, inflight: InFlight,
                logger: logging.Logger, tls: ssl.SSLContext | None, metrics: Metrics | None,
                sockets: list[socket.socket], multiprocess: bool = False) -> Engine:
    site = Site(
        app=app,
        limits=Limits(cfg.max_request_line, cfg.max_header_bytes, cfg.max_header_count, cfg.max_body_bytes),
        lifecycle=lifecycle, inflight=inflight, logger=logger,
        server_header=cfg.server_header, keep_alive=cfg.keep_alive, health=cfg.health,
        drain_reject=cfg.drain_reject, read_header_timeout=cfg.read_header_timeout,
        read_timeout=cfg.read_timeout, write_timeout=cfg.write_timeout,
        idle_timeout=cfg.idle_timeout, tls=tls, metrics=metrics,
        access_log=AccessLog(cfg.access_log) if cfg.access_log else None, track_requests=cfg.debug,
        max_spool_bytes=cfg.max_spool_bytes, multiprocess=multiprocess,
        proxies=TrustedProxies(cfg.forwarded_allow_ips) if cfg.proxy_headers else None, root_path=cfg.root_path,
        forwarded_host=cfg.forwarded_host,
    )
    return Engine(site, sockets, cfg.threads, cfg.max_connections, logger)


def admin_engine(cfg: Config, main: Engine, inflight: InFlight, metrics: Metrics | None,
                 addresses: Callable[[], list[str]], sockets: list[socket.socket]) -> Engine:
    """The admin listener: its own engine and threads, so a saturated main pool never
    keeps /metrics, /readyz or /debug/threads from answering."""
    lifecycle, logger = main.site.lifecycle, main.logger
    app: Any = AdminApp(config=cfg, lifecycle=lifecycle, inflight=inflight,
                        open_connections=lambda: main.open_count, metrics=metrics,
                        active=main.site.active if main.site.active is not None else {}, addresses=addresses)
    site = Site(
        app=app, limits=Limits(), lifecycle=lifecycle, inflight=InFlight(), logger=logger,
        server_header=cfg.server_header, keep_alive=True, health=True, drain_reject=False,
        read_header_timeout=cfg.read_header_timeout, read_timeout=cfg.read_timeout,
        write_timeout=max(cfg.write_timeout, MAX_PROFILE_SECONDS + 5), idle_timeout=cfg.idle_timeout,
        tls=None, track_requests=False, max_spool_bytes=cfg.max_spool_bytes,
    )
    return Engine(site, sockets, ADMIN_THREADS, ADMIN_CONNECTIONS, logger, name="gracehttp-admin")
