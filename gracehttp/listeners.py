"""Opening the listening sockets of a `Config`: TCP (v4, v6, dual-stack), Unix, fd://N,
pre-bound, and the ones inherited from systemd or an upgrade (see `gracehttp.inherit`).

Upper layer: imports `addresses` and `inherit`. Binding errors surface here, in
the caller's thread, so ``run_in_background()`` raises them instead of a
background thread swallowing them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import socket
import stat
import struct

from gracehttp import inherit
from gracehttp.addresses import Address, parse_address
from gracehttp.errors import BindError


class BoundListener:
    """A listening socket, its name for an upgrade to pass it on by (see `gracehttp.inherit`),
    and the Unix socket path to remove when it closes (if ours)."""

    def __init__(self, sock: socket.socket, unlink_path: str | None = None, name: str = "") -> None:
        self.sock = sock
        self.unlink_path = unlink_path
        self.name = name

    @property
    def activated(self) -> bool:
        """Passed by systemd's socket activation (directly, or on through an upgrade)."""
        return " systemd:" in self.name

    def hand_over(self) -> None:
        """The next generation serves this socket now: closing ours must not unlink its path."""
        self.unlink_path = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.unlink_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.unlink_path)


def _tcp(addr: Address, backlog: int, reuse_port: bool) -> socket.socket:
    if addr.host == "":
        if socket.has_dualstack_ipv6():
            try:
                return _bind(socket.AF_INET6, ("::", addr.port), backlog, reuse_port, dualstack=True)
            except OSError:
                pass  # IPv6 disabled in this container: fall back to IPv4 only
        return _bind(socket.AF_INET, ("0.0.0.0", addr.port), backlog, reuse_port)
    # An ASCII name as bytes: getaddrinfo puts any str through the idna codec, whose
    # import (stringprep, unicodedata) is 0.3 MiB of every idle server for nothing.
    host = addr.host.encode() if addr.host.isascii() else addr.host
    infos = socket.getaddrinfo(host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # like Go: localhost binds 127.0.0.1
    family, _, _, _, sockaddr = infos[0]
    return _bind(family, sockaddr, backlog, reuse_port)


def _bind(family: int, sockaddr: tuple[object, ...], backlog: int, reuse_port: bool,
          dualstack: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dualstack else 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _unix(path: str, backlog: int) -> BoundListener:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise OSError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale socket left by a process that died
        else:
            raise OSError(f"{path} is in use by another server")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return BoundListener(sock, unlink_path=path)


def _inherited(fd: int, backlog: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.listen(backlog)
    return sock


def open_address(text: str, backlog: int, reuse_port: bool) -> BoundListener:
    addr = parse_address(text)
    if addr.kind == "unix":
        return _unix(addr.path, backlog)
    if addr.kind == "fd":
        return BoundListener(_inherited(addr.fd, backlog))
    return BoundListener(_tcp(addr, backlog, reuse_port))


def open_all(role: str, addrs: list[str], prebound: tuple[socket.socket, ...], backlog: int,
             reuse_port: bool) -> list[BoundListener]:
    """The listeners of `role` (``main`` or ``admin``); on any failure close what was opened.

    Sockets systemd activated for `role` replace `addrs`; otherwise each address
    is taken from the previous generation when it passed one on by that name, and
    bound here when not.
    """
    activated = inherit.take_activated(role)
    if activated:
        return [BoundListener(sock, name=name) for name, sock in activated]
    opened: list[BoundListener] = []
    names: set[str] = set()
    try:
        for text in addrs:
            name = inherit.unique(names, f"{role} {text}")
            names.add(name)
            sock = inherit.take(name)
            if sock is None:
                try:
                    lst = open_address(text, backlog, reuse_port)
                except OSError as exc:
                    raise BindError(text if role == "main" else f"{text} ({role})", exc) from exc
            else:  # the last generation to serve a Unix socket removes its path
                addr = parse_address(text)
                lst = BoundListener(sock, unlink_path=addr.path if addr.kind == "unix" else None)
            lst.name = name
            opened.append(lst)
        for sock in prebound:
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                sock.listen(backlog)
            opened.append(BoundListener(sock))  # the program's own: not passed on by an upgrade
    except BaseException:
        for lst in opened:
            lst.close()
        raise
    return opened


def via(listeners: list[BoundListener]) -> str:
    """How the startup log says the listeners came (systemd's socket activation), or ""."""
    return " from systemd socket activation" if any(lst.activated for lst in listeners) else ""


class Listener:
    """A listening socket as the engine accepts from it."""

    __slots__ = ("fd", "kind", "server_addr", "sock", "tuned")

    def __init__(self, sock: socket.socket, rcvtimeo: bytes, sndtimeo: bytes) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        #: (family, type, proto) as plain ints, for `accept`.
        self.kind = (int(sock.family), int(sock.type), sock.proto)
        #: TCP sockets accepted from it inherit TCP_NODELAY and the read and write
        #: timeouts (`rcvtimeo`, `sndtimeo`: struct timeval) set here, which saves
        #: three system calls per connection.
        self.tuned = sock.family != socket.AF_UNIX
        if self.tuned:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, rcvtimeo)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, sndtimeo)
        if sock.family == socket.AF_UNIX:
            self.server_addr = ("localhost", "")
        else:
            host, port = sock.getsockname()[:2]
            self.server_addr = (str(host), str(port))

    def accept(self) -> tuple[socket.SocketType, object]:
        """`socket.accept` without its per-call conversions of the family and type to
        enums (a tenth of the cost of taking a connection, which counts in a flood), and
        as the C socket type: `socket.socket` adds a Python-level construction and close
        to each connection, for file objects and enums that no connection uses. TLS wraps
        it as it wraps a `socket.socket`."""
        fd, peer = self.sock._accept()  # type: ignore[attr-defined]
        return socket.SocketType(*self.kind, fileno=fd), peer

    def queued(self) -> int:
        """Connections in the kernel's accept queue now; `ACCEPT_BATCH` where it cannot
        tell (a Unix socket). For TCP, TCP_INFO's "unacked" of a listening socket."""
        if not self.tuned:
            return ACCEPT_BATCH
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        except OSError:
            return ACCEPT_BATCH
        return int(_QUEUED.unpack_from(info, 24)[0])

    def refuse_new(self) -> None:
        """Let no new connection into the kernel's queue (TCP): a socket filter that drops
        every packet, so a SYN goes unanswered (its client retries, and finds the port
        closed) and a handshake cannot complete. Then what is queued can be accepted to
        the last, and closing leaves nothing in the queue to reset."""
        if not self.tuned:
            return  # Unix sockets run no filter on connect
        import ctypes  # here, not at the top: only a stopping server needs it (0.4 MiB of every process)

        drop_all = ctypes.create_string_buffer(struct.pack("HBBI", _BPF_RET_K, 0, 0, 0))
        program = struct.pack("HP", 1, ctypes.addressof(drop_all))  # struct sock_fprog
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program)


#: Connections taken from the kernel's queue for one listener event, at most: what is
#: queued when the event is served (`Listener.queued`), not what arrives meanwhile.
ACCEPT_BATCH = 1024
_TCP_INFO_SIZE = 32  # up to tcpi_unacked (offset 24), which a listener fills with its queue's length
_QUEUED = struct.Struct("I")
_SO_ATTACH_FILTER = 26  # Linux, <asm-generic/socket.h>
_BPF_RET_K = 0x06  # "return k": with k = 0, drop the packet


def reserve_descriptors(count: int) -> int:
    """Grow this process's descriptor table now to hold `count` descriptors (at most the
    soft RLIMIT_NOFILE); returns the size asked of the kernel.

    The kernel grows the table on demand, doubling it each time an accept needs a
    descriptor past its end (at 256, 512, 1,024, 2,048...), and in a process with
    several threads every growth waits for an RCU grace period: 10 to 35 ms measured
    on one accept, with the accepting thread holding up every other connection and
    health probe. A flood of connections meets every one of those waits in its first
    tenth of a second. Growing the table once at start costs at most one such wait,
    and 8 bytes per slot of kernel memory. A descriptor is duplicated at the highest
    slot wanted (``F_DUPFD`` takes the lowest free slot at or above it, so nothing open
    is touched) and closed again; the table never shrinks.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        count = min(count, soft)
    if count <= 1:
        return count
    probe_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            os.close(fcntl.fcntl(probe_fd, fcntl.F_DUPFD_CLOEXEC, count - 1))
    finally:
        os.close(probe_fd)
    return count

