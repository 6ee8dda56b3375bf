"""Behind a reverse proxy, over real connections: a trusted peer's X-Forwarded-* headers
set the client address, scheme and host the app sees (and the access log writes); an
untrusted peer's stay plain headers; root_path mounts the app under a prefix. The
"client" connects from 127.0.0.2, the "proxy" from 127.0.0.1 (both loopback)."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest

from tests.helpers import UnixHTTPConnection, read_response, running

FORWARDED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "example.com",
             "X-Forwarded-Port": "443"}


def seen_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    from werkzeug.wrappers import Request

    keys = ("REMOTE_ADDR", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME", "PATH_INFO",
            "HTTP_X_FORWARDED_FOR")
    seen = {k: environ.get(k) for k in keys}
    seen["url"] = Request(environ).url  # what a framework builds its links from
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def fetch(port: int, source: str, path: str = "/p", headers: dict[str, str] | None = None) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
        lines = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: backend:8080\r\n{lines}Connection: close\r\n\r\n".encode())
        return json.loads(read_response(sock).body)  # type: ignore[no-any-return]


def test_a_trusted_proxys_headers_set_client_and_scheme_and_with_forwarded_host_the_host() -> None:
    with running(seen_app) as server:  # forwarded_allow_ips: loopback 127.0.0.1 and ::1
        port = server.port
        seen = fetch(port, "127.0.0.1", headers=FORWARDED)
    assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"]) == ("203.0.113.9", "https")
    assert (seen["HTTP_HOST"], seen["SERVER_PORT"]) == ("backend:8080", str(port))  # off by default
    with running(seen_app, forwarded_host=True) as server:
        seen = fetch(server.port, "127.0.0.1", headers=FORWARDED)
    assert (seen["wsgi.url_scheme"], seen["HTTP_HOST"], seen["SERVER_PORT"]) == ("https", "example.com:443", "443")
    assert seen["url"] == "https://example.com/p"


def test_an_untrusted_peers_headers_change_nothing() -> None:
    with running(seen_app) as server:
        seen = fetch(server.port, "127.0.0.2", headers=FORWARDED)
    assert seen["REMOTE_ADDR"] == "127.0.0.2"
    assert (seen["wsgi.url_scheme"], seen["HTTP_HOST"]) == ("http", "backend:8080")
    assert seen["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"  # still there, as a plain header
    assert seen["url"] == "http://backend:8080/p"


def test_trust_by_network_or_any_and_proxy_headers_off() -> None:
    with running(seen_app, forwarded_allow_ips=("127.0.0.0/30",)) as server:
        assert fetch(server.port, "127.0.0.2", headers=FORWARDED)["REMOTE_ADDR"] == "203.0.113.9"
    with running(seen_app, forwarded_allow_ips=("*",)) as server:
        assert fetch(server.port, "127.0.0.2", headers=FORWARDED)["REMOTE_ADDR"] == "203.0.113.9"
    with running(seen_app, proxy_headers=False) as server:
        assert fetch(server.port, "127.0.0.1", headers=FORWARDED)["REMOTE_ADDR"] == "127.0.0.1"


def test_a_unix_socket_peer_is_trusted(tmp_path: Any) -> None:
    """Only local processes reach it: a proxy on the same host (nginx's ``unix:`` upstream)."""
    path = str(tmp_path / "app.sock")
    with running(seen_app, addr=f"unix:{path}"):
        conn = UnixHTTPConnection(path)
        try:
            conn.request("GET", "/p", headers=FORWARDED)
            seen = json.loads(conn.getresponse().read())
        finally:
            conn.close()
    assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"]) == ("203.0.113.9", "https")


def test_the_access_log_writes_the_resolved_client(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gracehttp"), running(seen_app, access_log="common") as server:
        fetch(server.port, "127.0.0.1", headers=FORWARDED)
        fetch(server.port, "127.0.0.2", headers=FORWARDED)
    lines = [r.getMessage() for r in caplog.records if '"GET /p HTTP/1.1"' in r.getMessage()]
    assert [line.split()[0] for line in lines] == ["203.0.113.9", "127.0.0.2"]


@pytest.mark.parametrize(("path", "script", "path_info"), [
    ("/api/users", "/api", "/users"),
    ("/api", "/api", ""),
    ("/apiary", "/api", "/apiary"),  # not under the prefix: left as it is
    ("/other", "/api", "/other"),
    ("/api%2Fsecret", "/api", "/api/secret"),  # matched as sent, not after decoding
])
def test_root_path_mounts_the_app_under_a_prefix(path: str, script: str, path_info: str) -> None:
    with running(seen_app, root_path="/api") as server:
        seen = fetch(server.port, "127.0.0.2", path=path)
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == (script, path_info)
    if path.startswith("/api/"):
        assert seen["url"] == f"http://backend:8080{path}"  # links built by the app keep the prefix
