"""Runs one WSGI call and frames its response: `start_response`, ``write()``, the body.

Middle layer: imports `http.writer`, `http.parser`, `outlet` and `wsgi`. Output
goes through the connection's `gracehttp.outlet.Outlet`: `send` for a streamed
response (it may wait), `send_final` for a complete one (the head and whole body,
handed over at once) and `send_file` for a file (the head, then a range of the
file's descriptor). So the connection owns the socket, and decides how a complete
response reaches a slow client, while this module owns PEP 3333.

Framing, decided when the headers go out: the app's Content-Length if it gave
one; a computed Content-Length when the whole body is one known block; chunked
for HTTP/1.1; otherwise the connection closes after the body (HTTP/1.0).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol

from gracehttp.http.heads import frame
from gracehttp.http.parser import RequestHead
from gracehttp.http.writer import (
    LAST_CHUNK,
    STATUS_CODES,
    HeaderError,
    check_headers,
    chunk,
    http_date_line,
    status_code,
)
from gracehttp.outlet import Outlet
from gracehttp.wsgi import FileWrapper


class Meter(Protocol):
    """What counts answered requests (`gracehttp.metrics.Metrics`)."""

    def observe(self, method: str, status: int, seconds: float, body_bytes: int = 0) -> None: ...


ExcInfo = tuple[type[BaseException], BaseException, TracebackType]
#: Response heads framed before, by what they were framed from (`Responder._frame`):
#: (the Date line they carry, the head, length, chunked, keep-alive).
_FRAMED: dict[tuple[Any, ...], tuple[str, bytes, int | None, bool, bool]] = {}
_FRAMED_MAX = 256


class Responder:
    """The response side of one request; `keep_alive` says whether the connection may be reused."""

    __slots__ = (
        "_closing",
        "_out",
        "chunked",
        "code",
        "head_only",
        "headers",
        "headers_sent",
        "keep_alive",
        "length",
        "meter",
        "method",
        "overran",
        "request_id",
        "same",
        "sent",
        "started",
        "status",
        "version",
    )

    def __init__(self, out: Outlet, head: RequestHead, keep_alive: bool, closing: Callable[[], bool] | None = None,
                 meter: Meter | None = None, started: float = 0.0, request_id: str | None = None) -> None:
        """`closing`: true once the response must say Connection: close for a reason of
        this request (a request body still arriving), besides the server's
        (`Outlet.server`). `meter` counts the request (`count`), timed
        from `started` (``time.perf_counter``); `request_id` is sent as X-Request-ID unless
        the app sends its own."""
        self._out = out
        self.reset(head, keep_alive, closing, meter, started, request_id)

    def reset(self, head: RequestHead, keep_alive: bool, closing: Callable[[], bool] | None = None,
              meter: Meter | None = None, started: float = 0.0, request_id: str | None = None) -> None:
        """Begin the response to a new request on the same connection, as `__init__` would
        (a connection's requests come one at a time, so its exchange keeps one responder:
        one object less per request)."""
        self._closing = closing
        self.method = method = head.method
        self.head_only = method == "HEAD"
        self.version = head.version
        self.keep_alive = keep_alive
        self.status = ""
        self.code = 0
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.chunked = False
        self.length: int | None = None
        self.sent = 0
        self.overran = False
        #: Counts the request (`count`) just before the response's last bytes are handed
        #: over, where they are known to be the last, so a scrape made once the client has
        #: its answer includes it; not for a streamed body without a length
        #: (close-delimited), which ends when its iterable does and is counted by the owner.
        self.meter = meter
        self.started = started
        self.request_id = request_id

    def forget_body(self) -> None:
        """The request is over: drop its body (held through `closing`), which an idle
        connection must not keep until its next request resets this responder."""
        self._closing = None

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: ExcInfo | None = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame cycle (PEP 3333)
        elif self.status:
            raise AssertionError("start_response called twice without exc_info")
        if not isinstance(status, str):
            raise HeaderError(f"status must be str, got {type(status).__name__}")
        self.code = STATUS_CODES.get(status) or status_code(status)
        headers = list(headers)
        # The same pairs as the connection's last response (checked then, and immutable)
        # need no check: one list comparison instead of a set lookup per pair.
        self.same = same = headers == self._out.last_headers
        if not same:
            check_headers(headers)
        self.status = status
        self.headers = headers
        return self.write

    def _frame(self, body_length: int | None) -> bytes:
        """Choose the framing and render the head (called once, when output starts).

        An app answers most requests with the same status and headers, so the head it
        framed to is kept (`_FRAMED`) for as long as its Date line holds (a second), with
        what framing it chose; a response with a request id is never kept (the id is new).
        The connection's last one is kept on its `Outlet` too: a response with the same
        pairs (`same`, found by `start_response`) and the same framing inputs takes it
        without building and hashing the key. A head not kept is framed by
        `gracehttp.http.heads.frame`, which keeps its decision by the header names, so a
        response whose values alone are new (a length, a cookie, a new client's port)
        is rendered, not decided again.
        """
        if not self.status:
            raise AssertionError("the app returned without calling start_response")
        if self.keep_alive and (self._out.server.closing or (self._closing is not None and self._closing())):
            self.keep_alive = False  # the drain began while the app ran: tell the client now
        key: tuple[Any, ...] | None = None
        framed: tuple[str, bytes, int | None, bool, bool] | None = None
        head: bytes
        date = http_date_line()
        out = self._out
        status, keep_alive = self.status, self.keep_alive
        inputs = (status, body_length, keep_alive, self.version, self.head_only)
        if self.request_id is None:
            if self.same:  # the pairs of the connection's last response: is it the same response?
                last = out.last_framed
                if last is not None and last[0] is date and last[1] == inputs:
                    head, self.length, self.chunked, self.keep_alive = last[2]
                    self.headers_sent = True
                    return head
            key = (*inputs, out.server_line, *self.headers)
            try:
                framed = _FRAMED.get(key)
            except TypeError:  # a header pair that is not a tuple (a list): nothing kept
                framed = key = None
            if framed is not None and framed[0] is date:
                _, head, self.length, self.chunked, self.keep_alive = framed
            else:
                framed = None
        if framed is None:
            head, self.length, self.chunked, self.keep_alive, shared = frame(
                status, self.code, self.headers, body_length, keep_alive, self.version, self.head_only,
                out.server_line, date, self.request_id)
            if key is not None and shared:
                if len(_FRAMED) >= _FRAMED_MAX:
                    _FRAMED.clear()
                _FRAMED[key] = (date, head, self.length, self.chunked, self.keep_alive)
        if key is not None:  # pairs all hashable, so tuples: kept for the connection's next response
            out.last_headers = self.headers
            out.last_framed = (date, inputs, (head, self.length, self.chunked, self.keep_alive))
        self.headers_sent = True
        return head

    def write(self, data: bytes) -> None:
        """The ``write()`` callable, and the path for every body block."""
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"WSGI body blocks must be bytes, got {type(data).__name__}")
        last = False
        if not self.headers_sent:
            if not data:
                return  # PEP 3333: headers wait for the first non-empty block
            out = self._frame(None)
        else:
            out = b""
        if data and not self.head_only and self.length != 0:
            if self.chunked:
                self.sent += len(data)  # the body's bytes, not its framing
                data = chunk(data)
            elif self.length is not None and self.sent + len(data) >= self.length:
                if self.sent + len(data) > self.length:
                    data = data[: self.length - self.sent]  # never send past Content-Length
                    self._overrun()
                if data:  # the block that completes the length is the last
                    self.sent += len(data)
                    self._ending()
                    last = not self.keep_alive  # and the connection closes after it
            else:
                self.sent += len(data)
            out += data
        if out:
            if last:
                self._out.send(out, True)
            else:
                self._out.send(out)

    def _overrun(self) -> None:
        """The app yields more than its Content-Length: its framing cannot be trusted, so
        the connection is closed after what was promised (the caller logs it)."""
        self.overran = True
        self.keep_alive = False

    def send_whole(self, body: bytes) -> None:
        """Head and a body known in full, in one send: the common single-block response."""
        head = self._frame(len(body))
        if self.head_only or self.length == 0:
            self._final(head)
            return
        if self.length is not None and len(body) > self.length:
            body = body[: self.length]
            self._overrun()
        self.sent = len(body)
        self._final(head + body)

    def _final(self, data: bytes) -> None:
        meter = self.meter
        if meter is not None:  # `count`, inlined: the path of nearly every response
            self.meter = None
            meter.observe(self.method, self.code, time.perf_counter() - self.started, self.sent)
        self._out.send_final(data, not self.keep_alive)

    def _ending(self) -> None:
        """The response's last bytes go next: count it now (see `meter`)."""
        if self.meter is not None:
            self.count(self.code)

    def count(self, status: int) -> None:
        """Count the request with the meter, once (nothing when there is none or it has)."""
        meter = self.meter
        if meter is not None:
            self.meter = None
            meter.observe(self.method, status, time.perf_counter() - self.started, self.sent)

    def send_file(self, wrapper: FileWrapper) -> bool:
        """Send a `FileWrapper` with sendfile; False when it must be iterated instead."""
        filelike = wrapper.filelike
        if self.headers_sent or not hasattr(filelike, "fileno"):
            return False
        try:
            fd = filelike.fileno()
            offset = filelike.tell()
            st = os.fstat(fd)
        except (OSError, ValueError, AttributeError):
            return False
        if not stat.S_ISREG(st.st_mode):
            return False  # a pipe or a socket has no size to frame by: iterated instead
        size = max(0, st.st_size - offset)
        head = self._frame(size)
        count = size if self.length is None else min(self.length, size)
        if self.head_only or self.length == 0 or count <= 0:
            self._final(head)
            return True
        self.sent = count
        self._ending()
        self._out.send_file(head, fd, offset, count)
        return True

    def finish(self) -> None:
        """End the body: the last chunk, and keep-alive only if the length was honoured."""
        if not self.headers_sent:
            self.send_whole(b"")
            return
        if self.chunked:
            self._ending()
            self._out.send(LAST_CHUNK)
        elif self.length is not None and self.sent < self.length and not self.head_only:
            self.keep_alive = False  # short body: the client can only tell by the close


def run_app(app: Callable[..., Iterable[bytes]], environ: dict[str, Any], responder: Responder) -> None:
    """Call the app and send its response; the iterable's ``close()`` always runs."""
    result = app(environ, responder.start_response)
    if type(result) is list and len(result) == 1 and type(result[0]) is bytes and not responder.headers_sent:
        responder.send_whole(result[0])  # the usual answer of a framework, and a list has no close()
        return
    try:
        if isinstance(result, (list, tuple)) and not responder.headers_sent:
            # The whole body is known: one head with its length and one hand-over, which
            # the connection may finish sending without this thread.
            if len(result) == 1:
                block = result[0]
                if not isinstance(block, (bytes, bytearray)):
                    raise TypeError(f"WSGI body blocks must be bytes, got {type(block).__name__}")
                responder.send_whole(block if type(block) is bytes else bytes(block))
                return
            for block in result:
                if not isinstance(block, (bytes, bytearray)):
                    raise TypeError(f"WSGI body blocks must be bytes, got {type(block).__name__}")
            responder.send_whole(b"".join(result))
            return
        if isinstance(result, FileWrapper) and responder.send_file(result):
            return
        write = responder.write
        for data in result:
            write(data)
        responder.finish()
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
