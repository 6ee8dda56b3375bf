"""What a plain server imports: ssl (4-5 MiB of every process) and werkzeug are
loaded only when TLS or routes ask for them, prometheus-client (8 MiB with the ssl
and libcrypto its exposition module imports) only with workers, ctypes
(0.4 MiB) only when a stopping server closes its listeners' queues, the idna codec
(0.3 MiB) not for binding an ASCII host name, and the modules
of features used now and then (access log files, the debug pages: 0.3-0.5 MiB
each) only when those are. Not subprocess: an upgrade must not import anything, since
a deploy may have replaced the standard library on disk by then."""

from __future__ import annotations

import subprocess
import sys

SERVE_ONE = """
import socket, sys
from gracehttp import Config, GracefulServer

def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]

server = GracefulServer(Config(app=app, addr="localhost:0", metrics=False)).run_in_background()
# Before this process connects (a client's getaddrinfo imports the idna codec itself).
binding = ["encodings.idna"] if "encodings.idna" in sys.modules else []
with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200"), "no answer"
LAZY = ("ssl", "werkzeug", "prometheus_client", "ctypes", "html", "tracemalloc", "datetime", "logging.handlers")
print(sorted(m for m in LAZY if m in sys.modules) + binding)
server.shutdown()
"""


def test_a_plain_server_loads_neither_ssl_nor_werkzeug_nor_prometheus_nor_ctypes() -> None:
    proc = subprocess.run([sys.executable, "-c", SERVE_ONE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


SCRAPE_ONE = """
import socket, sys
from gracehttp import Config, GracefulServer

def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]

server = GracefulServer(Config(app=app, addr="127.0.0.1:0", admin_addr="127.0.0.1:0")).run_in_background()
admin = int(server.admin_addresses[0].rsplit(":", 1)[1])
for port, path, accept in ((server.port, "/", ""), (admin, "/metrics", ""),
                           (admin, "/metrics", "application/openmetrics-text")):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\\r\\nHost: t\\r\\nAccept: {accept}\\r\\nConnection: close\\r\\n\\r\\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
assert b"gracehttp_requests_total" in answer and answer.endswith(b"# EOF\\n"), answer[-200:]
print(sorted(m for m in ("ssl", "_hashlib", "prometheus_client", "werkzeug") if m in sys.modules))
server.shutdown()
"""


def test_a_scraped_single_process_loads_neither_prometheus_client_nor_ssl() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRAPE_ONE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
