"""Which peers are trusted with X-Forwarded-*, and what their headers change: on environ
dicts, no socket (the integration tests send them over real connections)."""

from __future__ import annotations

from typing import Any

import pytest

from gracehttp.proxy import TrustedProxies, apply_forwarded


@pytest.mark.parametrize(("allowed", "peer", "trusted"), [
    (("127.0.0.1", "::1"), "127.0.0.1", True),
    (("127.0.0.1", "::1"), "::1", True),
    (("127.0.0.1", "::1"), "127.0.0.2", False),
    (("127.0.0.1",), "::ffff:127.0.0.1", True),  # an IPv4 peer on a dual-stack listener
    (("10.0.0.0/8",), "10.1.2.3", True),
    (("10.0.0.0/8",), "11.0.0.1", False),
    (("*",), "203.0.113.9", True),
    (("127.0.0.1",), "not an address", False),
    ((), "127.0.0.1", False),
])
def test_trust(allowed: tuple[str, ...], peer: str, trusted: bool) -> None:
    assert TrustedProxies(allowed).trusts(peer) is trusted


def env_with(**headers: str) -> dict[str, Any]:
    env = {"REMOTE_ADDR": "127.0.0.1", "REMOTE_HOST": "127.0.0.1", "wsgi.url_scheme": "http",
           "HTTP_HOST": "backend:8080", "SERVER_NAME": "backend", "SERVER_PORT": "8080"}
    env.update({"HTTP_X_FORWARDED_" + k.upper(): v for k, v in headers.items()})
    return env


LOOPBACK = TrustedProxies(("127.0.0.1", "10.0.0.0/8"))


def test_no_forwarded_headers_change_nothing() -> None:
    env = env_with()
    apply_forwarded(env, LOOPBACK)
    assert env == env_with()


@pytest.mark.parametrize(("chain", "client"), [
    ("203.0.113.9", "203.0.113.9"),
    ("203.0.113.9, 10.0.0.5", "203.0.113.9"),  # a second trusted proxy is walked past
    ("6.6.6.6, 203.0.113.9", "203.0.113.9"),  # what the client itself sent is not believed
    ("10.0.0.7, 10.0.0.5", "10.0.0.7"),  # every hop a proxy: the leftmost
])
def test_the_client_is_the_rightmost_hop_that_is_not_a_trusted_proxy(chain: str, client: str) -> None:
    env = env_with(**{"for": chain})
    apply_forwarded(env, LOOPBACK)
    assert (env["REMOTE_ADDR"], env["REMOTE_HOST"]) == (client, client)
    assert env["gracehttp.proxy.orig"]["REMOTE_ADDR"] == "127.0.0.1"


def test_host_and_port_count_only_when_asked() -> None:
    """Off by default (as ProxyFix): a proxy that passes a client's own X-Forwarded-Host on
    would let the client choose the host of every link the app builds."""
    env = env_with(host="evil.example", port="1")
    apply_forwarded(env, LOOPBACK)
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("backend:8080", "backend", "8080")


def test_scheme_host_and_port() -> None:
    env = env_with(proto="http, https", host="example.com", port="443")
    apply_forwarded(env, LOOPBACK, host_too=True)
    assert env["wsgi.url_scheme"] == "https"  # the last value: what the nearest proxy wrote
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com:443", "example.com", "443")
    assert env["gracehttp.proxy.orig"]["HTTP_HOST"] == "backend:8080"


def test_a_forwarded_host_with_its_port_and_an_ipv6_host() -> None:
    env = env_with(host="example.com:8443")
    apply_forwarded(env, LOOPBACK, host_too=True)
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com:8443", "example.com", "8443")
    env = env_with(host="[2001:db8::1]")
    apply_forwarded(env, LOOPBACK, host_too=True)
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("[2001:db8::1]", "[2001:db8::1]", "8080")


@pytest.mark.parametrize("proto", ["ftp", "", "javascript:"])
def test_a_scheme_other_than_http_or_https_is_ignored(proto: str) -> None:
    env = env_with(proto=proto)
    apply_forwarded(env, LOOPBACK)
    assert env["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize("port", ["eighty", "\u00b2", "99999", "-1", ""])
def test_a_port_that_is_not_a_port_number_is_ignored(port: str) -> None:
    env = env_with(port=port)
    apply_forwarded(env, LOOPBACK, host_too=True)
    assert (env["SERVER_PORT"], env["HTTP_HOST"]) == ("8080", "backend:8080")


def test_a_bare_ipv6_forwarded_host_has_no_port() -> None:
    env = env_with(host="::1")
    apply_forwarded(env, LOOPBACK, host_too=True)
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "[::1]", "8080")


@pytest.mark.parametrize(("chain", "client"), [
    ("203.0.113.9:5555", "203.0.113.9"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("2001:db8::1", "2001:db8::1"),
])
def test_a_hop_with_a_port_is_its_address(chain: str, client: str) -> None:
    env = env_with(**{"for": chain})
    apply_forwarded(env, LOOPBACK)
    assert env["REMOTE_ADDR"] == client


def test_with_any_peer_trusted_the_client_is_the_nearest_proxys_word() -> None:
    """With *, every hop would count as a proxy: the rightmost one, never the client's own."""
    env = env_with(**{"for": "6.6.6.6, 203.0.113.9"})
    apply_forwarded(env, TrustedProxies(("*",)))
    assert env["REMOTE_ADDR"] == "203.0.113.9"


def test_only_address_sized_hops_are_remembered() -> None:
    """The trust answers are kept per address, but a forwarded hop can be any text: a long
    one is judged each time, never kept (4,096 of them would otherwise stay for good)."""
    proxies = TrustedProxies(("127.0.0.1",))
    env: dict[str, Any] = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "a" * 60_000}
    apply_forwarded(env, proxies)
    assert env["REMOTE_ADDR"] == "127.0.0.1"  # not an address: the peer's own stays
    assert all(len(k) <= 45 for k in proxies._known)
    assert proxies.trusts("127.0.0.1")
    assert not proxies.trusts("10.0.0.1")
    assert proxies._known == {"127.0.0.1": True, "10.0.0.1": False}
