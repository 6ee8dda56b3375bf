"""Response heads framed before are kept (`response._FRAMED`, and a connection's last one
on its `Outlet`): the same status and headers give the same bytes and the same framing,
but never across a drain that began, a Date that changed, or a request id. Driven with
bytes, no socket."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from gracehttp import response
from gracehttp.http import writer
from gracehttp.http.parser import Limits, parse_head
from gracehttp.http.writer import HeaderError
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


class Closing:
    closing = False


def on(outlet: Outlet, app: Callable[..., Iterable[bytes]],
       request: bytes = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n") -> tuple[bytes, Responder]:
    """One response through `outlet`, as a connection's requests go, one after another."""
    sent: list[bytes] = []
    outlet.send = outlet.send_final = lambda data, last=False: sent.append(data)  # type: ignore[method-assign]
    head = parse_head(request, Limits())
    responder = Responder(outlet, head, head.keep_alive)
    run_app(app, {}, responder)
    return b"".join(sent), responder


def test_a_connections_responses_in_turn_each_get_their_own_head(monkeypatch: Any) -> None:
    """Whatever the connection's last response was, each response's head is the one made
    afresh for it: status, pairs, body length, HEAD, HTTP/1.0 and keep-alive all count."""
    monkeypatch.setattr(writer, "_now", lambda: 4_000_000_000.5)  # one second throughout: one Date line
    def make(status: str, headers: list[tuple[str, str]], body: bytes) -> Callable[..., list[bytes]]:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response(status, list(headers))
            return [body]
        return app

    apps = [make("200 OK", [("X-A", "1")], b"one"), make("200 OK", [("X-A", "1")], b"three"),
            make("404 Not Found", [("X-A", "1")], b"one"), make("200 OK", [("X-A", "2")], b"one"),
            make("200 OK", [("X-A", "1"), ("Connection", "close")], b"one"),
            make("200 OK", [("X-A", "1"), ("Content-Length", "9")], b"one")]
    requests = [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
                b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"]
    combos = [(app, request) for app in apps for request in requests]
    for first_app, first_request in combos:  # every response after every other, on one connection
        for app, request in combos:
            outlet = Outlet(print, print, lambda *a: None, "gracehttp", Closing())
            on(outlet, first_app, first_request)
            response._FRAMED.clear()
            afresh, fresh = on(Outlet(print, print, lambda *a: None, "gracehttp", Closing()), app, request)
            response._FRAMED.clear()
            out, responder = on(outlet, app, request)
            assert out == afresh, request
            assert (responder.length, responder.chunked, responder.keep_alive) == \
                   (fresh.length, fresh.chunked, fresh.keep_alive)


def test_a_drain_that_began_says_close_on_the_connections_kept_head() -> None:
    server = Closing()
    outlet = Outlet(print, print, lambda *a: None, None, server)
    first, _ = on(outlet, hello)
    assert b"Connection: close" not in first
    server.closing = True
    closing, responder = on(outlet, hello)
    assert b"Connection: close\r\n" in closing
    assert responder.keep_alive is False


def test_pairs_changed_in_place_after_a_response_are_checked_again() -> None:
    """Pairs that are lists are never kept for the next response: an app that changes one
    in place after it was checked gets the check again, and a CR LF is refused."""
    pair = ["X-A", "fine"]

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [pair])
        return [b"x"]

    outlet = Outlet(print, print, lambda *a: None, None, Closing())
    out, _ = on(outlet, app)
    assert b"X-A: fine\r\n" in out
    pair[1] = "bad\r\nInjected: 1"
    with pytest.raises(HeaderError):
        on(outlet, app)


def test_the_connections_kept_head_gets_the_new_seconds_date(monkeypatch: Any) -> None:
    outlet = Outlet(print, print, lambda *a: None, None, Closing())
    on(outlet, hello)
    monkeypatch.setattr(writer.time, "time", lambda: 4_000_000_000.0)  # a second far on
    monkeypatch.setattr(writer, "_now", writer.time.time)
    out, _ = on(outlet, hello)
    assert b"Date: Tue, 02 Oct 2096 07:06:40 GMT\r\n" in out


def test_pairs_checked_before_stay_fast_after_a_flood_of_one_off_values() -> None:
    """Values made per response (lengths, ETags) fill the checked pairs; a pair the app
    sends from then on is still kept, and a cookie never is."""
    writer._CHECKED.clear()
    for i in range(writer._CHECKED_MAX + 100):
        writer.check_headers([("Content-Type", "text/plain"), ("Content-Length", str(i)), ("ETag", f'"{i:x}"')])
    assert len(writer._CHECKED) <= writer._CHECKED_MAX
    stable = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
    writer.check_headers(stable)
    assert writer._CHECKED.issuperset(stable)
    writer.check_headers([("Set-Cookie", "session=secret")])
    assert ("Set-Cookie", "session=secret") not in writer._CHECKED


def test_a_value_that_is_a_str_subclass_is_sent_as_what_it_holds() -> None:
    """A (str, Enum) member holds "application/json" and prints as "Kind.JSON": the head
    carries what it holds, which is what was checked and what a cached head holds too,
    before and after a plain str with the same text."""
    class Kind(str, enum.Enum):
        JSON = "application/json"

    def app_of(value: str) -> Callable[..., list[bytes]]:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Type", value)])
            return [b"{}"]
        return app

    response._FRAMED.clear()
    outlet = Outlet(print, print, lambda *a: None, None, Closing())
    for value in (Kind.JSON, "application/json", Kind.JSON):
        for out in (on(outlet, app_of(value))[0], on(Outlet(print, print, lambda *a: None, None, Closing()),
                                                     app_of(value))[0]):
            assert b"Content-Type: application/json\r\n" in out
            assert b"Kind" not in out


def test_a_head_setting_a_cookie_is_not_kept_for_other_connections() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Set-Cookie", "session=secret"), ("Content-Type", "text/plain")])
        return [b"x"]

    response._FRAMED.clear()
    out, _ = answer(app)
    assert b"Set-Cookie: session=secret\r\n" in out
    assert not response._FRAMED
    answer(hello)
    assert len(response._FRAMED) == 1
