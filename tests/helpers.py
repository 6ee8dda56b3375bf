"""Shared test tools: a server in this process, raw sockets, and a response reader."""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from gracehttp import Config, GracefulServer


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [body]


@contextlib.contextmanager
def running(app: Any = hello_app, **fields: Any) -> Iterator[GracefulServer]:
    fields.setdefault("addr", "127.0.0.1:0")
    server = GracefulServer(Config(app=app, **fields)).run_in_background()
    try:
        yield server
    finally:
        server.close()
        assert server.wait(10)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def small_window_client(port: int) -> socket.socket:
    """A client with a small receive buffer (set before connecting, so the window is
    small from the start): a large response cannot hide in the kernel's buffers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_close(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (or `timeout` passes)."""
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send `raw`, half-close, and return all the server answers."""
    with connect(port, timeout) as sock:
        sock.sendall(raw)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        return read_until_close(sock, timeout)


def statuses(data: bytes) -> list[int]:
    """Status codes of every response in a byte stream (ignores bodies' contents)."""
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n", data)]


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def read_response(sock: socket.socket, method: str = "GET") -> Response:
    """Read exactly one response from a keep-alive socket with http.client's parser."""
    resp = http.client.HTTPResponse(sock, method=method)
    resp.begin()
    body = resp.read()
    return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)


def get(port: int, path: str = "/", method: str = "GET", body: bytes | None = None,
        headers: dict[str, str] | None = None, timeout: float = 5.0) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (the servers' ``unix:/path`` listeners)."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def unix_get(path: str, target: str = "/", timeout: float = 5.0) -> Response:
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll `predicate` until true or `timeout`; for states no event announces."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class GatedApp:
    """A WSGI app whose ``/slow`` requests wait until `release` is set; others answer at once."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            self.entered.set()
            self.release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]


def refused(port: int) -> bool:
    """True once nothing listens on `port` (the listener closed)."""
    try:
        # A short timeout: a SYN dropped by a final stop's filter is not retried for 1 s, and
        # the caller polls again anyway.
        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True  # a reset: the handshake raced the listener's close
    except TimeoutError:
        return False  # a SYN dropped while a final stop shuts new connections out: not yet
    return False


def fd_table(pid: int) -> int:
    """The size of a process's descriptor table (not the count of open descriptors)."""
    with open(f"/proc/{pid}/status") as f:
        found = re.search(r"^FDSize:\s+(\d+)", f.read(), re.M)
    assert found is not None
    return int(found.group(1))
