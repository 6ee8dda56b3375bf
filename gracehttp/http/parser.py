"""HTTP/1.1 request head parsing on bytes (chunked bodies: `gracehttp.http.chunked`).

Bottom layer: imports only `gracehttp.errors`; never touches a socket, so tests
feed it one byte at a time or at every split point.

Every refusal is a `ProtocolError` carrying its HTTP status (docs/http.rst lists them) and a
short reason slug. The rules follow RFC 9112 strictly where leniency has been a
request-smuggling vector (gunicorn, waitress and cheroot advisories): CRLF line
endings only, no obsolete line folding, no whitespace before the colon, one
framing header, a single ``chunked`` transfer coding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gracehttp.errors import ProtocolError

_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Bytes allowed anywhere in a head: VCHAR, obs-text, SP, HTAB and the CR/LF of
# line endings (whose pairing is checked separately). Everything else is a CTL.
HEAD_OK = bytes([9, 10, 13, *range(0x20, 0x7F), *range(0x80, 0x100)])

#: Empty lines tolerated before a request line (RFC 9112 section 2.2).
MAX_LEADING_CRLF = 8

#: A Host value: ``uri-host [ ":" port ]`` (RFC 9112 section 3.2, RFC 3986 section 3.2.2):
#: an IP literal in brackets, or a reg-name (an IPv4 address is one too); empty is allowed.
_HOST = re.compile(
    rb"(?:\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]"
    rb"|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?")
#: Host values already found valid: a server sees the same few on every request, and a
#: set lookup costs a tenth of the match. Bounded, so random hosts cannot grow it.
_VALID_HOSTS: set[bytes] = set()
_VALID_HOSTS_MAX = 256
#: Request lines and header lines parsed before, with what they parsed to: clients send
#: the same lines again and again (the same Host, User-Agent, Accept; a health check's
#: or an API's same few paths), and a lookup costs a fraction of the checks. Parsing is
#: a pure function of a line's bytes, so an entry is valid for ever; only lines that
#: passed are kept, short ones, and only so many, so that a client sending random lines
#: costs memory once and then just misses.
_LINES_MAX = 1024
_LINE_CACHED_LEN = 256
_REQUEST_LINES: dict[bytes, tuple[str, bytes, str, bytes, bytes]] = {}
_FIELDS: dict[bytes, tuple[tuple[bytes, bytes], int]] = {}
#: The header fields the parser reads itself, by lower-case name (any other is 0).
_F_HOST, _F_CONNECTION, _F_CONTENT_LENGTH, _F_CONTENT_TYPE, _F_TRANSFER_ENCODING, _F_EXPECT = range(1, 7)
_FIELD_KINDS = {b"host": _F_HOST, b"connection": _F_CONNECTION, b"content-length": _F_CONTENT_LENGTH,
                b"content-type": _F_CONTENT_TYPE, b"transfer-encoding": _F_TRANSFER_ENCODING,
                b"expect": _F_EXPECT}


@dataclass(frozen=True)
class Limits:
    """The parser's limits; defaults match `Config`."""

    max_request_line: int = 8192
    max_header_bytes: int = 65536
    max_header_count: int = 100
    max_body_bytes: int | None = None
    #: Whole heads parsed under these limits, and what they parsed to (see `parse_head`).
    heads: dict[bytes, RequestHead] = field(default_factory=dict, compare=False, hash=False, repr=False)


class RequestHead:
    """A parsed request line and header block; the body is framed by the fields below."""

    __slots__ = (
        "chunked",
        "content_length",
        "environ",
        "expect_continue",
        "headers",
        "keep_alive",
        "kept",
        "method",
        "path",
        "query",
        "target",
        "version",
    )

    def __init__(
        self, method: str, target: bytes, path: bytes, query: bytes, version: str,
        headers: list[tuple[bytes, bytes]], keep_alive: bool,
        content_length: int | None, chunked: bool, expect_continue: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        #: What the WSGI layer derives from this head alone, kept with it for the next
        #: request that sends the same head (`gracehttp.wsgi.build_environ`).
        self.environ: Any = None
        #: Kept by the parser (`parse_head`): the next request sending these bytes gets
        #: this very object, which is worth keeping things for.
        self.kept = False

    def __repr__(self) -> str:
        return f"RequestHead({self.method} {self.target!r} {self.version})"


def bad_request(reason: str, detail: str) -> ProtocolError:
    return ProtocolError(400, reason, detail)


def find_head_end(buf: bytes | bytearray, limits: Limits, start: int = 0) -> int:
    """Return the index just past the blank line ending the head, or -1 if incomplete.

    `start`: where to begin looking for the blank line, when the bytes before it
    were searched already (a head arriving in many pieces is then scanned once).
    Raises 414/431 as soon as the bytes received prove a limit is exceeded, so a
    client cannot make the server buffer more than the limits allow.
    """
    end = buf.find(b"\r\n\r\n", start)
    if end >= 0:
        return end + 4
    line_end = buf.find(b"\n")
    if line_end < 0:
        if len(buf) > limits.max_request_line + MAX_LEADING_CRLF * 2:
            raise ProtocolError(414, "uri_too_long", "request line too long")
        return -1
    if line_end == 0 or buf[line_end - 1] != 13:
        raise bad_request("bare_lf", "line ending without CR")
    if len(buf) > limits.max_request_line + limits.max_header_bytes + 4 + MAX_LEADING_CRLF * 2:
        raise ProtocolError(431, "headers_too_large", "header section too large")
    return -1


#: Heads this long or shorter are kept (`Limits.heads`), this many per `Limits`.
_HEAD_CACHED_LEN = 1024
_HEADS_MAX = 64


def parse_head(head: bytes, limits: Limits) -> RequestHead:
    """Parse a complete head (request line through the blank line) into a `RequestHead`.

    A head sent before is not parsed again: a keep-alive client, a load balancer's
    health check or a benchmark sends the very same bytes request after request.
    `RequestHead` is never changed once made, so the same one serves them all. Only
    heads that passed are kept, short ones, under the limits they passed (another
    site's may differ), and a full cache is emptied, so that it follows what clients
    send now rather than what came first, and a client sending random heads costs
    a dict lookup per request.
    """
    cache = limits.heads
    parsed = cache.get(head)
    if parsed is None:
        parsed = _parse_head(head, limits)
        if len(head) <= _HEAD_CACHED_LEN:
            if len(cache) >= _HEADS_MAX:
                cache.clear()
            cache[head] = parsed
            parsed.kept = True
    return parsed


def _parse_head(head: bytes, limits: Limits) -> RequestHead:
    if head[:2] == b"\r\n":
        start = 0
        while head.startswith(b"\r\n", start) and start < MAX_LEADING_CRLF * 2:
            start += 2
        head = head[start:]
    if head.translate(None, HEAD_OK):
        raise bad_request("bad_char", "control character in request head")
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        raise bad_request("bare_cr_lf", "CR or LF outside a CRLF line ending")
    lines = head.split(b"\r\n")
    del lines[-2:]  # the head ends with an empty line; split leaves two empties
    if not lines:
        raise bad_request("bad_request_line", "empty request")
    request_line = lines[0]
    if len(request_line) > limits.max_request_line:
        raise ProtocolError(414, "uri_too_long", "request line too long")
    parsed = _REQUEST_LINES.get(request_line)
    if parsed is None:
        method, target, version = _parse_request_line(request_line)
    else:
        method, target, version, path, query = parsed
    if len(lines) - 1 > limits.max_header_count:
        raise ProtocolError(431, "too_many_headers", "too many header fields")
    if len(head) - len(request_line) - 4 > limits.max_header_bytes:
        raise ProtocolError(431, "headers_too_large", "header section too large")

    headers: list[tuple[bytes, bytes]] = []
    content_lengths: list[bytes] = []
    transfer_codings: list[bytes] = []
    connection = b""
    expect = b""
    hosts = 0
    host = b""
    content_types = 0
    fields = _FIELDS
    for line in lines[1:]:
        field = fields.get(line)
        if field is None:
            field = _field(line)
        pair, kind = field
        headers.append(pair)
        if kind:  # one the server reads itself
            value = pair[1]
            if kind == _F_HOST:
                hosts += 1
                host = value
            elif kind == _F_CONNECTION:
                connection += b"," + value.lower()
            elif kind == _F_CONTENT_LENGTH:
                content_lengths.append(value)
            elif kind == _F_CONTENT_TYPE:
                content_types += 1
            elif kind == _F_TRANSFER_ENCODING:
                transfer_codings.extend(c.strip(b" \t").lower() for c in value.split(b","))
            else:
                expect = value.lower()

    if hosts > 1 or (version == "HTTP/1.1" and hosts != 1):
        raise bad_request("bad_host", "an HTTP/1.1 request needs exactly one Host (RFC 9112 section 3.2)")
    if host and host not in _VALID_HOSTS:
        if _HOST.fullmatch(host) is None:
            raise bad_request("bad_host", "invalid Host (RFC 9112 section 3.2)")
        if len(_VALID_HOSTS) < _VALID_HOSTS_MAX:
            _VALID_HOSTS.add(host)
    if content_types > 1:
        raise bad_request("bad_header", "several Content-Type fields")
    chunked = False
    content_length: int | None = None
    if transfer_codings:
        if content_lengths:
            raise bad_request("te_and_cl", "both Content-Length and Transfer-Encoding")
        if version == "HTTP/1.0":
            raise bad_request("te_http10", "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 section 6.1)")
        if transfer_codings != [b"chunked"]:
            raise ProtocolError(501, "unsupported_te", "only a single 'chunked' transfer coding is supported")
        chunked = True
    elif content_lengths:
        content_length = _parse_content_length(content_lengths)
        if limits.max_body_bytes is not None and content_length > limits.max_body_bytes:
            raise ProtocolError(413, "body_too_large", "request body too large")

    if connection:
        tokens = {t.strip(b" \t") for t in connection.split(b",")}
        keep_alive = b"close" not in tokens and (version == "HTTP/1.1" or b"keep-alive" in tokens)
    else:
        keep_alive = version == "HTTP/1.1"
    if parsed is None:  # the target's checks come last, as they always have (which error a bad head gets)
        path, query = _split_target(method, target)
        if len(request_line) <= _LINE_CACHED_LEN and len(_REQUEST_LINES) < _LINES_MAX:
            _REQUEST_LINES[request_line] = (method, target, version, path, query)
    return RequestHead(
        method, target, path, query, version, headers, keep_alive, content_length,
        chunked, expect == b"100-continue" and version == "HTTP/1.1",
    )


def _field(line: bytes) -> tuple[tuple[bytes, bytes], int]:
    """A header line's (name, value) pair and what the server makes of it (`_FIELD_KINDS`),
    kept for the next time the same line comes (`_FIELDS`)."""
    pair = parse_field_line(line)
    field = (pair, _FIELD_KINDS.get(pair[0].lower(), 0))
    if len(line) <= _LINE_CACHED_LEN and len(_FIELDS) < _LINES_MAX:
        _FIELDS[line] = field
    return field


def _parse_request_line(line: bytes) -> tuple[str, bytes, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or b"\t" in line:
        raise bad_request("bad_request_line", "malformed request line")
    method, target, version = parts
    if not method or method.translate(None, _TOKEN):
        raise bad_request("bad_method", "malformed method")
    if not target:
        raise bad_request("bad_request_line", "empty request target")
    if len(version) != 8 or not version.startswith(b"HTTP/") or version[6] != 0x2E \
            or not version[5:6].isdigit() or not version[7:8].isdigit():
        raise bad_request("bad_version", "malformed HTTP version")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise ProtocolError(505, "version_not_supported", "HTTP version not supported")
    return method.decode("ascii"), target, version.decode("ascii")


def _split_target(method: str, target: bytes) -> tuple[bytes, bytes]:
    """Return (path, query) for the four request-target forms (RFC 9112 section 3.2)."""
    if target[0] == 0x2F:  # origin-form
        rest = target
    elif target == b"*":
        if method != "OPTIONS":
            raise bad_request("bad_target", "'*' is only for OPTIONS")
        return b"*", b""
    elif method == "CONNECT":
        if b"/" in target or b"?" in target:
            raise bad_request("bad_target", "CONNECT needs host:port")
        return b"", b""
    else:
        scheme, sep, after = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https") or not after:
            raise bad_request("bad_target", "request target is not origin- or absolute-form")
        slash = min((i for i in (after.find(b"/"), after.find(b"?")) if i >= 0), default=-1)
        rest = after[slash:] if slash >= 0 else b"/"
        if rest[:1] == b"?":
            rest = b"/" + rest
    if method == "CONNECT":
        raise bad_request("bad_target", "CONNECT needs authority-form")
    rest = rest.partition(b"#")[0]
    path, _, query = rest.partition(b"?")
    return path, query


def parse_field_line(line: bytes) -> tuple[bytes, bytes]:
    """Split one header (or trailer) line into name and trimmed value."""
    if not line or line[0] in (0x20, 0x09):
        raise bad_request("obs_fold", "obsolete line folding is not accepted")
    name, sep, value = line.partition(b":")
    if not sep or not name:
        raise bad_request("bad_header", "header line without a name and colon")
    if name.translate(None, _TOKEN):
        raise bad_request("bad_header_name", "invalid character in header name")
    return name, value.strip(b" \t")


def _parse_content_length(values: list[bytes]) -> int:
    first = values[0]
    for value in values:
        if value != first:
            raise bad_request("bad_content_length", "several differing Content-Length fields")
    if not first.isdigit() or len(first) > 18:
        raise bad_request("bad_content_length", "Content-Length is not a decimal number")
    return int(first)
