"""Incremental decoding of a chunked request body (RFC 9112 section 7.1), on bytes.

Bottom layer: imports only the head parser (for the field-line rules a trailer
shares with a header) and `gracehttp.errors`; like the parser it never touches a
socket, so tests feed it one byte at a time.
"""

from __future__ import annotations

import re

from gracehttp.errors import ProtocolError
from gracehttp.http.parser import HEAD_OK, bad_request, parse_field_line

_HEX = b"0123456789abcdefABCDEF"
#: A chunk-size line longer than this is refused; real clients send < 20 bytes,
#: the slack is for chunk extensions.
MAX_CHUNK_LINE = 4096
#: 16 hex digits cover any size a 64-bit peer can mean; more is an attack.
MAX_CHUNK_SIZE_DIGITS = 16
_TOKEN_RE = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED_RE = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
#: The chunk extensions after a chunk size, from their first ";" (RFC 9112 section 7.1.1):
#: ``*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )``.
_CHUNK_EXTENSIONS = re.compile(
    rb"(?:[ \t]*;[ \t]*" + _TOKEN_RE + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN_RE + rb"|" + _QUOTED_RE + rb"))?)*")
#: Fields that must not appear in a chunked trailer: they would change how the
#: message is framed or routed after the fact (RFC 9110 section 6.5.1).
FORBIDDEN_TRAILERS = frozenset(
    {b"content-length", b"transfer-encoding", b"host", b"content-type", b"content-encoding",
     b"content-range", b"trailer", b"authorization", b"set-cookie", b"cookie", b"expect",
     b"te", b"connection", b"keep-alive", b"upgrade"}
)

_DATA, _DATA_CRLF, _SIZE, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Incremental decoder for a chunked body (RFC 9112 section 7.1).

    `feed` takes whatever bytes arrived and returns the body bytes they complete.
    After `done`, `leftover` holds bytes past the body (a pipelined request).
    """

    __slots__ = ("_buf", "_max_trailer", "_remaining", "_state", "_trailer_bytes", "done", "trailers")

    def __init__(self, max_trailer_bytes: int = 65536) -> None:
        self._buf = bytearray()
        self._state = _SIZE
        self._remaining = 0
        self._trailer_bytes = 0
        self._max_trailer = max_trailer_bytes
        self.trailers: list[tuple[bytes, bytes]] = []
        self.done = False

    @property
    def leftover(self) -> bytes:
        return bytes(self._buf) if self.done else b""

    def feed(self, data: bytes) -> bytes:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        while True:
            state = self._state
            if state == _DATA:
                n = min(self._remaining, len(buf) - pos)
                if n == 0:
                    break
                out.append(bytes(buf[pos:pos + n]))
                pos += n
                self._remaining -= n
                if self._remaining == 0:
                    self._state = _DATA_CRLF
            elif state in (_SIZE, _TRAILER):
                i = buf.find(b"\r\n", pos)
                if i < 0:
                    if state == _SIZE and len(buf) - pos > MAX_CHUNK_LINE:
                        raise bad_request("bad_chunk", "chunk size line too long")
                    break
                line = bytes(buf[pos:i])
                pos = i + 2
                if state == _SIZE:
                    self._remaining = _parse_chunk_size(line)
                    self._state = _DATA if self._remaining else _TRAILER
                elif not line:
                    self._state = _DONE
                    self.done = True
                    break
                else:
                    self._add_trailer(line)
            elif state == _DATA_CRLF:
                if len(buf) - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise bad_request("bad_chunk", "chunk data not followed by CRLF")
                pos += 2
                self._state = _SIZE
            else:
                break
        del buf[:pos]
        if self._state == _TRAILER and len(buf) > self._max_trailer:
            raise ProtocolError(431, "headers_too_large", "trailer section too large")
        return b"".join(out)

    def _add_trailer(self, line: bytes) -> None:
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > self._max_trailer:
            raise ProtocolError(431, "headers_too_large", "trailer section too large")
        if line.translate(None, HEAD_OK) or b"\r" in line or b"\n" in line:
            raise bad_request("bad_char", "control character in trailer")
        name, value = parse_field_line(line)
        if name.lower() in FORBIDDEN_TRAILERS:
            raise bad_request("forbidden_trailer", f"{name.decode('ascii')} is not allowed in a trailer")
        self.trailers.append((name, value))


def _parse_chunk_size(line: bytes) -> int:
    if b"\r" in line or b"\n" in line or line.translate(None, HEAD_OK):
        raise bad_request("bad_chunk", "control character in chunk size line")
    size, semi, ext = line.partition(b";")
    if semi:
        size = size.rstrip(b" \t")  # BWS before a chunk extension (RFC 9112 section 7.1.1)
        if _CHUNK_EXTENSIONS.fullmatch(semi + ext) is None:
            raise bad_request("bad_chunk", "malformed chunk extension")
    if not size or len(size) > MAX_CHUNK_SIZE_DIGITS or size.translate(None, _HEX):
        raise bad_request("bad_chunk", "malformed chunk size")
    return int(size, 16)
