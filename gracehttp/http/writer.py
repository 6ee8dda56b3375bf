"""HTTP/1.1 response framing on bytes: status lines, header blocks, chunks, error pages.

Bottom layer: imports only `gracehttp.errors`; no sockets.

Header values from the app are checked here, once per response, because a CR or
LF in a header is response splitting (PEP 3333 forbids it; waitress and
werkzeug refuse it too): the whole block is rejected, never partly sent.
"""

from __future__ import annotations

import time
from http import HTTPStatus

_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VALUE_CTL = bytes([*range(0, 9), *range(10, 32), 127])

#: Reason phrases: RFC 9110's names where they differ from older ones that Python's
#: `HTTPStatus` keeps on some versions ("Request Entity Too Large", "Request-URI Too Long").
REASONS: dict[int, str] = {
    **{s.value: s.phrase for s in HTTPStatus},
    413: "Content Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable",
    421: "Misdirected Request", 422: "Unprocessable Content",
}
LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: Statuses whose responses never carry a body (RFC 9110 section 6.4.1).
NO_BODY_STATUSES = frozenset({204, 304})

_date_cache: tuple[int, str] = (0, "")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(now: int | None = None) -> str:
    """The Date header value (RFC 9110 IMF-fixdate) of second `now` (the present one if
    None), formatted at most once a second.

    Spelled out here rather than with strftime, whose day and month names follow
    the locale, or email.utils, which is slow to import.
    """
    global _date_cache
    if now is None:
        now = int(time.time())
    if _date_cache[0] != now:
        t = time.gmtime(now)
        _date_cache = (now, f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
                             f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
    return _date_cache[1]


def http_date_line() -> str:
    """The whole ``Date`` header line, made at most once a second: until the second it
    was made for ends (or the clock is set back past its start), the same string,
    which `gracehttp.response` compares by identity."""
    global _date_line, _date_line_until
    now = _now()
    if not _date_line_until - 1.0 <= now < _date_line_until:
        second = int(now)  # one clock read: the line and its lifetime are of the same second
        _date_line, _date_line_until = f"Date: {http_date(second)}\r\n", second + 1.0
    return _date_line


_now = time.time
_date_line = ""
_date_line_until = 0.0


class HeaderError(ValueError):
    """The app produced a header that must not be sent."""


#: Header pairs found valid before: apps send the same few again and again, so each is
#: checked once (bounded in count and value length, so that values an app makes up per
#: response cannot grow it without limit).
_CHECKED: set[tuple[str, str]] = set()
_CHECKED_MAX = 4096
#: Longer values (cookies, tokens) are rarely sent twice: checked each time, not kept.
_CHECKED_VALUE = 128
#: Names whose values are a client's secrets (a session cookie): never kept, however short.
_UNKEPT = frozenset({"set-cookie"})


#: Header names found valid before (names are few; values may be new per response).
_NAMES: set[str] = set()
_NAMES_MAX = 1024


def check_headers(headers: list[tuple[str, str]]) -> None:
    """Raise `HeaderError` for a name that is not a token or a value with a CTL."""
    checked = _CHECKED
    try:
        if checked.issuperset(headers):  # the usual case: every pair checked before, one C loop
            return
    except TypeError:  # a pair that is not hashable: the loop below says what is wrong
        pass
    for pair in headers:  # in the app's order: of several bad pairs, the first is named
        try:
            if pair in checked:
                continue
        except TypeError:  # not hashable: not a pair of str, which the checks below say
            pass
        name, value = pair
        if not (type(name) is str and type(value) is str and name in _NAMES and value.isascii()
                and value.isprintable()):
            # Else a known name with a value made per response (a port, an id, a length):
            # printable ASCII is 0x20-0x7E, which has no CTL. A tab, or any other byte, and
            # any name not seen before, take the full check.
            if not isinstance(name, str) or not isinstance(value, str):
                raise HeaderError(f"header {name!r} is not a pair of str")
            try:
                bname = name.encode("latin-1")
                bvalue = value.encode("latin-1")
            except UnicodeEncodeError:
                raise HeaderError(f"header {name!r} is not latin-1") from None
            if not bname or bname.translate(None, _TOKEN):
                raise HeaderError(f"invalid header name {name!r}")
            if len(bvalue.translate(None, _VALUE_CTL)) != len(bvalue):
                raise HeaderError(f"control character (CR/LF?) in header {name!r}")
            if type(name) is str and len(_NAMES) < _NAMES_MAX:
                _NAMES.add(name)
        if type(pair) is tuple and type(name) is str and type(value) is str and len(value) <= _CHECKED_VALUE \
                and name.lower() not in _UNKEPT:
            if len(checked) >= _CHECKED_MAX:
                checked.clear()  # values made per response filled it: keep what is sent now
            checked.add(pair)  # so the next response with the same pairs takes `issuperset`


#: Status strings checked before, and their codes (see `status_code`).
STATUS_CODES: dict[str, int] = {}


def status_code(status: str) -> int:
    """The numeric code of a WSGI status string such as ``"200 OK"``; checked once per
    distinct string (apps reuse a handful), so the hot path is a dict lookup."""
    known = STATUS_CODES.get(status)
    if known is not None:
        return known
    code = status[:3]
    if len(status) < 4 or status[3] != " " or not code.isdigit() or not 100 <= int(code) <= 599:
        raise HeaderError(f"malformed status {status!r}")
    reason = status[4:].encode("latin-1", "replace")
    if len(reason.translate(None, _VALUE_CTL)) != len(reason):  # "200 OK\r\nSet-Cookie: ..."
        raise HeaderError(f"control character in status {status!r}")
    if len(STATUS_CODES) < 256:
        STATUS_CODES[status] = int(code)
    return int(code)


def render_head(status: str, headers: list[tuple[str, str]], extra: str) -> bytes:
    """The status line and header block; `extra` holds server-added header lines.

    Joined, not formatted: a join writes what a str holds, which is what
    `check_headers` checked and what the caches compare, where ``%s`` or an
    f-string would write a subclass's ``__str__`` (``Kind.JSON`` for a ``(str,
    Enum)`` member holding ``application/json``). Each line is joined in C."""
    lines = "\r\n".join(map(": ".join, headers))
    if lines:
        lines += "\r\n"
    return ("HTTP/1.1 " + status + "\r\n" + lines + extra + "\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%X\r\n%s\r\n" % (len(data), data)


def simple_response(
    status: int, body: bytes, *, content_type: str = "text/plain; charset=utf-8",
    close: bool = False, head_only: bool = False, extra: tuple[tuple[str, str], ...] = (),
    server: str | None = None,
) -> bytes:
    """A complete response with a fixed body: error pages and health answers."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"]
    if server:
        lines.append(f"Server: {server}\r\n")
    lines.append(f"Date: {http_date()}\r\n")
    lines.append(f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n")
    lines.extend(f"{k}: {v}\r\n" for k, v in extra)
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    return head if head_only else head + body


def error_response(status: int, detail: str, *, server: str | None = None, close: bool = True,
                   extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    body = f"{status} {REASONS.get(status, 'Error')}: {detail}\n".encode("utf-8", "replace")
    return simple_response(status, body, close=close, server=server, extra=extra)
