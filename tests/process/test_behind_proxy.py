"""gracehttp behind the HAProxy example, both real processes: the app sees the client's
address and scheme as HAProxy forwards them, with gracehttp's default settings (HAProxy
on the same host, so a trusted loopback peer), and a client cannot pose as another."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import read_response, wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "haproxy" / "haproxy.cfg"
APP = '''
import json

def app(environ, start_response):
    seen = {k: environ.get(k) for k in ("REMOTE_ADDR", "wsgi.url_scheme", "HTTP_X_FORWARDED_FOR")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def example_for(front: int, backend: int) -> str:
    """The example file, listening on `front` and sending to the one gracehttp at `backend`."""
    text = EXAMPLE.read_text()
    text = text.replace("bind :80", f"bind 127.0.0.1:{front}")
    text = re.sub(r"(?m)^    server app1 .*\n(    server app\d .*\n)*", f"    server app1 127.0.0.1:{backend} check\n",
                  text)
    assert f"127.0.0.1:{backend}" in text
    assert f"127.0.0.1:{front}" in text
    return text


def through(front: int, headers: str = "") -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", front), timeout=5, source_address=("127.0.0.2", 0)) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: example.com\r\n{headers}Connection: close\r\n\r\n".encode())
        response = read_response(sock)
    assert response.status == 200, response.body
    return json.loads(response.body)  # type: ignore[no-any-return]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)")
def test_behind_the_haproxy_example_the_app_sees_the_client(tmp_path: Path) -> None:
    (tmp_path / "seenapp.py").write_text(APP)
    backend, front = free_port(), free_port()
    (tmp_path / "haproxy.cfg").write_text(example_for(front, backend))
    server = subprocess.Popen([sys.executable, "-m", "gracehttp", "seenapp:app", "--bind", f"127.0.0.1:{backend}"],
                              cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proxy = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answering() -> bool:
            try:
                through(front)
                return True
            except (OSError, AssertionError, ValueError):
                return False

        assert wait_until(answering, 15, interval=0.1), "HAProxy did not reach gracehttp"
        seen = through(front)
        assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"]) == ("127.0.0.2", "http")
        # A client's own X-Forwarded-For is kept left of HAProxy's entry, which wins.
        spoofed = through(front, "X-Forwarded-For: 6.6.6.6\r\n")
        assert spoofed["REMOTE_ADDR"] == "127.0.0.2"
        assert spoofed["HTTP_X_FORWARDED_FOR"] == "6.6.6.6,127.0.0.2"  # its own field, joined
    finally:
        proxy.terminate()
        proxy.wait(10)
        server.send_signal(signal.SIGTERM)
        server.wait(15)
