"""The health endpoints (docs/architecture.rst), as precomputed answers and as WSGI apps.

Middle layer: imports `state`, `http.parser` and `http.writer`. The connection
answers these paths itself (`is_probe`, `probe_response`), before the app, without
counting them as in-flight, so a probe is answered even when every request thread
is busy in the app.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from gracehttp.http.parser import RequestHead
from gracehttp.http.writer import REASONS, simple_response
from gracehttp.state import SHUTTING_DOWN, Lifecycle, State

HEALTH_PATHS = frozenset({"/livez", "/readyz", "/health", "/ready"})


def probe_paths(prefix: str = "") -> dict[bytes, str]:
    """The request paths answered as probes (as the parser gives them), each to the
    health path it is: ``/_gracehttp/livez`` is ``/livez`` under a `prefix`."""
    return {(prefix + p).encode(): p for p in HEALTH_PATHS}


def reserved_note(prefix: str) -> str:
    """The startup log's word on the probe paths: the server answers them before the
    app, so an app's own ``/health`` would never be reached; say how to give it back."""
    paths = ", ".join(prefix + p for p in sorted(HEALTH_PATHS))
    how = ("health_prefix (--health-prefix /_gracehttp) moves them" if not prefix
           else "health_prefix moves them")
    return (f"health endpoints {paths} on the main listeners are answered by the server before the app; "
            f"{how}, health=False (--no-health) hands them to the app")

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


def _phase(lifecycle: Lifecycle) -> str:
    state = lifecycle.state
    if state in SHUTTING_DOWN:
        return "shutting_down"
    if state in (State.NEW, State.STARTING):
        return "starting"
    return "drained" if lifecycle.drained else "ready"


def answer(path: str, lifecycle: Lifecycle, in_flight: int) -> tuple[int, str, bytes]:
    """(status, content type, body) for one health path, per the health table of docs/lifecycle.rst."""
    phase = _phase(lifecycle)
    if path == "/livez":
        if lifecycle.stuck:
            return 503, _TEXT, b"stuck: every request thread is past request_timeout"
        return 200, _TEXT, b"ok"
    if path == "/readyz":
        if phase == "ready":
            return 200, _TEXT, b"ok"
        return 503, _TEXT, phase.replace("_", " ").encode()
    if path == "/health":
        if phase == "shutting_down":
            return 503, _JSON, b'{"status":"shutting_down"}'
        return 200, _JSON, b'{"status":"healthy"}'
    if phase == "ready":
        body = json.dumps({"ready": True, "in_flight_requests": in_flight}, separators=(",", ":"))
        return 200, _JSON, body.encode()
    return 503, _JSON, json.dumps({"ready": False, "reason": phase}, separators=(",", ":")).encode()


def is_probe(head: RequestHead, paths: dict[bytes, str]) -> bool:
    """A request the server answers itself: GET or HEAD of a probe path (`probe_paths`),
    without a body."""
    return (head.path in paths and head.method in ("GET", "HEAD")
            and not head.content_length and not head.chunked)


def probe_response(head: RequestHead, path: str, lifecycle: Lifecycle, in_flight: int, keep_alive: bool,
                   server: str | None) -> tuple[int, int, bytes]:
    """The whole HTTP response to a probe (`is_probe`) of the health path `path`, with its
    status and the bytes of body sent (for the access log)."""
    status, ctype, body = answer(path, lifecycle, in_flight)
    head_only = head.method == "HEAD"
    return status, 0 if head_only else len(body), simple_response(
        status, body, content_type=ctype, close=not keep_alive, head_only=head_only, server=server)


def health_wsgi_app(lifecycle: Lifecycle, in_flight: Callable[[], int], endpoint: str,
                    paths: frozenset[str] = frozenset()) -> Callable[..., Iterable[bytes]]:
    """One health endpoint (`endpoint`, a health path) as a WSGI app.

    It answers wherever it is mounted: mounted at ``/mine/health`` by a dispatcher
    (which moves the prefix to ``SCRIPT_NAME``, leaving ``PATH_INFO`` empty), it
    answers there as the endpoint would at its own path. A router that passes the
    whole path instead gets the health path it ends in, when that is one of `paths`
    (``/ops/livez`` is ``/livez``, which stays 200 during a drain).
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed",
                           [("Allow", "GET, HEAD"), ("Content-Type", _TEXT), ("Content-Length", "18")])
            return [b"method not allowed"]
        last = "/" + environ.get("PATH_INFO", "").rstrip("/").rsplit("/", 1)[-1]
        status, ctype, body = answer(last if last in paths else endpoint, lifecycle, in_flight())
        start_response(f"{status} {REASONS[status]}", [("Content-Type", ctype),
                                                       ("Content-Length", str(len(body)))])
        return [body]

    return app
