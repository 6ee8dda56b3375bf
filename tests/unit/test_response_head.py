"""The response head the server renders from an app's headers, driven with bytes: the
caches of the hot path (pairs checked before, name kinds, C-level formatting) must give
the same head as the plain rules, for tuples, lists, repeated and dropped headers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gracehttp.http.parser import Limits, parse_head
from gracehttp.http.writer import HeaderError, check_headers
from gracehttp.outlet import Outlet
from gracehttp.response import Responder, run_app


def head_of(headers: Any, status: str = "200 OK", body: bytes = b"hi",
            request: bytes = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n") -> list[str]:
    out: list[bytes] = []
    responder = Responder(Outlet(out.append, lambda data, end: out.append(data), lambda *a: None, "gh"),
                          parse_head(request, Limits()), True)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return [body]

    run_app(app, {}, responder)
    lines = b"".join(out).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return [line for line in lines if not line.startswith("Date: ")]


@pytest.mark.parametrize("pair", [("X-A", "1"), ["X-A", "1"]])
def test_a_pair_given_as_a_list_renders_as_a_tuple_does(pair: Any) -> None:
    for _ in range(2):  # the second time from the caches
        assert head_of([pair]) == ["HTTP/1.1 200 OK", "X-A: 1", "Server: gh", "Content-Length: 2"]


def test_connection_is_the_servers_and_a_204_loses_its_length() -> None:
    for _ in range(2):
        assert head_of([("Connection", "close"), ("X-B", "2")]) == \
            ["HTTP/1.1 200 OK", "X-B: 2", "Server: gh", "Content-Length: 2", "Connection: close"]
        assert head_of([("content-length", "0"), ("X-C", "3")], status="204 No Content", body=b"") == \
            ["HTTP/1.1 204 No Content", "X-C: 3", "Server: gh"]


def test_the_apps_own_date_server_and_request_id_win() -> None:
    lines = head_of([("Server", "mine"), ("X-Request-ID", "r1")])
    assert lines == ["HTTP/1.1 200 OK", "Server: mine", "X-Request-ID: r1", "Content-Length: 2"]


@pytest.mark.parametrize("headers", [
    [("X-Ok", "1"), ("X-Bad", "a\r\nSet-Cookie: x=1")],  # the bad one after a cached good one
    [("Keep-Alive", "timeout=5")],
    [("X-N", 5)],
    [(b"X-Bytes", "1")],
])
def test_a_bad_header_is_refused_every_time(headers: Any) -> None:
    for _ in range(2):
        with pytest.raises((HeaderError, TypeError)):
            head_of(headers)


def _valid_by_the_rules(name: str, value: str) -> bool:
    """RFC 9110 with PEP 3333's latin-1: a token name, a value without CTLs (tab allowed)."""
    token = set("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    return bool(name) and set(name) <= token and all(c == "\t" or (0x20 <= ord(c) <= 0xFF and ord(c) != 0x7F)
                                                        for c in value)


@settings(max_examples=400, deadline=None)
@given(value=st.text(alphabet=st.characters(max_codepoint=0x17F), max_size=12))
def test_a_new_value_of_a_known_name_is_checked_as_fully_as_a_new_pair(value: str) -> None:
    # The name is known valid (checked with another value): only the value is new.
    check_headers([("X-Known", "1")])
    if _valid_by_the_rules("X-Known", value):
        check_headers([("X-Known", value)])
    else:
        with pytest.raises(HeaderError):
            check_headers([("X-Known", value)])


def test_every_character_as_a_value_of_a_known_name_gets_the_full_rules_verdict() -> None:
    # Exhaustive where the sampled test above is thin: each of the first 0x180 code points
    # alone and between letters, after the name is known valid.
    check_headers([("X-Known", "1")])
    for code in range(0x180):
        for value in (chr(code), f"a{chr(code)}b"):
            if _valid_by_the_rules("X-Known", value):
                check_headers([("X-Known", value)])
            else:
                with pytest.raises(HeaderError):
                    check_headers([("X-Known", value)])


@pytest.mark.parametrize("name", ["X Bad", "X:Y", "", "X-\x00", "Ā", "X-Bad\r\n"])
def test_an_invalid_name_with_a_printable_value_is_refused_every_time(name: str) -> None:
    for _ in range(2):  # a refused name is never remembered as valid
        with pytest.raises(HeaderError):
            check_headers([(name, "printable")])


def test_of_several_bad_pairs_the_first_in_the_apps_order_is_named() -> None:
    check_headers([("X-Known", "1")])  # pairs checked before are skipped: the rest keep their order
    for bad in ([("X-Known", "1"), ("Bad Name", "1"), ("Worse Name", "2")],
                [("Bad Name", "1"), ("X-Known", "1\r\nX-Evil: 1")]):
        with pytest.raises(HeaderError, match="Bad Name"):
            check_headers(bad)
