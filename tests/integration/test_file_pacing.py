"""A large file sent with sendfile holds a bounded number of unsent bytes in the kernel.

The server runs in this process, so the test finds the server's end of the
connection among its own descriptors and asks the kernel about it: how many
bytes it holds unsent (``SIOCOUTQNSD``) and the socket's TCP_NOTSENT_LOWAT.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gracehttp import transport
from gracehttp.transport import FILE_NOTSENT
from tests.helpers import connect, read_response, running, small_window_client, wait_until

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_NOTSENT_LOWAT"), reason="Linux TCP option")

#: ioctl: bytes in a TCP socket's send queue not yet sent (linux/sockios.h).
SIOCOUTQNSD = 0x894B
FILE_SIZE = 8 * 1024 * 1024
#: What one sendfile may queue past the bound before the kernel checks it again.
SLACK = 128 * 1024
#: Without the bound the kernel queued 3.8 MiB here for a client that stopped reading.
assert FILE_NOTSENT + SLACK < 1024 * 1024


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(FILE_SIZE))
    return path


def file_and_memory_app(path: Path) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ["PATH_INFO"] == "/file":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return environ["wsgi.file_wrapper"](open(path, "rb"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"m" * 1000]

    return app


def server_end(client: socket.socket) -> socket.socket:
    """A duplicate of the server's socket for `client`'s connection, once it is accepted."""
    found: list[socket.socket] = []

    def accepted() -> bool:
        sock = _find(client)
        if sock is not None:
            found.append(sock)
        return bool(found)

    assert wait_until(accepted), "the server never accepted the connection"
    return found[0]


def _find(client: socket.socket) -> socket.socket | None:
    want = (client.getpeername(), client.getsockname())
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            dup = os.dup(fd)
        except OSError:  # closed since the listing (the listing's own, say)
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:  # not a socket
            os.close(dup)
            continue
        try:
            if sock.family == socket.AF_INET and (sock.getsockname(), sock.getpeername()) == want:
                return sock
        except OSError:
            pass
        sock.close()
    return None


def unsent(sock: socket.socket) -> int:
    raw = fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, struct.pack("i", 0))
    return int(struct.unpack("i", raw)[0])


def lowat(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)


def _stop_then_read_a_file(client: socket.socket, path: Path, paced: int, after: int) -> None:
    """Ask for the file, read nothing until the server queues all it will, then read it
    whole; the server's end must hold at most `paced` (+ slack) unsent bytes all along
    and have its own setting `after` once the file is whole."""
    with server_end(client) as theirs:
        client.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
        # The client reads nothing: the window closes and the rest waits for it.
        assert wait_until(lambda: unsent(theirs) > 0), "the server never queued beyond the window"
        assert unsent(theirs) <= paced + SLACK
        assert lowat(theirs) == paced
        digest = hashlib.sha256()
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(65536)
        head, _, body = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert f"Content-Length: {FILE_SIZE}".encode() in head
        got = len(body)
        digest.update(body)
        most = 0
        while got < FILE_SIZE:
            block = client.recv(min(65536, FILE_SIZE - got))
            assert block, "the server closed before the whole file"
            got += len(block)
            digest.update(block)
            most = max(most, unsent(theirs))
        assert digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
        assert most <= paced + SLACK
        # Whole: the next response on the connection is sent as any other.
        assert wait_until(lambda: lowat(theirs) == after)
        client.sendall(b"GET /memory HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(client).body == b"m" * 1000


@pytest.mark.skipif(transport._system_notsent() <= FILE_NOTSENT,
                    reason="the system's own bound is as tight: the server leaves sockets alone")
def test_a_client_that_stops_reading_a_file_pins_few_unsent_bytes_in_the_server(big_file: Path) -> None:
    with running(file_and_memory_app(big_file)) as server, small_window_client(server.port) as client:
        _stop_then_read_a_file(client, big_file, paced=FILE_NOTSENT, after=0)


@pytest.mark.parametrize("own", [64 * 1024, 1024 * 1024])
def test_a_listeners_own_unsent_bound_is_kept_when_tighter_and_put_back_after_a_file(
        big_file: Path, own: int) -> None:
    pre = socket.create_server(("127.0.0.1", 0))
    pre.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, own)  # accepted sockets inherit it
    with running(file_and_memory_app(big_file), listeners=(pre,)), small_window_client(pre.getsockname()[1]) as client:
        _stop_then_read_a_file(client, big_file, paced=min(own, FILE_NOTSENT), after=own)


def test_a_system_bound_as_tight_is_left_to_apply(big_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "_system_notsent", lambda: 64 * 1024)  # as if the sysctl said so
    with running(file_and_memory_app(big_file)) as server, small_window_client(server.port) as client, \
            server_end(client) as theirs:
        client.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_until(lambda: unsent(theirs) > 0)
        assert lowat(theirs) == 0  # not set on the socket: the system's applies
        response = read_response(client)
        assert hashlib.sha256(response.body).digest() == hashlib.sha256(big_file.read_bytes()).digest()


def test_a_file_over_a_unix_socket_is_sent_whole(big_file: Path, tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with running(file_and_memory_app(big_file), addr=f"unix:{path}"):
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(10)
        client.connect(path)
        with client:
            client.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
            response = read_response(client)
            assert response.status == 200
            assert hashlib.sha256(response.body).digest() == hashlib.sha256(big_file.read_bytes()).digest()
            client.sendall(b"GET /memory HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(client).body == b"m" * 1000


def test_many_clients_get_a_paced_file_whole(big_file: Path) -> None:
    expected = hashlib.sha256(big_file.read_bytes()).digest()
    with running(file_and_memory_app(big_file)) as server:
        clients = [connect(server.port, timeout=20) for _ in range(6)]
        for c in clients:
            c.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
        for c in clients:
            with c:
                response = read_response(c)
                assert response.status == 200
                assert hashlib.sha256(response.body).digest() == expected
