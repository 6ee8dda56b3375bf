"""Listener addresses: parsing the spellings `Config` accepts, and naming bound sockets.

Bottom layer: imports only `gracehttp.errors`. Parsing is pure, so `Config`
validates an address without binding anything.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from gracehttp.errors import ConfigError


@dataclass(frozen=True)
class Address:
    """One listener address. `kind` is ``"tcp"``, ``"unix"`` or ``"fd"``."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str, field: str = "addr") -> Address:
    """Parse ``host:port``, ``:port``, ``[v6]:port``, ``unix:/path`` or ``fd://N``."""
    if not isinstance(text, str) or not text:
        raise ConfigError(field, f"expected an address string, got {text!r}")
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ConfigError(field, f"{text!r} has no socket path")
        return Address("unix", path=path)
    if text.startswith("fd://"):
        num = text[5:]
        if not num.isdigit():
            raise ConfigError(field, f"{text!r}: fd://N needs a descriptor number")
        return Address("fd", fd=int(num))
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(field, f"{text!r}: expected [ipv6]:port")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ConfigError(field, f"{text!r}: expected host:port, :port, unix:/path or fd://N")
        if ":" in host:
            raise ConfigError(field, f"{text!r}: write IPv6 addresses as [addr]:port")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(field, f"{text!r}: port must be a number from 0 to 65535")
    return Address("tcp", host=host, port=int(port))


def describe_socket(sock: socket.socket) -> str:
    """The bound address of a listening socket, with the real port for ``:0``."""
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        return f"unix:{name.decode() if isinstance(name, bytes) else name}"
    host, port = sock.getsockname()[:2]
    return str(Address("tcp", host=host, port=port))


def is_private(sock: socket.socket) -> bool:
    """True for a Unix socket or a loopback address: reachable from this host only."""
    if sock.family == socket.AF_UNIX:
        return True
    host = str(sock.getsockname()[0]).split("%")[0]
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
