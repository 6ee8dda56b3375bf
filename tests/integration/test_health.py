"""Every cell of the health table (SPEC section 3), on a real listener."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from gracehttp import Config, GracefulServer, State
from tests.helpers import GatedApp, connect, get, hello_app, read_response, running, wait_until

READY = {
    "/livez": (200, "text/plain", b"ok"),
    "/readyz": (200, "text/plain", b"ok"),
    "/health": (200, "application/json", {"status": "healthy"}),
    "/ready": (200, "application/json", {"ready": True, "in_flight_requests": 0}),
}
DRAINED = {
    "/livez": (200, "text/plain", b"ok"),
    "/readyz": (503, "text/plain", b"drained"),
    "/health": (200, "application/json", {"status": "healthy"}),
    "/ready": (503, "application/json", {"ready": False, "reason": "drained"}),
}
SHUTTING_DOWN = {
    "/livez": (200, "text/plain", b"ok"),
    "/readyz": (503, "text/plain", b"shutting down"),
    "/health": (503, "application/json", {"status": "shutting_down"}),
    "/ready": (503, "application/json", {"ready": False, "reason": "shutting_down"}),
}
STARTING = {
    "/livez": (200, "text/plain", b"ok"),
    "/readyz": (503, "text/plain", b"starting"),
    "/health": (200, "application/json", {"status": "healthy"}),
    "/ready": (503, "application/json", {"ready": False, "reason": "starting"}),
}


def check(port: int, table: dict[str, tuple[int, str, Any]]) -> None:
    for path, (status, ctype, body) in table.items():
        resp = get(port, path)
        assert resp.status == status, path
        assert resp.headers["content-type"].startswith(ctype), path
        got = json.loads(resp.body) if ctype == "application/json" else resp.body
        assert got == body, path
        head = get(port, path, method="HEAD")
        assert head.status == status
        assert head.body == b""
        assert int(head.headers["content-length"]) > 0


def test_ready_and_drained_columns() -> None:
    with running() as server:
        check(server.port, READY)
        server.drain()
        assert not server.is_ready
        check(server.port, DRAINED)
        assert get(server.port, "/").status == 200  # drained still serves
        server.undrain()
        check(server.port, READY)


def test_ready_reports_in_flight_and_probes_are_not_counted() -> None:
    app = GatedApp()

    with running(app) as server:
        t = threading.Thread(target=get, args=(server.port, "/slow"))
        t.start()
        assert app.entered.wait(5)
        resp = get(server.port, "/ready")
        assert json.loads(resp.body) == {"ready": True, "in_flight_requests": 1}
        assert server.in_flight == 1
        app.release.set()
        t.join(5)


def test_shutting_down_column() -> None:
    app = GatedApp()

    # drain_reject keeps the listener open during the drain, so the probes can be asked.
    with running(app, drain_reject=True, drain_timeout=10) as server:
        t = threading.Thread(target=get, args=(server.port, "/slow"))
        t.start()
        assert app.entered.wait(5)
        stopper = threading.Thread(target=server.shutdown)
        stopper.start()
        assert wait_until(lambda: server.state is State.DRAINING)
        check(server.port, SHUTTING_DOWN)
        assert get(server.port, "/other").status == 503  # drain_reject, not the probes
        app.release.set()
        t.join(5)
        stopper.join(10)


def test_starting_column_through_the_wsgi_apps() -> None:
    """Before the server is READY the apps report it, as the endpoints do; whatever the
    path they are called with, each answers its own endpoint."""
    server = GracefulServer(Config(app=None, addr="127.0.0.1:0"))
    for app, path in ((server.health_app, "/health"), (server.readiness_app, "/ready")):
        status, ctype, body = STARTING[path]
        for path_info in ("", "/", path, "/anything"):
            seen: list[Any] = []
            out = b"".join(app({"PATH_INFO": path_info, "REQUEST_METHOD": "GET"},
                               lambda s, h, seen=seen: seen.append((s, h))))
            assert int(seen[0][0][:3]) == status
            assert dict(seen[0][1])["Content-Type"].startswith(ctype)
            assert json.loads(out) == body


def test_health_apps_behind_a_router_that_passes_the_whole_path() -> None:
    """A router that does not move its prefix to SCRIPT_NAME: a path ending in a health
    path gets that one (``/ops/livez`` stays the plain liveness answer, 200 in a drain);
    any other path gets the app's own endpoint."""
    inner = GracefulServer(Config(addr="127.0.0.1:0")).run_in_background()
    try:
        def app(environ: dict[str, Any], start_response: Any) -> Any:
            if environ["PATH_INFO"].startswith("/ops/"):
                return inner.health_app(environ, start_response)
            if environ["PATH_INFO"].startswith("/rd/"):
                return inner.readiness_app(environ, start_response)
            return hello_app(environ, start_response)

        with running(app, health=False) as server:
            assert get(server.port, "/ops/readyz").body == b"ok"
            assert json.loads(get(server.port, "/ops/status").body) == {"status": "healthy"}
            assert json.loads(get(server.port, "/rd/livez").body) == {"ready": True, "in_flight_requests": 0}
            inner.drain()
            assert (get(server.port, "/ops/livez").status, get(server.port, "/ops/livez").body) == (200, b"ok")
            assert get(server.port, "/ops/readyz").status == 503
            assert get(server.port, "/rd/anything").status == 503
    finally:
        inner.close()


def test_health_apps_answer_their_json_where_a_dispatcher_mounts_them() -> None:
    """Mounted at /mine/health and /mine/ready by werkzeug's dispatcher (which moves the
    prefix to SCRIPT_NAME, leaving PATH_INFO empty), they answer there, following the
    other server's lifecycle; HEAD has no body, and other methods get 405."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    inner = GracefulServer(Config(addr="127.0.0.1:0")).run_in_background()
    try:
        app = DispatcherMiddleware(hello_app, {"/mine/health": inner.health_app, "/mine/ready": inner.readiness_app})
        with running(app, health=False) as server:
            health = get(server.port, "/mine/health")
            assert (health.status, json.loads(health.body)) == (200, {"status": "healthy"})
            assert health.headers["content-type"] == "application/json"
            ready = get(server.port, "/mine/ready")
            assert (ready.status, json.loads(ready.body)) == (200, {"ready": True, "in_flight_requests": 0})
            head = get(server.port, "/mine/ready", method="HEAD")
            assert (head.status, head.body) == (200, b"")
            assert get(server.port, "/mine/ready", method="POST", body=b"").status == 405
            assert get(server.port, "/readyz").body == b"hello"  # health=False: the app's own path
            inner.drain()
            drained = get(server.port, "/mine/ready")
            assert (drained.status, json.loads(drained.body)) == (503, {"ready": False, "reason": "drained"})
            assert get(server.port, "/mine/health").status == 200
    finally:
        inner.close()


@pytest.mark.parametrize("path", ["/livez", "/readyz"])
def test_probes_answer_while_every_thread_is_busy(path: str) -> None:
    release = threading.Event()
    count = threading.Semaphore(0)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        count.release()
        release.wait(10)
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    with running(app, threads=2) as server:
        socks = [connect(server.port) for _ in range(2)]
        for s in socks:
            s.sendall(b"GET /busy HTTP/1.1\r\nHost: t\r\n\r\n")
        assert count.acquire(timeout=5)
        assert count.acquire(timeout=5)
        # Both request threads are inside the app: a probe waits for a thread, then is answered.
        result: list[int] = []
        t = threading.Thread(target=lambda: result.append(get(server.port, path).status))
        t.start()
        release.set()
        t.join(5)
        assert result == [200]
        for s in socks:
            assert read_response(s).status == 200
            s.close()


def test_the_startup_log_says_the_health_paths_are_the_servers(caplog: pytest.LogCaptureFixture) -> None:
    """So that an app's own /health is never shadowed without a word, and how to give it back."""
    import logging

    for health in (True, False):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gracehttp"), running(hello_app, health=health) as server:
            said = [r.getMessage() for r in caplog.records if "health endpoints" in r.getMessage()]
            answered = get(server.port, "/health").body
        if health:
            assert said == ["health endpoints /health, /livez, /ready, /readyz on the main listeners are answered "
                            "by the server before the app; health_prefix (--health-prefix /_gracehttp) moves them, "
                            "health=False (--no-health) hands them to the app"]
            assert answered == b'{"status":"healthy"}'
        else:
            assert said == []
            assert answered == b"hello"
