"""A response head's framing is decided once per shape (status, framing inputs, header
names in order) and kept (`heads._PLANS`): a later response of that shape, with new
values, must get exactly the head and framing a fresh decision gives it, refusals
included, and never a decision some value would have changed. Driven with bytes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gracehttp.http import heads
from gracehttp.http.heads import frame
from gracehttp.http.writer import HeaderError, http_date_line

SERVER = "Server: gracehttp\r\n"
STATUSES = {"200 OK": 200, "201 Created": 201, "204 No Content": 204, "304 Not Modified": 304,
            "101 Switching Protocols": 101, "404 Not Found": 404}
NAMES = ["Content-Type", "Content-Length", "content-length", "X-Port", "ETag", "Set-Cookie", "Date", "Server",
         "Connection", "X-Request-ID", "Transfer-Encoding"]
VALUES = st.sampled_from(["0", "5", "14", "100", "12a", "", "close", "keep-alive", "text/plain", "Close, Upgrade"])


def decided(*args: Any) -> Any:
    """What a fresh decision gives (the plans bypassed), or the error it raises."""
    try:
        return heads._decide(*args, None)
    except HeaderError as exc:
        return type(exc)


def framed(*args: Any) -> Any:
    try:
        return frame(*args)
    except HeaderError as exc:
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(status=st.sampled_from(sorted(STATUSES)), names=st.lists(st.sampled_from(NAMES), max_size=5),
       first=st.lists(VALUES, min_size=5, max_size=5), second=st.lists(VALUES, min_size=5, max_size=5),
       body_lengths=st.tuples(st.none() | st.integers(0, 120), st.none() | st.integers(0, 120)),
       keep_alive=st.booleans(), version=st.sampled_from(["HTTP/1.1", "HTTP/1.0"]), head_only=st.booleans(),
       request_id=st.none() | st.just("abc"))
def test_a_response_of_a_known_shape_is_framed_as_a_fresh_decision_would(
        status: str, names: list[str], first: list[str], second: list[str],
        body_lengths: tuple[int | None, int | None], keep_alive: bool, version: str, head_only: bool,
        request_id: str | None) -> None:
    heads._PLANS.clear()
    date = http_date_line()
    code = STATUSES[status]
    # The same "known or not" for both bodies: that is part of the shape.
    one, two = body_lengths if (body_lengths[0] is None) == (body_lengths[1] is None) else (None, None)
    for values, body_length in ((first, one), (second, two)):
        headers = list(zip(names, values, strict=False))
        args = (status, code, headers, body_length, keep_alive, version, head_only, SERVER, date, request_id)
        assert framed(*args) == decided(*args)


def hello(port: str, length: str = "5") -> list[tuple[str, str]]:
    return [("Content-Type", "text/plain"), ("Content-Length", length), ("X-Port", port)]


def count_decisions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = heads._decide

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(heads, "_decide", counted)
    return calls


def test_new_values_in_a_known_shape_are_rendered_without_a_new_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    heads._PLANS.clear()
    calls = count_decisions(monkeypatch)
    date = http_date_line()
    for port in ("50001", "50002", "50003"):
        head, length, chunked, keep_alive, shared = frame("200 OK", 200, hello(port), 5, True, "HTTP/1.1", False,
                                                          SERVER, date, None)
        assert head == (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Port: {port}\r\n"
                        f"{SERVER}{date}\r\n").encode()
        assert (length, chunked, keep_alive, shared) == (5, False, True, True)
    assert len(calls) == 1
    # A computed Content-Length is a value too: another body length, the same plan.
    frame("200 OK", 200, [("X-Port", "1")], 7, True, "HTTP/1.1", False, SERVER, date, None)
    head = frame("200 OK", 200, [("X-Port", "2")], 9, True, "HTTP/1.1", False, SERVER, date, None)[0]
    assert b"Content-Length: 9\r\n" in head
    assert b"X-Port: 2\r\n" in head
    assert len(calls) == 2


def test_a_plan_lives_as_long_as_its_date_line(monkeypatch: pytest.MonkeyPatch) -> None:
    heads._PLANS.clear()
    calls = count_decisions(monkeypatch)
    frame("200 OK", 200, hello("1"), 5, True, "HTTP/1.1", False, SERVER, "Date: one\r\n", None)
    head = frame("200 OK", 200, hello("2"), 5, True, "HTTP/1.1", False, SERVER, "Date: two\r\n", None)[0]
    assert b"Date: two\r\n" in head
    assert b"Date: one" not in head
    assert len(calls) == 2


def test_values_that_change_the_decision_are_decided_again() -> None:
    heads._PLANS.clear()
    date = http_date_line()
    frame("200 OK", 200, hello("1"), 5, True, "HTTP/1.1", False, SERVER, date, None)
    # The body ends short of this response's Content-Length: the client learns it by the close.
    head, length, _, keep_alive, _ = frame("200 OK", 200, hello("2", "9"), 5, True, "HTTP/1.1", False, SERVER,
                                           date, None)
    assert (length, keep_alive) == (9, False)
    assert head.endswith(b"Connection: close\r\n\r\n")
    with pytest.raises(HeaderError, match="Content-Length"):
        frame("200 OK", 200, hello("3", "5x"), 5, True, "HTTP/1.1", False, SERVER, date, None)


def test_a_cookie_head_is_planned_but_never_shared() -> None:
    heads._PLANS.clear()
    date = http_date_line()
    for secret in ("a", "b"):
        head, *_, shared = frame("200 OK", 200, [("Set-Cookie", f"s={secret}")], 0, True, "HTTP/1.1", False,
                                 SERVER, date, None)
        assert f"Set-Cookie: s={secret}\r\n".encode() in head
        assert shared is False
    assert len(heads._PLANS) == 1


def test_plans_are_bounded() -> None:
    heads._PLANS.clear()
    date = http_date_line()
    for i in range(heads._PLANS_MAX + 10):
        frame("200 OK", 200, [(f"X-Made-Up-{i}", "1")], 1, True, "HTTP/1.1", False, SERVER, date, None)
    assert len(heads._PLANS) <= heads._PLANS_MAX
