"""Response heads framed before are kept (`response._FRAMED`): the same status and
headers give the same bytes and the same framing, but never across a drain that began,
a Date that changed, or a request id. Driven with bytes, no socket."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gracehttp import response
from gracehttp.http import writer
from gracehttp.http.parser import Limits, parse_head
from gracehttp.outlet import Outlet
from gracehttp.response import Responder, run_app


def answer(app: Callable[..., Iterable[bytes]], closing: bool = False, request_id: str | None = None,
           request: bytes = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n") -> tuple[bytes, Responder]:
    sent: list[bytes] = []
    head = parse_head(request, Limits())
    responder = Responder(Outlet(sent.append, lambda data, end: sent.append(data), lambda *a: None, "gracehttp"),
                          head, True, lambda: closing)
    responder.request_id = request_id
    run_app(app, {}, responder)
    return b"".join(sent), responder


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def streamed(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"a"
    yield b"b"


def test_the_same_response_gives_the_same_bytes_and_framing_from_the_cache() -> None:
    response._FRAMED.clear()
    first, r1 = answer(hello)
    assert len(response._FRAMED) == 1
    again, r2 = answer(hello)
    assert again == first
    assert (r2.length, r2.chunked, r2.keep_alive, r2.headers_sent) == (r1.length, r1.chunked, True, True)
    assert b"Content-Length: 5\r\n" in again
    assert b"Connection: close" not in again


def test_a_drain_that_began_still_says_close_on_a_kept_head() -> None:
    response._FRAMED.clear()
    answer(hello)
    closing, responder = answer(hello, closing=True)
    assert b"Connection: close\r\n" in closing
    assert responder.keep_alive is False


def test_chunked_framing_and_http10_come_back_right() -> None:
    response._FRAMED.clear()
    for _ in range(2):
        out, responder = answer(streamed)
        assert responder.chunked
        assert out.endswith(b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n")
    for _ in range(2):
        out, responder = answer(streamed, request=b"GET / HTTP/1.0\r\n\r\n")
        assert not responder.chunked
        assert responder.keep_alive is False
        assert out.endswith(b"\r\n\r\nab")


def test_a_new_second_makes_a_new_head_and_a_request_id_is_never_kept(monkeypatch: Any) -> None:
    response._FRAMED.clear()
    answer(hello)
    monkeypatch.setattr(writer.time, "time", lambda: 4_000_000_000.0)  # a second far on
    monkeypatch.setattr(writer, "_now", writer.time.time)
    out, _ = answer(hello)
    assert b"Date: Tue, 02 Oct 2096 07:06:40 GMT\r\n" in out
    with_id, _ = answer(hello, request_id="abc")
    assert b"X-Request-ID: abc\r\n" in with_id
    other, _ = answer(hello, request_id="def")
    assert b"X-Request-ID: def\r\n" in other
    monkeypatch.setattr(writer.time, "time", lambda: 3_000_000_000.0)  # the clock set back
    monkeypatch.setattr(writer, "_now", writer.time.time)
    back, _ = answer(hello)
    assert b"Date: Sat, 24 Jan 2065 05:20:00 GMT\r\n" in back


def test_the_cache_stays_within_its_bound() -> None:
    response._FRAMED.clear()
    for i in range(response._FRAMED_MAX * 2 + 3):
        def app(environ: dict[str, Any], start_response: Any, i: int = i) -> list[bytes]:
            start_response("200 OK", [("X-N", str(i))])
            return [b"x"]
        out, _ = answer(app)
        assert f"X-N: {i}\r\n".encode() in out
        assert len(response._FRAMED) <= response._FRAMED_MAX
