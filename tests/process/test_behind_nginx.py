"""gracehttp behind the nginx example, both real processes, as the walkthrough
(examples/nginx/README.rst) sets them up: nginx ends TLS and gracehttp runs with the
walkthrough's own command lines. The app sees the client's address (not nginx's) and
scheme, the host it asked for and, under a prefix, SCRIPT_NAME and PATH_INFO; a client
cannot pose as another address or scheme.

nginx runs as the current user, everything of its own (pid, logs, temporary files) under
tmp_path, with a self-signed certificate that `openssl` makes for the test."""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import get, read_response, wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "nginx" / "gracehttp.conf"
WALKTHROUGH = ROOT / "examples" / "nginx" / "README.rst"
CLIENT = "127.0.0.2"  # the client's source address: not nginx's 127.0.0.1
APP = '''
import json

def app(environ, start_response):
    keys = ("REMOTE_ADDR", "wsgi.url_scheme", "HTTP_HOST", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
            "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO")
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({k: environ.get(k) for k in keys}).encode()]
'''

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def walkthrough_commands() -> list[list[str]]:
    """The gracehttp command lines of the walkthrough's code blocks."""
    return [shlex.split(line.strip()) for line in WALKTHROUGH.read_text().splitlines()
            if line.startswith("    gracehttp ")]


def command(root_path: bool) -> list[str]:
    (argv,) = [c for c in walkthrough_commands() if ("--root-path" in c) == root_path]
    return argv


def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "example.com.pem", tmp_path / "example.com.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=example.com", "-addext", "subjectAltName=DNS:example.com",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def nginx_conf(tmp_path: Path, http: int, https: int, backend: int, prefix: str) -> Path:
    """A whole nginx.conf around the example: its own pid, logs and temporary files, the test's
    ports and certificate, and the location moved under `prefix` as the walkthrough says."""
    cert, key = certificate(tmp_path)
    site = EXAMPLE.read_text()
    for old, new in (("listen 80;", f"listen 127.0.0.1:{http};"),
                     ("listen 443 ssl;", f"listen 127.0.0.1:{https} ssl;"),
                     ("server 127.0.0.1:8080 ", f"server 127.0.0.1:{backend} "),
                     ("/etc/ssl/certs/example.com.pem", str(cert)),
                     ("/etc/ssl/private/example.com.key", str(key)),
                     ("location / {", f"location {prefix}/ {{")):
        assert site.count(old) == 1, old
        site = site.replace(old, new)
    (tmp_path / "site.conf").write_text(site)
    temp = {name: tmp_path / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    # As root, nginx's workers would switch to "nobody", who cannot enter tmp_path.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {tmp_path / 'nginx.pid'};\n"
        f"error_log {tmp_path / 'error.log'} info;\nevents {{ worker_connections 64; }}\n"
        "http {\n"
        f"    access_log {tmp_path / 'access.log'};\n"
        + "".join(f"    {name}_temp_path {path};\n" for name, path in temp.items())
        + f"    include {tmp_path / 'site.conf'};\n}}\n")
    return conf


@pytest.fixture
def behind_nginx(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """nginx with the example in front of gracehttp started with the walkthrough's command
    (the one with --root-path when the test is parametrized with a prefix)."""
    for tool, package in (("nginx", "nginx"), ("openssl", "openssl")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian package {package}; .ci/run installs it)")
    prefix: str = request.param
    (tmp_path / "seenapp.py").write_text(APP)
    backend, http, https = free_port(), free_port(), free_port()
    argv = command(root_path=bool(prefix))
    assert argv[0] == "gracehttp"
    assert "--bind" in argv
    if prefix:
        assert argv[argv.index("--root-path") + 1] == prefix
    args = ["seenapp:app", *(a.replace("127.0.0.1:8080", f"127.0.0.1:{backend}") for a in argv[2:])]
    assert f"127.0.0.1:{backend}" in args
    log = (tmp_path / "gracehttp.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "gracehttp", *args], cwd=tmp_path,
                              env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                              stdout=log, stderr=subprocess.STDOUT)
    conf = nginx_conf(tmp_path, http, https, backend, prefix)
    check = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True,
                           timeout=30)
    proxy = None
    try:
        assert check.returncode == 0, check.stderr
        proxy = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(conf)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ready() -> bool:
            try:
                return get(backend, "/readyz", timeout=2).status == 200
            except OSError:
                return False

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", https), timeout=1).close()
                return True
            except OSError:
                return False

        assert wait_until(ready, 20, interval=0.05), (tmp_path / "gracehttp.log").read_text()
        assert wait_until(listening, 10, interval=0.05), (tmp_path / "error.log").read_text()
        yield {"http": http, "https": https, "cert": tmp_path / "example.com.pem", "prefix": prefix,
               "log": tmp_path / "gracehttp.log"}
    finally:
        if proxy is not None:
            proxy.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            proxy.wait(10)
        server.send_signal(signal.SIGTERM)
        server.wait(15)
        log.close()


def request(port: int, target: str, headers: str = "", tls: Path | None = None) -> Any:
    """One request from CLIENT's address through nginx; over TLS when `tls` is the certificate."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(CLIENT, 0)) as raw:
        sock = raw
        if tls is not None:
            sock = ssl.create_default_context(cafile=str(tls)).wrap_socket(raw, server_hostname="example.com")
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: example.com\r\n{headers}Connection: close\r\n\r\n".encode())
        return read_response(sock)


def seen(nginx: dict[str, Any], target: str, headers: str = "") -> dict[str, Any]:
    response = request(nginx["https"], target, headers, tls=nginx["cert"])
    assert response.status == 200, response.body
    return json.loads(response.body)  # type: ignore[no-any-return]


@pytest.mark.parametrize("behind_nginx", [""], indirect=True)
def test_the_app_sees_the_client_not_nginx(behind_nginx: dict[str, Any]) -> None:
    got = seen(behind_nginx, "/hello?x=1")
    assert got["REMOTE_ADDR"] == CLIENT
    assert got["wsgi.url_scheme"] == "https"
    assert got["HTTP_HOST"] == "example.com"
    assert (got["SCRIPT_NAME"], got["PATH_INFO"], got["QUERY_STRING"]) == ("", "/hello", "x=1")
    # A client's own headers: nginx replaces them, and gracehttp would not believe them anyway.
    forged = seen(behind_nginx, "/", "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: http\r\n")
    assert forged["REMOTE_ADDR"] == CLIENT
    assert forged["wsgi.url_scheme"] == "https"
    assert forged["HTTP_X_FORWARDED_FOR"] == CLIENT
    # Plain HTTP is sent to HTTPS, and the access log names the client.
    redirect = request(behind_nginx["http"], "/hello?x=1")
    assert redirect.status == 301
    assert redirect.headers["location"] == "https://example.com/hello?x=1"
    assert wait_until(lambda: f"{CLIENT} - - [" in behind_nginx["log"].read_text(), 5), \
        behind_nginx["log"].read_text()


@pytest.mark.parametrize("behind_nginx", ["/api"], indirect=True)
def test_under_a_prefix_the_app_sees_script_name(behind_nginx: dict[str, Any]) -> None:
    got = seen(behind_nginx, "/api/hello?x=1")
    assert (got["SCRIPT_NAME"], got["PATH_INFO"], got["QUERY_STRING"]) == ("/api", "/hello", "x=1")
    assert (got["REMOTE_ADDR"], got["wsgi.url_scheme"]) == (CLIENT, "https")
    assert seen(behind_nginx, "/api/")["PATH_INFO"] == "/"
    # Outside the prefix nginx has no location for the app.
    assert request(behind_nginx["https"], "/hello", tls=behind_nginx["cert"]).status == 404


def test_the_walkthrough_names_the_settings_the_example_relies_on() -> None:
    text = WALKTHROUGH.read_text()
    for needed in ("--forwarded-allow-ips", "--root-path", "/readyz", "drain_delay", "REMOTE_ADDR",
                   "wsgi.url_scheme", "SCRIPT_NAME", "examples/nginx/gracehttp.conf"):
        assert needed in text, needed
    assert len(walkthrough_commands()) == 2
    # Its nginx excerpts are the example's lines (the prefix's location aside).
    example = {line.strip() for line in EXAMPLE.read_text().splitlines()}
    for block in re.findall(r"\.\. code-block:: nginx\n\n((?: {4}.*\n|\n)+)", text):
        for line in filter(None, (line.strip() for line in block.splitlines())):
            assert line in example or line == "location /api/ {" or line.startswith("#"), line
    assert not re.search(r"(?m)^=+$", text)  # no top-level title: it is included under one
