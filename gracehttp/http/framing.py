"""Request framing on bytes: where a head ends, and a body's bytes and its end.

Bottom layer: imports only the parser and decoder (`RequestHead`, `ChunkedDecoder`)
and `gracehttp.errors`; never touches a socket.

One `BodyFramer` frames one request body wherever its bytes travel: collected
while the connection is parked (`gracehttp.spool`), streamed to the app as it
reads ``wsgi.input`` (`gracehttp.wsgi.Body`), or both in turn when a large body
outgrows what the server collects before calling the app. Because both paths
feed the same framer, a body is framed once, with one size count against
``max_body_bytes``, and what follows it on the wire (a pipelined request) is
found in one place. See docs/architecture.rst, "Request bodies".
"""

from __future__ import annotations

from gracehttp.errors import ProtocolError
from gracehttp.http.chunked import ChunkedDecoder
from gracehttp.http.parser import MAX_LEADING_CRLF, Limits, RequestHead, find_head_end


class BodyFramer:
    """Frames one body, sized (``Content-Length``) or chunked.

    `feed` takes raw bytes as they arrive and returns the body bytes in them;
    `done` is set at the body's end, and `leftover` then holds the bytes past it.
    Raises `ProtocolError`: 400 for bad chunk framing, 413 past `max_body`.
    """

    __slots__ = ("_decoder", "_max", "_remaining", "done", "leftover", "received")

    def __init__(self, head: RequestHead | None, max_body: int | None = None,
                 max_trailer_bytes: int = 65536) -> None:
        chunked = head is not None and head.chunked
        self._decoder = ChunkedDecoder(max_trailer_bytes) if chunked else None
        self._remaining = 0 if head is None or chunked else (head.content_length or 0)
        self._max = max_body
        #: Body bytes framed so far (decoded, for a chunked body).
        self.received = 0
        #: Bytes past the end of the body: the start of a pipelined request.
        self.leftover = b""
        self.done = self._decoder is None and self._remaining == 0

    @property
    def trailers(self) -> list[tuple[bytes, bytes]]:
        return self._decoder.trailers if self._decoder is not None else []

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.leftover += data
            return b""
        if self._decoder is not None:
            body = self._decoder.feed(data)
            if self._decoder.done:
                self.done = True
                self.leftover = self._decoder.leftover
        else:
            body = data[:self._remaining]
            self._remaining -= len(body)
            if self._remaining == 0:
                self.done = True
                self.leftover = data[len(body):]
        if body:
            self.received += len(body)
            if self._max is not None and self.received > self._max:
                raise ProtocolError(413, "body_too_large", "request body too large")
        return body


class HeadScanner:
    """Finds the end of a request head in a buffer that grows as bytes arrive.

    Empty lines before the request line are dropped as they come (RFC 9112 section
    2.2), at most `MAX_LEADING_CRLF` of them, so a stray CRLF after a request leaves
    nothing of a request begun. Only the bytes added since the last look are
    searched (and the three before them, for a CRLFCRLF split across reads), so a
    head arriving a byte at a time costs linear time, not quadratic.
    """

    __slots__ = ("_blank_lines", "_scanned")

    def __init__(self) -> None:
        self._blank_lines = 0
        self._scanned = 0

    def find(self, buf: bytes, limits: Limits) -> tuple[bytes, int]:
        """(`buf` without leading empty lines, the index past the head's end or -1).
        Raises `ProtocolError` (400 too many empty lines, 414, 431)."""
        if buf[:2] == b"\r\n":
            i = 2
            while buf.startswith(b"\r\n", i) and i <= 2 * MAX_LEADING_CRLF:
                i += 2
            self._blank_lines += i // 2
            if self._blank_lines > MAX_LEADING_CRLF:
                raise ProtocolError(400, "bad_request_line", "too many empty lines")
            buf, self._scanned = buf[i:], 0
        end = buf.find(b"\r\n\r\n", self._scanned)  # the usual case, a whole head: no limit to check here
        if end >= 0:
            end += 4
        elif buf:
            end = find_head_end(buf, limits, self._scanned)
        if end >= 0:
            self._scanned = self._blank_lines = 0
        return buf, end

    def grew(self, looked_at: int) -> None:
        """`looked_at` bytes were searched without finding the end; more are coming."""
        self._scanned = max(0, looked_at - 3)
