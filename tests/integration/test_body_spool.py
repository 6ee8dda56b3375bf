"""Request bodies are collected parked before the app runs (gracehttp.spool): slow
uploads of any size, chunked or sized, plain or TLS, and TLS records sent in pieces hold
no request thread, and the app still gets every byte."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import get, read_response, read_until_close, running, statuses, wait_until

BIG = bytes(range(256)) * 1200  # 300 KiB: past 64 KiB; sized, a pooled buffer; chunked, a temporary file
CALLS: list[str] = []


def digest_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    CALLS.append(environ["PATH_INFO"])
    body = b"" if environ["PATH_INFO"] == "/ignore" else environ["wsgi.input"].read()
    out = body if environ["PATH_INFO"] == "/echo" else b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def expected(body: bytes) -> bytes:
    return b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


def chunked(body: bytes, size: int = 50_000) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def upload(body: bytes, chunk: bool) -> bytes:
    framing = b"Transfer-Encoding: chunked" if chunk else b"Content-Length: %d" % len(body)
    return b"POST /up HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n\r\n" + (chunked(body) if chunk else body)


class PieceTLS:
    """A TLS client over a raw socket whose records the test sends itself, in pieces."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname="127.0.0.1")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.out.read())
                self.inc.write(self.sock.recv(65536))
        self.sock.sendall(self.out.read())

    def records(self, data: bytes) -> bytes:
        self.tls.write(data)
        return self.out.read()

    def read_all(self, timeout: float = 10.0) -> bytes:
        """Decrypt everything until the server closes."""
        self.inc.write(read_until_close(self.sock, timeout))
        self.inc.write_eof()
        out = []
        while True:
            try:
                piece = self.tls.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not piece:
                break
            out.append(piece)
        return b"".join(out)


@pytest.fixture
def tls_server(cert: tuple[str, str]) -> Iterator[tuple[Any, ssl.SSLContext]]:
    crt, key = cert
    with running(digest_app, certfile=crt, keyfile=key, threads=2, read_timeout=30.0) as server:
        yield server, ssl.create_default_context(cafile=crt)


def test_slow_uploads_chunked_and_sized_hold_no_thread() -> None:
    """Six uploads stopped half-way on a server with 2 threads and a 30 s read_timeout:
    other clients are served meanwhile, and each upload, once finished, reaches the app whole
    (the app is called only then)."""
    CALLS.clear()
    with running(digest_app, threads=2, read_timeout=30.0) as server:
        raws = [upload(BIG, chunk=i % 2 == 1) for i in range(6)]
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in raws]
        for sock, raw in zip(socks, raws, strict=True):
            sock.sendall(raw[:len(raw) // 2])
        for _ in range(3):
            assert get(server.port, "/", timeout=5).status == 200  # threads free
        assert CALLS == ["/", "/", "/"]  # no half-received upload reached the app
        for sock, raw in zip(socks, raws, strict=True):
            sock.sendall(raw[len(raw) // 2:] + b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        for sock in socks:
            answers = read_until_close(sock, timeout=10)
            assert statuses(answers) == [200, 200]
            assert expected(BIG) in answers
            assert answers.endswith(expected(b""))  # the pipelined request behind it
            sock.close()


def test_a_chunked_body_past_max_body_bytes_is_413_before_the_app_runs() -> None:
    CALLS.clear()
    with running(digest_app, max_body_bytes=100_000) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(upload(BIG, chunk=True))
            assert statuses(read_until_close(sock)) == [413]
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(upload(b"x" * 99_000, chunk=True))
            assert read_response(sock).body == expected(b"x" * 99_000)
    assert CALLS == ["/up"]


def test_an_upload_cut_short_never_reaches_the_app() -> None:
    CALLS.clear()
    with running(digest_app) as server:
        for chunk in (False, True):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                raw = upload(BIG, chunk)
                sock.sendall(raw[:len(raw) // 3])
                sock.shutdown(socket.SHUT_WR)
                assert statuses(read_until_close(sock)) == [400]
        assert get(server.port, "/up", method="POST", body=b"ok").body == expected(b"ok")
    assert CALLS == ["/up"]


def test_an_unread_large_body_keeps_the_connection() -> None:
    """The app ignores a 300 KiB body: it was collected already, so the connection is
    not closed to skip it (a streamed body over 64 KiB would be)."""
    with running(digest_app) as server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        raw = upload(BIG, chunk=False).replace(b"/up", b"/ignore")
        sock.sendall(raw[:1000])
        sock.sendall(raw[1000:])
        assert read_response(sock).body == expected(b"")
        sock.sendall(upload(b"again", chunk=False))
        assert read_response(sock).body == expected(b"again")


def test_tls_records_sent_in_pieces_hold_no_thread(tls_server: tuple[Any, ssl.SSLContext]) -> None:
    """Clients whose TLS records (a head, a sized body, a chunked body) stop half-way
    on a server with 2 threads: a real TLS client is served meanwhile; each finishes right."""
    server, ctx = tls_server
    requests = [b"GET /head HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                upload(BIG, chunk=False),
                upload(BIG, chunk=True)]
    wants = [expected(b""), expected(BIG), expected(BIG)]
    clients = [PieceTLS(server.port, ctx) for _ in requests]
    rests = []
    for client, raw in zip(clients, requests, strict=True):
        records = client.records(raw)
        client.sock.sendall(records[:len(records) // 2])
        rests.append(records[len(records) // 2:])
    # and ten bytes of one more client's record: both threads would be pinned without parking.
    extra = PieceTLS(server.port, ctx)
    extra_records = extra.records(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    extra.sock.sendall(extra_records[:10])
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as real:
        real.sendall(b"GET /real HTTP/1.0\r\n\r\n")
        assert read_until_close(real).endswith(expected(b""))  # type: ignore[arg-type]
    for client, rest, want in zip(clients, rests, wants, strict=True):
        client.sock.sendall(rest + client.records(b"GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
        assert want in client.read_all()
    extra.sock.sendall(extra_records[10:])
    assert extra.read_all().endswith(expected(b""))


def test_tls_uploads_stream_both_ways_at_full_size(tls_server: tuple[Any, ssl.SSLContext]) -> None:
    """A real TLS client uploading a large body at once and reading a large answer."""
    server, ctx = tls_server
    results: list[bytes] = []

    def one() -> None:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            for _ in range(3):
                sock.sendall(upload(BIG * 4, chunk=False))
                results.append(read_response(sock).body)  # type: ignore[arg-type]
            sock.sendall(upload(BIG * 4, chunk=True).replace(b"/up", b"/echo"))  # 1.2 MB back
            results.append(expected(read_response(sock).body))  # type: ignore[arg-type]

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [expected(BIG * 4)] * 16


def test_a_closing_answer_with_a_pipelined_request_behind_a_spooled_body_lingers() -> None:
    """`Connection: close` on a request whose body was collected parked, with the next request
    sent behind it: the client may still be sending, so the server half-closes and drains
    (a close would reset the connection under the answer), as it does for a streamed body."""
    from gracehttp.connstate import ConnState
    from gracehttp.engine import Engine

    with running(digest_app) as server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        engine = server._engine
        assert isinstance(engine, Engine)
        raw = upload(BIG, chunk=False).replace(b"Host: t", b"Host: t\r\nConnection: close")
        sock.sendall(raw[:1000])
        assert wait_until(lambda: any(c.spool is not None for c in tuple(engine.parking.parked.values())), 5)
        sock.sendall(raw[1000:] + b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
        data = read_until_close(sock)
        assert statuses(data) == [200]
        assert data.endswith(expected(BIG))
        assert wait_until(lambda: [c.state for c in tuple(engine.parking.parked.values())] == [ConnState.LINGERING], 5)
        sock.close()
        assert wait_until(lambda: not engine.parking.parked, 5)


def test_uploaders_that_stall_cannot_take_the_memory_of_others_and_give_it_back_at_their_deadline() -> None:
    """Hostile clients announce 4 MiB and stall after 1 MiB: they hold the body memory budget
    only until read_timeout, and meanwhile a real upload is still served (from a file)."""
    from gracehttp.spool import BUDGET, MEMORY_BUDGET

    size = 4 * 1024 * 1024
    with running(digest_app, threads=2, read_timeout=1.5) as server:
        stalled = []
        for _ in range(MEMORY_BUDGET // size + 2):  # more than the budget holds
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size + bytes(1 << 20))
            stalled.append(sock)
        assert wait_until(lambda: BUDGET.free < size, 5)  # the budget is spent
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(upload(BIG * 4, chunk=False))
        resp = read_response(sock)
        assert resp.status == 200
        assert resp.body == expected(BIG * 4)
        sock.close()
        # At their deadline each stalled upload is refused (408) and its memory given back.
        for s in stalled:
            assert statuses(read_until_close(s, 10)) == [408]
            s.close()
        assert wait_until(lambda: BUDGET.free == MEMORY_BUDGET, 5)
