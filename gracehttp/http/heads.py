"""A response head from a WSGI status and header list: what the server adds, drops or
refuses, and how the body is delimited (the app's Content-Length, one computed from a
whole body, chunked, or the close).

Bottom layer: imports only `gracehttp.http.writer`; no sockets.

The decision depends on the header *names* and on few values (Content-Length's,
Connection's), while most values change from one response to the next: a length, an
ETag, a cookie, the benchmark apps' client port. So a decision made once is kept by
the status, the framing inputs and the names in order (`_PLANS`), and a response of
that shape renders its values into the kept plan without deciding again. Only
decisions that no value changed are kept: a Content-Length that must be dropped, a
Connection header from the app, a head without a body, or a keep-alive the values
turned off are decided anew each time. docs/architecture.rst ("Responses") shows
where this sits among the other head caches.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from gracehttp.http.writer import NO_BODY_STATUSES, HeaderError, render_head

_HOP_BY_HOP_NAMES = frozenset({"transfer-encoding", "keep-alive", "upgrade", "proxy-connection", "te", "trailer"})
# What the server does with an app's header, by name (`_kind`).
_PLAIN, _LENGTH, _CONNECTION, _HOP_BY_HOP, _DATE, _SERVER, _COOKIE, _REQUEST_ID = range(8)
_SPECIAL = {"content-length": _LENGTH, "connection": _CONNECTION, "date": _DATE, "server": _SERVER,
            "set-cookie": _COOKIE, "x-request-id": _REQUEST_ID, **dict.fromkeys(_HOP_BY_HOP_NAMES, _HOP_BY_HOP)}
#: The kinds of header names seen before, in the app's spelling: a lookup instead of a
#: lower() and a chain of comparisons per header (bounded like the other name caches).
_KINDS: dict[str, int] = {}
_KINDS_MAX = 1024
#: Decisions by shape (`frame`): (the Date line they carry, the index of the app's
#: Content-Length or -1, the server's lines before a computed Content-Length and after
#: it, chunked, whether other connections may be given the rendered head).
_PLANS: dict[tuple[Any, ...], tuple[str, int, str, str, bool, bool]] = {}
_PLANS_MAX = 256
_name = itemgetter(0)

#: (head, length, chunked, keep-alive, shared): what `frame` decided. `shared` is False
#: when the head sets a cookie, a client's own secret, never given to another connection.
Framed = tuple[bytes, int | None, bool, bool, bool]


def _kind(name: str) -> int:
    kind = _SPECIAL.get(name.lower(), _PLAIN)
    if type(name) is str and len(_KINDS) < _KINDS_MAX:
        _KINDS[name] = kind
    return kind


def frame(status: str, code: int, headers: list[tuple[str, str]], body_length: int | None, keep_alive: bool,
          version: str, head_only: bool, server_line: str, date: str, request_id: str | None) -> Framed:
    """Frame the head of a response whose headers `gracehttp.http.writer.check_headers`
    passed. `body_length` is the whole body's length when known before the head goes
    out; `date` the present Date line (a plan lives as long as it does)."""
    shape: tuple[Any, ...] | None = None
    if request_id is None:
        shape = (status, body_length is None, keep_alive, version, head_only, server_line, *map(_name, headers))
        plan = _PLANS.get(shape)
        if plan is not None and plan[0] is date:
            _, at, before, after, chunked, shared = plan
            length: int | None = None
            if at >= 0:  # the app's Content-Length: the length whatever the body holds
                value = headers[at][1]
                if value.isdigit():
                    length = int(value)
                    if body_length is None or body_length >= length:
                        return render_head(status, headers, before + after), length, chunked, keep_alive, shared
                # else not a number (refused below), or a body that ends short of it
            elif body_length is not None:
                line = f"Content-Length: {body_length}\r\n"
                return render_head(status, headers, before + line + after), body_length, False, keep_alive, shared
            else:
                return render_head(status, headers, before + after), None, chunked, keep_alive, shared
    return _decide(status, code, headers, body_length, keep_alive, version, head_only, server_line, date,
                   request_id, shape)


def _decide(status: str, code: int, headers: list[tuple[str, str]], body_length: int | None, keep_alive: bool,
            version: str, head_only: bool, server_line: str, date: str, request_id: str | None,
            shape: tuple[Any, ...] | None) -> Framed:
    """Decide from every header, and keep the decision by `shape` when no value changed it."""
    length: int | None = None
    shared = True
    # No Content-Length in a 1xx or 204 (RFC 9110 section 8.6); a 304's is the app's
    # word for the length the 200 would have had, so it stays.
    drop_length = code == 204 or code < 200
    own_date = own_server = own_id = drop = False
    at = -1
    lengths = 0
    kinds = _KINDS
    for index, (name, value) in enumerate(headers):
        kind = kinds.get(name)
        if kind is None:
            kind = _kind(name)
        if kind:  # one the server reads, drops or refuses (most are sent as they are)
            if kind == _LENGTH:
                if not value.isdigit():
                    raise HeaderError(f"bad Content-Length {value!r}")
                length = int(value)
                at = index
                lengths += 1
                drop = drop or drop_length
            elif kind == _CONNECTION:
                if "close" in value.lower():
                    keep_alive = False
                drop = True  # the server's to say: not sent as the app gave it
            elif kind == _HOP_BY_HOP:
                raise HeaderError(f"hop-by-hop header {name!r} is the server's to set (PEP 3333)")
            elif kind == _DATE:
                own_date = True
            elif kind == _SERVER:
                own_server = True
            elif kind == _COOKIE:
                shared = False
            else:
                own_id = True
    kept = keep_alive
    if drop:
        dropped = (_CONNECTION, _LENGTH) if drop_length else (_CONNECTION,)
        headers = [(n, v) for n, v in headers if _SPECIAL.get(n.lower()) not in dropped]
    # The app's own Date or Server wins; the server adds its own only where it set none.
    before = "" if own_server else server_line
    if not own_date:
        before += date
    if request_id is not None and not own_id:
        before += f"X-Request-ID: {request_id}\r\n"
    after = ""
    line = ""
    chunked = False
    no_body = code in NO_BODY_STATUSES or code < 200
    if length is not None and body_length is not None and body_length < length and not no_body and not head_only:
        # The whole body is known and ends short of the app's Content-Length: the
        # client can only tell by the close, so say so in this head.
        keep_alive = False
    if length is None and body_length is not None and not no_body:
        length = body_length
        line = f"Content-Length: {length}\r\n"
    if no_body:
        length = 0
    elif length is None:
        if version == "HTTP/1.1":
            if not head_only:
                chunked = True
                after = "Transfer-Encoding: chunked\r\n"
        else:
            keep_alive = False
    if not keep_alive:
        after += "Connection: close\r\n"
    elif version == "HTTP/1.0":
        after += "Connection: keep-alive\r\n"
    if shape is not None and not drop and not no_body and not head_only and keep_alive == kept and lengths <= 1:
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        _PLANS[shape] = (date, at, before, after, chunked, shared)
    return render_head(status, headers, before + line + after), length, chunked, keep_alive, shared
