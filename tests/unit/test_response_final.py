"""`Responder.meter`: counts the request once, just before the bytes that end the response are
handed over, where they can be known to be the last, so that metrics count a request
before its client can see the answer. Driven with bytes, no socket."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from gracehttp.http.parser import Limits, parse_head
from gracehttp.outlet import Outlet
from gracehttp.response import Responder, run_app
from gracehttp.wsgi import FileWrapper


def respond(app: Callable[..., Iterable[bytes]], request: bytes = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n") \
        -> list[str]:
    """What happened, in order: "final" for the hook, "send:<n>" for n bytes handed over."""
    events: list[str] = []
    head = parse_head(request, Limits())

    def send(data: bytes, last: bool = False) -> None:
        events.append(f"send:{len(data)}")

    def sendfile(head_bytes: bytes, fd: int, offset: int, count: int) -> None:
        events.append(f"sendfile:{count}")

    responder = Responder(Outlet(send, send, sendfile, None), head, True)

    class Meter:
        def observe(self, method: str, status: int, seconds: float, body_bytes: int = 0) -> None:
            assert (method, status) == (head.method, 200)
            events.append("final")

    responder.meter = Meter()
    run_app(app, {}, responder)
    return events


def app_of(headers: list[tuple[str, str]], body: Any) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", headers)
        return body
    return app


def test_a_complete_body_counts_before_its_one_send() -> None:
    events = respond(app_of([], [b"hello"]))
    assert [e.split(":")[0] for e in events] == ["final", "send"]


@pytest.mark.parametrize(("headers", "body", "expected"), [
    ([], [b"a", b"b"], ["final", "send"]),  # a list: joined, one send
    # streamed with a length: before the block that completes it
    ([("Content-Length", "3")], iter([b"a", b"b", b"c"]), ["send", "send", "final", "send"]),
    ([], iter([b"a", b"b"]), ["send", "send", "final", "send"]),  # chunked: before the last chunk
    ([("Content-Length", "0")], iter([]), ["final", "send"]),  # nothing to stream: the head is all
])
def test_the_hook_comes_once_before_the_last_bytes(headers: list[tuple[str, str]], body: Any,
                                                   expected: list[str]) -> None:
    events = [e.split(":")[0] for e in respond(app_of(headers, body))]
    assert events == expected


def test_a_file_counts_before_its_sendfile(tmp_path: Any) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    with open(path, "rb") as f:
        events = respond(app_of([], FileWrapper(f)))
    assert events == ["final", "sendfile:1000"]


def test_a_streamed_body_without_a_length_is_not_known_to_end() -> None:
    """HTTP/1.0 without a length: close-delimited; the owner counts it after the iterable."""
    events = respond(app_of([], iter([b"a", b"b"])), b"GET / HTTP/1.0\r\n\r\n")
    assert "final" not in events
    assert [e.split(":")[0] for e in events] == ["send", "send"]


def test_a_file_like_without_a_descriptor_counts_before_the_block_that_ends_it() -> None:
    """Iterated like a streamed body; its Content-Length says which block is the last."""
    events = respond(app_of([("Content-Length", "4")], FileWrapper(io.BytesIO(b"abcd"))))
    assert [e.split(":")[0] for e in events] == ["final", "send"]


class _ClosingList(list[bytes]):
    def close(self) -> None:
        pass


@pytest.mark.parametrize(("request_line", "body", "last"), [
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", [b"hi"], False),  # keep-alive: the connection goes on
    (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", [b"hi"], True),
    (b"GET / HTTP/1.0\r\n\r\n", (b"h", b"i"), True),
    (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", _ClosingList([b"hi"]), True),
])
def test_a_closing_response_is_sent_as_the_last_bytes(request_line: bytes, body: Any, last: bool) -> None:
    lasts: list[bool] = []
    head = parse_head(request_line, Limits())
    responder = Responder(Outlet(lambda data: None, lambda data, is_last: lasts.append(is_last), lambda *a: None,
                                 None), head, head.keep_alive)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    run_app(app, {}, responder)
    assert lasts == [last]


@pytest.mark.parametrize(("request_line", "blocks", "lasts"), [
    (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", [b"abc", b"def"], [False, True]),
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", [b"abc", b"def"], [False, False]),
    # Past the Content-Length the connection closes: the block cut to it is the last bytes,
    # and a block past it sends nothing (the connection is half-closed: a send would fail).
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", [b"abc", b"defg", b"more"], [False, True]),
])
def test_the_last_streamed_block_of_a_closing_response_is_the_last_bytes(request_line: bytes, blocks: list[bytes],
                                                                        lasts: list[bool]) -> None:
    sends: list[tuple[int, bool]] = []
    head = parse_head(request_line, Limits())
    responder = Responder(Outlet(lambda data, is_last=False: sends.append((len(data), is_last)),
                                 lambda data, is_last: sends.append((len(data), is_last)), lambda *a: None, None),
                          head, head.keep_alive)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "6")])
        yield from blocks

    run_app(app, {}, responder)
    assert [is_last for _, is_last in sends] == lasts
    assert sends[1][0] == 3  # "def", cut there when the app sent more
