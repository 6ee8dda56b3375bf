"""Whole request heads parsed before are not parsed again (`Limits.heads`): the same
`RequestHead` comes back, but only under the limits it passed, only for heads that
passed, and the cache never grows past its bound; the environ keys kept with a head
are the same as made afresh. Driven with bytes."""

from __future__ import annotations

import pytest

from gracehttp.errors import ProtocolError
from gracehttp.exchange import NO_BODY_INPUT
from gracehttp.http import parser
from gracehttp.http.parser import Limits, parse_head
from gracehttp.wsgi import base_environ, build_environ, head_environ

HEAD = b"GET /a/b%20c?x=1 HTTP/1.1\r\nHost: example.com\r\nCookie: a=1\r\nCookie: b=2\r\n" \
       b"Content-Type: text/plain\r\n\r\n"


def test_the_same_head_parses_to_the_same_object() -> None:
    limits = Limits()
    first = parse_head(HEAD, limits)
    again = parse_head(bytes(bytearray(HEAD)), limits)  # equal bytes, another object
    assert again is first
    assert (again.method, again.path, again.query, again.keep_alive) == ("GET", b"/a/b%20c", b"x=1", True)


def test_a_head_kept_under_loose_limits_is_still_refused_under_strict_ones() -> None:
    loose, strict = Limits(), Limits(max_header_count=2)
    parse_head(HEAD, loose)
    with pytest.raises(ProtocolError) as refused:
        parse_head(HEAD, strict)
    assert refused.value.status == 431
    assert HEAD not in strict.heads


def test_a_refused_head_is_refused_every_time() -> None:
    limits = Limits()
    bad = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
    for _ in range(3):
        with pytest.raises(ProtocolError):
            parse_head(bad, limits)
    assert not limits.heads


def test_the_cache_stays_within_its_bound_and_long_heads_are_not_kept() -> None:
    limits = Limits()
    for i in range(parser._HEADS_MAX * 3 + 7):
        head = parse_head(f"GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), limits)
        assert head.path == f"/{i}".encode()
        assert len(limits.heads) <= parser._HEADS_MAX
    long_head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: " + b"v" * parser._HEAD_CACHED_LEN + b"\r\n\r\n"
    parse_head(long_head, limits)
    assert long_head not in limits.heads


@pytest.mark.parametrize("script_name", ["", "/a"])
def test_the_environ_kept_with_a_head_equals_one_made_afresh(script_name: str) -> None:
    head = parse_head(HEAD, Limits())
    base = base_environ("h", "80", "127.0.0.1", "5000", "http", script_name=script_name)
    env = build_environ(base, head, NO_BODY_INPUT)
    assert env == {**base, **head_environ(head, script_name), "wsgi.input": NO_BODY_INPUT}
    assert env["PATH_INFO"] == ("/b c" if script_name else "/a/b c")
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["CONTENT_TYPE"] == "text/plain"
    env["PATH_INFO"] = "/changed by the app"
    env["HTTP_COOKIE"] = "changed"
    again = build_environ(base, head, NO_BODY_INPUT)  # the next request with this head
    assert again["PATH_INFO"] == ("/b c" if script_name else "/a/b c")
    assert again["HTTP_COOKIE"] == "a=1; b=2"
    assert again is not env
