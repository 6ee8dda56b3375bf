"""The admin listener's app: /metrics, POST /drain and /undrain, /debug/*
(docs/architecture.rst, "Admin listener and metrics").

Middle layer: imports `config`, `debug`, `metrics`, `state`, `inflight`. The
health endpoints are answered before this app, by the connection, as on the
main listeners. Nothing here is reachable on the main listeners: this app is
only ever given to the admin listener's engine.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from gracehttp.config import Config
from gracehttp.debug import MAX_HZ, MAX_PROFILE_SECONDS, Profiler, heap_top, process_facts, thread_dump
from gracehttp.inflight import InFlight
from gracehttp.metrics import Metrics
from gracehttp.state import Lifecycle
from gracehttp.watchdog import Running

StartResponse = Callable[..., Any]
DEBUG_PAGES = {
    "/debug/threads": "every thread's name and stack, and the request each request thread serves",
    "/debug/profile?seconds=5&hz=100": "a sampling CPU profile of all threads, as folded stacks",
    "/debug/heap?limit=25": "top allocations by line (starts tracemalloc when first asked)",
    "/debug/vars": "JSON: config (without secrets), state, counters, Python and process facts",
}
#: Config fields shown by /debug/vars only as "set" or null: they may hold secrets or objects.
REDACTED = frozenset({"keyfile", "ssl_context"})


def _respond(start_response: StartResponse, status: str, body: bytes,
             ctype: str = "text/plain; charset=utf-8", extra: tuple[tuple[str, str], ...] = ()) -> list[bytes]:
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))), *extra])
    return [body]


class AdminApp:
    def __init__(self, *, config: Config, lifecycle: Lifecycle, inflight: InFlight,
                 open_connections: Callable[[], int], metrics: Metrics | None,
                 active: Mapping[int, Running], addresses: Callable[[], list[str]]) -> None:
        self.config = config
        self.logger = config.get_logger()
        self.lifecycle = lifecycle
        self.inflight = inflight
        self.open_connections = open_connections
        self.metrics = metrics
        self.active = active
        self.addresses = addresses
        self.profiler = Profiler()
        self.started = time.monotonic()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path in ("/drain", "/undrain"):
            if method != "POST":
                return _respond(start_response, "405 Method Not Allowed", b"use POST\n", extra=(("Allow", "POST"),))
            self.lifecycle.set_drained(path == "/drain")
            self.logger.warning("POST %s from %s: readiness is now %s", path, environ.get("REMOTE_ADDR") or "a local "
                                "socket", "503 (drained)" if path == "/drain" else "200 unless shutting down")
            return _respond(start_response, "200 OK", b"drained\n" if path == "/drain" else b"undrained\n")
        if path == "/metrics" and self.metrics is not None:
            body, ctype = self.metrics.render(environ.get("HTTP_ACCEPT", ""))
            return _respond(start_response, "200 OK", body, ctype)
        if path.startswith("/debug") and self.config.debug:
            return self._debug(path, parse_qs(environ.get("QUERY_STRING", "")), start_response)
        return _respond(start_response, "404 Not Found", b"not found\n")

    def _debug(self, path: str, query: dict[str, list[str]], start_response: StartResponse) -> Iterable[bytes]:
        if path in ("/debug", "/debug/"):
            import html  # here: only this index page needs it (0.4 MiB of every process)

            items = "".join(f'<li><a href="{html.escape(p)}">{html.escape(p)}</a>: {html.escape(what)}</li>'
                            for p, what in DEBUG_PAGES.items())
            page = f"<!doctype html><title>gracehttp debug</title><h1>gracehttp debug</h1><ul>{items}</ul>"
            return _respond(start_response, "200 OK", page.encode(), "text/html; charset=utf-8")
        if path == "/debug/threads":
            return _respond(start_response, "200 OK", thread_dump(self.active).encode())
        if path == "/debug/profile":
            try:
                seconds = float(query.get("seconds", ["5"])[0])
                hz = float(query.get("hz", ["100"])[0])
            except ValueError:
                return _respond(start_response, "400 Bad Request", b"seconds and hz must be numbers\n")
            if not 0 < seconds <= MAX_PROFILE_SECONDS or not 0 < hz <= MAX_HZ:
                msg = f"seconds must be in (0, {MAX_PROFILE_SECONDS:g}], hz in (0, {MAX_HZ}]\n"
                return _respond(start_response, "400 Bad Request", msg.encode())
            folded = self.profiler.run(seconds, hz)
            if folded is None:
                return _respond(start_response, "409 Conflict", b"a profile is already running\n")
            return _respond(start_response, "200 OK", folded.encode())
        if path == "/debug/heap":
            try:
                limit = max(1, min(int(query.get("limit", ["25"])[0]), 1000))
            except ValueError:
                return _respond(start_response, "400 Bad Request", b"limit must be an integer\n")
            return _respond(start_response, "200 OK", heap_top(limit).encode())
        if path == "/debug/vars":
            return _respond(start_response, "200 OK", json.dumps(self.vars(), indent=1).encode(),
                            "application/json")
        return _respond(start_response, "404 Not Found", b"not found\n")

    def vars(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for field in dataclasses.fields(self.config):
            value = getattr(self.config, field.name)
            if field.name in REDACTED:
                value = None if value is None else "set"
            elif field.name == "app":
                value = None if value is None else f"{getattr(value, '__module__', '?')}." \
                                                   f"{getattr(value, '__qualname__', type(value).__name__)}"
            elif field.name == "logger":
                value = None if value is None else value.name
            elif field.name == "listeners":
                value = len(value)
            elif isinstance(value, tuple):
                value = list(value)
            config[field.name] = value
        return {
            "config": config,
            "state": self.lifecycle.state.name,
            "drained": self.lifecycle.drained,
            "ready": self.lifecycle.is_ready,
            "addresses": self.addresses(),
            "counters": {"in_flight": self.inflight.requests, "requests_total": self.inflight.total,
                         "connections_open": self.open_connections()},
            "process": process_facts(self.started),
        }
