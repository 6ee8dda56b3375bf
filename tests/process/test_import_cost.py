"""What a plain server imports: ssl (4-5 MiB of every process), werkzeug and
prometheus-client are loaded only when TLS, routes or metrics ask for them, and ctypes
(0.4 MiB) only when a stopping server closes its listeners' queues."""

from __future__ import annotations

import subprocess
import sys

SERVE_ONE = """
import socket, sys
from gracehttp import Config, GracefulServer

def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]

server = GracefulServer(Config(app=app, addr="127.0.0.1:0", metrics=False)).run_in_background()
with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200"), "no answer"
print(sorted(m for m in ("ssl", "werkzeug", "prometheus_client", "ctypes") if m in sys.modules))
server.shutdown()
"""


def test_a_plain_server_loads_neither_ssl_nor_werkzeug_nor_prometheus_nor_ctypes() -> None:
    proc = subprocess.run([sys.executable, "-c", SERVE_ONE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
