"""PEP 3333 pieces that are not I/O: the environ, ``wsgi.input`` and ``wsgi.file_wrapper``.

Middle layer: imports `errors` and `http.parser`. The request body reads
through a `recv` callable given by the connection, so this module never sees a
socket and a test can drive it with a list of byte strings.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from gracehttp.errors import ProtocolError
from gracehttp.http.parser import ChunkedDecoder, RequestHead

Recv = Callable[[], bytes]

# Environ keys of header names seen before; bounded so that a client sending
# random names cannot grow it without limit.
_ENV_KEYS: dict[bytes, str | None] = {}
_ENV_KEYS_MAX = 2048
_SPECIAL = {b"CONTENT-TYPE": "CONTENT_TYPE", b"CONTENT-LENGTH": "CONTENT_LENGTH"}


def environ_key(name: bytes) -> str | None:
    """``HTTP_X_FOO`` for ``X-Foo``; None for names with ``_``, which are dropped.

    Dropping them (as nginx, gunicorn and werkzeug do) stops ``X_Forwarded_For``
    from masquerading as ``X-Forwarded-For`` after the CGI name mangling.
    """
    key = _ENV_KEYS.get(name, "")
    if key != "":
        return key
    upper = name.upper()
    if b"_" in upper:
        result: str | None = None
    else:
        result = _SPECIAL.get(upper) or "HTTP_" + upper.decode("ascii").replace("-", "_")
    if len(_ENV_KEYS) < _ENV_KEYS_MAX:
        _ENV_KEYS[name] = result
    return result


def build_environ(base: dict[str, Any], head: RequestHead, body: Body) -> dict[str, Any]:
    """A fresh environ: `base` holds the per-connection keys (server, peer, scheme)."""
    env = base.copy()
    path = head.path
    env["REQUEST_METHOD"] = head.method
    env["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
    env["QUERY_STRING"] = head.query.decode("latin-1")
    env["RAW_URI"] = env["REQUEST_URI"] = head.target.decode("latin-1")
    env["SERVER_PROTOCOL"] = head.version
    env["wsgi.input"] = body
    for name, value in head.headers:
        key = environ_key(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        if key in env and key.startswith("HTTP_"):
            env[key] += "," + text
        else:
            env[key] = text
    target = head.target
    if target[:1] != b"/" and b"://" in target:
        # Absolute-form (what a proxy sends): RFC 9112 section 3.2.2 says the target's
        # authority wins over the Host header, so the app sees that one.
        authority = target.partition(b"://")[2].split(b"/", 1)[0].split(b"?", 1)[0]
        env["HTTP_HOST"] = authority.rpartition(b"@")[2].decode("latin-1")
    return env


class Body:
    """``wsgi.input``: the request body, de-chunked, bounded by ``max_body_bytes``.

    Reading past the end returns ``b""`` (``wsgi.input_terminated`` is true).
    Framing errors raise `ProtocolError`, which the server answers with its
    status if the app lets it propagate.
    """

    __slots__ = (
        "_before_read",
        "_buf",
        "_decoder",
        "_leftover",
        "_max",
        "_received",
        "_recv",
        "_remaining",
        "finished",
    )

    def __init__(self, initial: bytes, recv: Recv, head: RequestHead | None,
                 max_body: int | None = None, before_read: Callable[[], None] | None = None,
                 max_trailer_bytes: int = 65536, length: int | None = None) -> None:
        # `length` given: a body of exactly that many bytes whatever the head says
        # (one already received and de-chunked by a `BodySpool`).
        self._recv = recv
        self._max = max_body
        self._received = 0
        self._before_read = before_read
        self._decoder: ChunkedDecoder | None = None
        self._leftover = b""
        self._buf = bytearray()  # amortised appends: large bodies read in pieces stay linear
        self._remaining = 0
        if length is None and head is not None and head.chunked:
            self._decoder = ChunkedDecoder(max_trailer_bytes)
            self.finished = False
            self._leftover = initial  # raw bytes, decoded on the first read (errors surface there)
        else:
            if length is None:
                length = (head.content_length or 0) if head is not None else 0
            self._buf += initial[:length]
            self._leftover = initial[length:]
            self._remaining = length - len(self._buf)
            self.finished = self._remaining == 0
            if length == 0:
                self._before_read = None

    def _pending_raw(self, raw: bytes) -> None:
        assert self._decoder is not None
        if raw:
            data = self._decoder.feed(raw)
            self._count(len(data))
            self._buf += data
        if self._decoder.done:
            self.finished = True
            self._leftover = self._decoder.leftover

    def _count(self, n: int) -> None:
        self._received += n
        if self._max is not None and self._received > self._max:
            raise ProtocolError(413, "body_too_large", "request body too large")

    @property
    def trailers(self) -> list[tuple[bytes, bytes]]:
        return self._decoder.trailers if self._decoder is not None else []

    def leftover(self) -> bytes:
        """Bytes received past the end of this body: the start of the next request."""
        return self._leftover

    def _fill(self) -> bool:
        """Receive more body bytes into the buffer; False at the end of the body."""
        if self.finished:
            return False
        if self._decoder is not None and self._leftover:
            raw, self._leftover = self._leftover, b""
            self._pending_raw(raw)
            return True
        if self._before_read is not None:
            before, self._before_read = self._before_read, None
            before()
        data = self._recv()
        if not data:
            raise ProtocolError(400, "incomplete_body", "client closed the connection mid-body")
        if self._decoder is not None:
            self._pending_raw(data)
            return True
        if len(data) > self._remaining:
            self._leftover = data[self._remaining:]
            data = data[:self._remaining]
        self._remaining -= len(data)
        self._count(len(data))
        self._buf += data
        if self._remaining == 0:
            self.finished = True
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            data = bytes(self._buf)
            self._buf.clear()
            return data
        while len(self._buf) < size and self._fill():
            pass
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0 and (limit < 0 or nl < limit):
                return self.read(nl + 1)
            if 0 <= limit <= len(self._buf) or not self._fill():
                return self.read(limit)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def discard(self, limit: int) -> bool:
        """Read and drop the rest of the body, up to `limit` bytes; True if it ended.

        Used after the response so the next request on the connection is framed
        right; a body larger than `limit` closes the connection instead.
        """
        if self._before_read is not None:
            return False  # 100-continue never sent: the client is waiting, not sending
        dropped = len(self._buf)
        self._buf.clear()
        while not self.finished:
            if dropped > limit:
                return False
            self._fill()
            dropped += len(self._buf)
            self._buf.clear()
        return True


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in blocks; the server sends it with
    ``sendfile`` instead when it can (plain sockets, a real file descriptor)."""

    def __init__(self, filelike: IO[bytes], blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data


def base_environ(server_name: str, server_port: str, remote_addr: str, remote_port: str,
                 scheme: str, multithread: bool = True) -> dict[str, Any]:
    """The environ keys that stay the same for every request of a connection."""
    return {
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "REMOTE_ADDR": remote_addr,
        "REMOTE_PORT": remote_port,
        "SCRIPT_NAME": "",
        "SERVER_SOFTWARE": "gracehttp",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }
