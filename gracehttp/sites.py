"""The two engines a server runs, assembled from its `Config`: the main one (the app,
health endpoints, limits, timeouts, TLS, metrics, access log) and the admin one.

Upper layer: imports `connection` and `engine`, and the middle layer. Kept apart
from `server` so that module is only the lifecycle: what to run, not how to wire it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gracehttp.accesslog import AccessLog
from gracehttp.addresses import describe_socket, is_private
from gracehttp.admin import AdminApp
from gracehttp.balance import Balance
from gracehttp.config import Config
from gracehttp.debug import MAX_PROFILE_SECONDS
from gracehttp.engine import Engine
from gracehttp.health import reserved_note
from gracehttp.http.parser import Limits
from gracehttp.inflight import InFlight
from gracehttp.listeners import BoundListener
from gracehttp.metrics import Metrics
from gracehttp.proxy import TrustedProxies
from gracehttp.site import Site
from gracehttp.state import Lifecycle
from gracehttp.watchdog import Watchdog

if TYPE_CHECKING:
    import ssl  # imported at run time only with TLS (`config`): 4-5 MiB of every process

#: Request threads of the admin listener: its own budget, apart from the main pool.
ADMIN_THREADS = 4
#: Connections the admin listener holds at most.
ADMIN_CONNECTIONS = 64


def main_engine(cfg: Config, app: Callable[..., Iterable[bytes]], lifecycle: Lifecycle, inflight: InFlight,
                logger: logging.Logger, tls: ssl.SSLContext | None, metrics: Metrics | None,
                sockets: list[socket.socket], multiprocess: bool = False, balance: Balance | None = None) -> Engine:
    """The server's own engine; `multiprocess` and `balance` in a worker."""
    site = Site(
        app=app,
        limits=Limits(cfg.max_request_line, cfg.max_header_bytes, cfg.max_header_count, cfg.max_body_bytes),
        lifecycle=lifecycle, inflight=inflight, logger=logger,
        server_header=cfg.server_header, keep_alive=cfg.keep_alive, health=cfg.health,
        drain_reject=cfg.drain_reject, read_header_timeout=cfg.read_header_timeout,
        read_timeout=cfg.read_timeout, write_timeout=cfg.write_timeout,
        idle_timeout=cfg.idle_timeout, tls=tls, metrics=metrics,
        access_log=AccessLog(cfg.access_format, destination=cfg.access_logfile) if cfg.access_format else None,
        track_requests=cfg.debug or cfg.request_timeout is not None,
        max_spool_bytes=cfg.max_spool_bytes, multiprocess=multiprocess,
        proxies=TrustedProxies(cfg.forwarded_allow_ips) if cfg.proxy_headers else None, root_path=cfg.root_path,
        forwarded_host=cfg.forwarded_host, health_prefix=cfg.health_prefix, request_id=cfg.request_id,
        log_probes=cfg.access_log_probes,
    )
    return Engine(site, sockets, cfg.threads, cfg.max_connections, logger, balance=balance)


def admin_engine(cfg: Config, main: Engine, inflight: InFlight, metrics: Metrics | None,
                 addresses: Callable[[], list[str]], sockets: list[socket.socket]) -> Engine:
    """The admin listener: its own engine and threads, so a saturated main pool never
    keeps /metrics, /readyz or /debug/threads from answering."""
    lifecycle, logger = main.site.lifecycle, main.logger
    app: Any = AdminApp(config=cfg, lifecycle=lifecycle, inflight=inflight,
                        open_connections=lambda: len(main.open), metrics=metrics,
                        active=main.site.active if main.site.active is not None else {}, addresses=addresses)
    site = Site(
        app=app, limits=Limits(), lifecycle=lifecycle, inflight=InFlight(), logger=logger,
        server_header=cfg.server_header, keep_alive=True, health=True, drain_reject=False,
        read_header_timeout=cfg.read_header_timeout, read_timeout=cfg.read_timeout,
        write_timeout=max(cfg.write_timeout, MAX_PROFILE_SECONDS + 5), idle_timeout=cfg.idle_timeout,
        tls=None, track_requests=False, max_spool_bytes=cfg.max_spool_bytes,
    )
    return Engine(site, sockets, ADMIN_THREADS, ADMIN_CONNECTIONS, logger, name="gracehttp-admin")


def request_watchdog(cfg: Config, engine: Engine, metrics: Metrics | None,
                     on_replace: Callable[[], None] | None) -> Watchdog | None:
    """The `request_timeout` watchdog of the main engine: with `on_replace` (a worker) it
    asks for its worker's replacement and, while every request thread is stuck, holds
    the listeners; without (one process) it fails /livez while every thread is stuck."""
    site = engine.site
    if cfg.request_timeout is None or site.active is None:
        return None

    def wedged(stuck: bool) -> str:
        if on_replace is not None:  # other workers serve: leave new clients to them
            if stuck:
                # Its idle keep-alive clients too: closed cleanly, they reconnect to one that serves.
                engine.hold(True)
                engine.close_idle()
                return ": this worker takes no new connections and closes its idle ones"
            engine.hold(False)  # nothing once the drain has stopped accepting (replaced meanwhile)
            if site.lifecycle.is_shutting_down:  # checked after: the drain sets closing after this state
                return ": this worker is draining and takes no new connections"
            site.closing = False  # close_idle's Connection: close ends with the hold
            return ": this worker takes connections again"
        site.lifecycle.stuck = stuck
        return ": /livez now answers 503" if stuck else ": /livez answers 200 again"

    watchdog = Watchdog(site.active, cfg.request_timeout, site.logger, cfg.threads,
                        on_over=metrics.over_timeout if metrics is not None else None, on_replace=on_replace,
                        on_wedged=wedged)
    engine.pool.on_capped = watchdog.resize
    return watchdog


def startup_notes(cfg: Config, admin: list[BoundListener], is_worker: bool) -> list[tuple[int, str]]:
    """(level, text) of what the startup log says besides the addresses: settings whose
    effect a user could miss."""
    notes = []
    exposed = [describe_socket(lst.sock) for lst in admin if not is_private(lst.sock)]
    if exposed:  # it is meant to be private: /drain stops traffic, /debug shows the code
        can = ("drain this server and read its stacks, heap and config" if cfg.debug
               else "drain this server and read its metrics")
        notes.append((logging.WARNING, f"the admin listener {', '.join(exposed)} is not on loopback: anyone who "
                      f"reaches it can {can}; bind it to 127.0.0.1 or firewall it"))
    if cfg.health:  # so that an app's own /health is never shadowed without a word
        notes.append((logging.INFO, reserved_note(cfg.health_prefix)))
    if cfg.max_requests is not None and not is_worker:
        notes.append((logging.WARNING, "max_requests applies to workers (workers > 1): ignored"))
    return notes


def pool_state(engine: Engine | None) -> tuple[int, int, int]:
    """(busy request threads, request threads, complete requests queued for one), for the metrics."""
    if engine is None:
        return 0, 0, 0
    return min(engine.site.inflight.busy, engine.pool.limit), engine.pool.limit, len(engine.parking.ready)
