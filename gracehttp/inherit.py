"""Listening sockets this process was handed at birth: by systemd's socket activation
or by the gracehttp process it upgrades
(docs/architecture.rst, "Process manager integration" and "Workers and upgrades").

Bottom layer: standard library only.

Every inherited socket has a name, ``"<role> <key>"``. The role is ``main`` or
``admin``. An upgrade names a socket by the address text the old process's
config gave (``"main :0"``, ``"admin 127.0.0.1:9090"``), so the new process
takes it by name whatever order its own config lists addresses in, and a
``:0`` keeps its real port. A socket systemd activated has the key
``systemd:<FileDescriptorName>``; one named ``admin`` in the unit serves the
admin endpoints, the others are the main listeners *instead of* ``addr`` and
``addrs`` (the unit decides where to listen, as with gunicorn). An upgrade
passes those on under the same names, so the next generation keeps them too.

The environment is read once per process and its variables are removed, so a
process this one starts (an app's subprocess, the next upgrade) does not
mistake them for its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Container, MutableMapping
from dataclasses import dataclass, field

#: Set by an upgrading process for the new one: JSON with the listeners, the ready pipe
#: and the parent's liveness pipe (see `gracehttp.upgrade`).
UPGRADE_ENV = "_GRACEHTTP_UPGRADE"
#: systemd's first passed descriptor (``SD_LISTEN_FDS_START``).
LISTEN_FDS_START = 3


@dataclass
class Inheritance:
    """What this process was handed; `sockets` shrinks as listeners claim them."""

    sockets: dict[str, socket.socket] = field(default_factory=dict)
    #: The write end of the pipe on which the new generation reports ready.
    ready_fd: int | None = None
    #: The read end of a pipe the previous generation holds open until it exits.
    parent_fd: int | None = None
    #: Upgrades that led to this process (its metrics count them on).
    upgrades: int = 0


_lock = threading.Lock()
_inherited: Inheritance | None = None


def inheritance() -> Inheritance:
    """This process's inheritance, read from the environment on first use."""
    global _inherited
    with _lock:
        if _inherited is None:
            _inherited = _read(os.environ)
        return _inherited


def _read(environ: MutableMapping[str, str]) -> Inheritance:
    upgrade = environ.pop(UPGRADE_ENV, None)
    activated = _activated(environ)
    if upgrade is not None:
        data = json.loads(upgrade)
        out = Inheritance(ready_fd=data.get("ready_fd"), parent_fd=data.get("parent_fd"),
                          upgrades=int(data.get("upgrades", 0)))
        for name, fd in data["listeners"].items():
            out.sockets[name] = _adopt(int(fd))
        out.sockets.update(activated)
        return out
    return Inheritance(sockets=activated)


def _activated(environ: MutableMapping[str, str]) -> dict[str, socket.socket]:
    """sd_listen_fds(3) with names: descriptors 3.. when LISTEN_PID is this process."""
    pid, count = environ.pop("LISTEN_PID", ""), environ.pop("LISTEN_FDS", "")
    names_text = environ.pop("LISTEN_FDNAMES", "")
    if not (pid.isdigit() and count.isdigit()) or int(pid) != os.getpid():
        return {}
    names = names_text.split(":") if names_text else []
    out: dict[str, socket.socket] = {}
    for index in range(int(count)):
        fdname = names[index] if index < len(names) else "unknown"
        role = "admin" if fdname == "admin" else "main"
        name = unique(out, f"{role} systemd:{fdname}")
        out[name] = _adopt(LISTEN_FDS_START + index)
    return out


def _adopt(fd: int) -> socket.socket:
    os.set_inheritable(fd, False)
    return socket.socket(fileno=fd)


def unique(taken: Container[str], name: str) -> str:
    """`name`, or ``name#2``, ``name#3``... for the second and later of the same address."""
    if name not in taken:
        return name
    n = 2
    while f"{name}#{n}" in taken:
        n += 1
    return f"{name}#{n}"


def take(name: str) -> socket.socket | None:
    """The inherited socket called `name`, now owned by the caller; None if there is none."""
    found = inheritance()
    with _lock:
        return found.sockets.pop(name, None)


def take_activated(role: str) -> list[tuple[str, socket.socket]]:
    """Every systemd-activated socket of `role` (also when passed on by an upgrade), in order."""
    found = inheritance()
    prefix = f"{role} systemd:"
    with _lock:
        names = [name for name in found.sockets if name.startswith(prefix)]
        return [(name, found.sockets.pop(name)) for name in names]


def close_unclaimed() -> list[str]:
    """Close the inherited sockets no listener took (the new config dropped them); their names.

    This process is their last owner, so a Unix socket's path goes too.
    """
    found = inheritance()
    with _lock:
        names = sorted(found.sockets)
        for name in names:
            sock = found.sockets.pop(name)
            path = sock.getsockname() if sock.family == socket.AF_UNIX else ""
            sock.close()
            if isinstance(path, str) and path.startswith("/") and not name.split(" ", 1)[1].startswith("systemd:"):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return names
