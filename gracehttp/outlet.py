"""A connection's way out, as the response layer sees it: the callables a response
leaves through, made once per connection (`Outlet`), not per request.

Bottom layer: standard library only. `gracehttp.response` frames responses into
these; `gracehttp.exchange` makes the `Outlet` from the connection's sender and
transport, so the connection owns the socket and decides how a complete response
reaches a slow client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Send(Protocol):
    """A waiting write of part of a response (`last`: see `SendFinal`)."""

    def __call__(self, data: bytes, last: bool = ..., /) -> None: ...


#: ``send_final(data, last)``: a complete response; `last` when the connection closes
#: after it. Why `last`: a response followed by a close used to leave as two segments,
#: the data and then the FIN, each through the loopback or network stack and
#: acknowledged. The last bytes are sent with ``MSG_MORE`` and the connection
#: half-closes (`Transport.send_fin`), so they leave with the FIN in one segment
#: (measured: 11,000 -> 13,600 Connection: close requests/s): at once, before the
#: app's ``close()`` runs, or, on a leader with more to serve, with the others it
#: holds (`gracehttp.closer`), within a millisecond. Never left for the close to push:
#: a close with client bytes unread resets the connection and drops what the kernel
#: still holds, and a descriptor a forked child inherited keeps the close from
#: sending anything.
SendFinal = Callable[[bytes, bool], None]


#: ``send_file(head, fd, offset, count)``: the head, then `count` bytes of the file.
SendFile = Callable[[bytes, int, int, int], None]


class Closing(Protocol):
    """What says the server is closing (`gracehttp.site.Site`): responses then say
    Connection: close."""

    closing: bool


class _NeverClosing:
    closing = False


_NEVER_CLOSING = _NeverClosing()


class Outlet:
    """Where one connection's responses go, made once per connection and shared by the
    responders of its requests: `send` for a streamed response, `send_final` for a
    complete one, `send_file` for a file, the Server line every response carries, and
    `server`, whose ``closing`` makes them say Connection: close."""

    __slots__ = ("last_framed", "last_headers", "send", "send_file", "send_final", "server", "server_line")

    def __init__(self, send: Send, send_final: SendFinal, send_file: SendFile, server_header: str | None,
                 server: Closing = _NEVER_CLOSING) -> None:
        self.send = send
        self.send_final = send_final
        self.send_file = send_file
        self.server_line = f"Server: {server_header}\r\n" if server_header else ""
        self.server = server
        #: The header pairs of the last response framed through here, all tuples of str and
        #: checked (`gracehttp.response.Responder.start_response`), and what that response
        #: was framed from and to: a connection's responses mostly repeat the last one.
        self.last_headers: list[tuple[str, str]] | None = None
        self.last_framed: tuple[Any, ...] | None = None
