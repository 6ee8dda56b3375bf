"""Behind a reverse proxy: which peers may set ``X-Forwarded-*``, and what those headers
change in the environ (docs/architecture.rst, "Behind a proxy").

Middle layer: standard library only.

Only a peer in ``forwarded_allow_ips`` (gunicorn's name and default: loopback; ``*``
for any; a Unix socket's peer is always trusted, as only local processes reach it)
is believed, and the trust is decided once per connection. From an untrusted peer
the headers stay plain ``HTTP_X_FORWARDED_*`` keys and change nothing else. From a
trusted one, as werkzeug's ProxyFix does with one proxy hop:

- ``X-Forwarded-For`` sets ``REMOTE_ADDR`` (and ``REMOTE_HOST``) to the client: the
  rightmost address that is not itself a trusted proxy (uvicorn's rule), so a chain
  of trusted proxies is walked back and what a client wrote left of the first
  untrusted hop is not believed. (With ``*``, the rightmost hop; a trusted network
  that also holds clients lets those clients name themselves.)
- ``X-Forwarded-Proto`` (``http`` or ``https``) sets ``wsgi.url_scheme``;
- only with ``forwarded_host`` (off, as in ProxyFix: a proxy that passes a client's
  own value on would let it choose the host of the links the app builds):
  ``X-Forwarded-Host`` sets ``HTTP_HOST`` and ``SERVER_NAME``, ``X-Forwarded-Port``
  ``SERVER_PORT`` and the port in ``HTTP_HOST``.

Of repeated values the last counts (what the nearest proxy wrote). The values
replaced are kept in ``environ["gracehttp.proxy.orig"]``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_KNOWN_MAX = 4096
_ADDRESS_MAX = 45  # the longest text form of an IP address (IPv4-mapped IPv6)


class TrustedProxies:
    """``forwarded_allow_ips``: addresses and networks (``10.0.0.0/8``), or ``*``."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.any = "*" in allowed
        #: Raises ValueError naming a bad entry (`Config` turns it into a ConfigError).
        self.networks: list[Network] = [ipaddress.ip_network(a, strict=False) for a in allowed if a != "*"]
        #: Answers given before, by address: parsing one with `ipaddress` costs more than
        #: a whole request, and a server sees the same few peers (its proxies) again and
        #: again. Bounded, so that many clients cannot grow it without limit.
        self._known: dict[str, bool] = {}

    def trusts(self, address: str) -> bool:
        if self.any:
            return True
        known = self._known.get(address)
        if known is None:
            known = self._trusts(address)
            if len(address) <= _ADDRESS_MAX and len(self._known) < _KNOWN_MAX:
                self._known[address] = known  # only what can be an address: a header's hop can be anything
        return known

    def _trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
        return any(ip in network for network in self.networks)


_PORT = re.compile(r"[0-9]{1,5}")


def _last(value: str) -> str:
    return value.rsplit(",", 1)[-1].strip()


def _port(value: str) -> str | None:
    return value if _PORT.fullmatch(value) and int(value) <= 65535 else None


def _address(hop: str) -> str:
    """A hop without the port some proxies add (``203.0.113.9:5555``, ``[2001:db8::1]:443``)."""
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


def _client(forwarded_for: str, proxies: TrustedProxies) -> str:
    """The client address in an X-Forwarded-For chain: right to left, the first hop that
    is not a trusted proxy (the leftmost, when every hop is one). With ``*`` every hop
    would be trusted, so the rightmost (what the nearest proxy wrote) is the client."""
    hops = [_address(hop.strip()) for hop in forwarded_for.split(",") if hop.strip()]
    if proxies.any:
        client = hops[-1] if hops else ""
    else:
        client = next((hop for hop in reversed(hops) if not proxies.trusts(hop)), hops[0] if hops else "")
    # Only an address: anything else ("unknown", a forged log line) leaves the peer's own.
    try:
        ipaddress.ip_address(client)
    except ValueError:
        return ""
    return client


#: The environ keys `apply_forwarded` reads: a request with none of them is left as it is.
FORWARDED_KEYS = frozenset({"HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                            "HTTP_X_FORWARDED_PORT"})


def apply_forwarded(env: dict[str, Any], proxies: TrustedProxies, host_too: bool = False) -> None:
    """Apply a trusted peer's X-Forwarded-* headers to `env` (see the module docstring);
    X-Forwarded-Host and -Port only with `host_too` (``forwarded_host``)."""
    forwarded_for = env.get("HTTP_X_FORWARDED_FOR")
    proto = env.get("HTTP_X_FORWARDED_PROTO")
    host = env.get("HTTP_X_FORWARDED_HOST") if host_too else None
    port = env.get("HTTP_X_FORWARDED_PORT") if host_too else None
    if not (forwarded_for or proto or host or port):
        return
    orig: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        orig.setdefault(key, env.get(key))
        env[key] = value

    if forwarded_for and (client := _client(forwarded_for, proxies)):
        put("REMOTE_ADDR", client)
        put("REMOTE_HOST", client)
    if proto and (scheme := _last(proto).lower()) in ("http", "https"):
        put("wsgi.url_scheme", scheme)
    if host and (name := _last(host)):
        if name.count(":") > 1 and not name.startswith("["):
            name = f"[{name}]"  # a bare IPv6 address: no port in it
        bare, colon, given_port = name.rpartition(":") if not name.endswith("]") else ("", "", name)
        put("HTTP_HOST", name)
        put("SERVER_NAME", bare if colon else name)
        if colon and _port(given_port):
            put("SERVER_PORT", given_port)
    if port and (number := _port(_last(port))):
        put("SERVER_PORT", number)
        if "HTTP_HOST" in env:
            current = env["HTTP_HOST"]
            bare = current if current.endswith("]") or ":" not in current else current.rsplit(":", 1)[0]
            put("HTTP_HOST", f"{bare}:{number}")
    env["gracehttp.proxy.orig"] = orig
