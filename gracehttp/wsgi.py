"""PEP 3333 pieces that are not I/O: the environ, ``wsgi.input`` and ``wsgi.file_wrapper``.

Middle layer: imports `errors`, `http.parser` and `http.framing`. The request body reads
through a `recv` callable given by the connection, so this module never sees a
socket and a test can drive it with a list of byte strings.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from gracehttp.errors import ProtocolError
from gracehttp.http.framing import BodyFramer
from gracehttp.http.parser import RequestHead

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
    """A fresh environ: `base` holds the per-connection keys (server, peer, scheme), and
    the keys that follow from the head alone are made once per head (`head_environ`)."""
    script_name = base["SCRIPT_NAME"]
    made = head.environ
    if made is None or made[0] != script_name:
        made = head.environ = (script_name, head_environ(head, script_name))
    env = base.copy()
    env.update(made[1])
    env["wsgi.input"] = body
    return env


def head_environ(head: RequestHead, script_name: str) -> dict[str, Any]:
    """The environ keys a request head gives, for an app mounted at `script_name`."""
    env: dict[str, Any] = {}
    path = head.path
    env["REQUEST_METHOD"] = head.method
    if script_name:  # the app is mounted under root_path: /prefix or /prefix/... comes off, as sent
        root = script_name.encode("ascii")
        if path.startswith(root) and path[len(root):len(root) + 1] in (b"", b"/"):
            path = path[len(root):]
    env["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
    env["QUERY_STRING"] = head.query.decode("latin-1")
    env["RAW_URI"] = env["REQUEST_URI"] = head.target.decode("latin-1")
    env["SERVER_PROTOCOL"] = head.version
    for name, value in head.headers:
        key = environ_key(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        if key in env and key.startswith("HTTP_"):
            # Repeated fields join with a comma (RFC 9110 section 5.3), except Cookie, whose
            # pairs are separated by "; " (RFC 6265): the only join every framework parses.
            env[key] += ("; " if key == "HTTP_COOKIE" else ",") + text
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

    Its bytes come first from `initial` (body bytes that arrived with the head),
    then from `stored` (a body collected before the app ran, `gracehttp.spool`),
    then from the socket through `recv`, framed by the request's one `BodyFramer`.
    Reading past the end returns ``b""`` (``wsgi.input_terminated`` is true).
    Framing errors raise `ProtocolError`, which the server answers with its
    status if the app lets it propagate.
    """

    __slots__ = ("_buf", "_framer", "_recv", "_stored")

    def __init__(self, framer: BodyFramer, recv: Recv, initial: bytes = b"",
                 stored: Recv | None = None) -> None:
        self._framer = framer
        self._recv = recv
        self._stored = stored
        self._buf = bytearray(initial)  # amortised appends: large bodies read in pieces stay linear

    @property
    def finished(self) -> bool:
        """Every body byte has come off the wire (it may still be unread here)."""
        return self._framer.done

    @property
    def trailers(self) -> list[tuple[bytes, bytes]]:
        return self._framer.trailers

    def leftover(self) -> bytes:
        """Bytes received past the end of this body: the start of the next request."""
        return self._framer.leftover

    def _fill(self) -> bool:
        """Receive more body bytes into the buffer; False at the end of the body."""
        if self._stored is not None:
            piece = self._stored()
            if piece:
                self._buf += piece
                return True
            self._stored = None
        if self._framer.done:
            return False
        data = self._recv()
        if not data:
            raise ProtocolError(400, "incomplete_body", "client closed the connection mid-body")
        self._buf += self._framer.feed(data)
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            if not self._buf and self._stored is not None:
                # A body collected in memory comes in one piece: hand it over as it is.
                piece = self._stored()
                if piece and not self._fill():
                    return piece
                self._buf[:0] = piece
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
        """Receive and drop the rest of the body, up to `limit` more bytes; True if it ended.

        Used after the response so the next request on the connection is framed
        right; a body with more than `limit` bytes still to come closes the
        connection instead (receiving it could take long).
        """
        self._buf.clear()
        self._stored = None
        framer = self._framer
        start = framer.received
        while not framer.done:
            if framer.received - start > limit:
                return False
            data = self._recv()
            if not data:
                raise ProtocolError(400, "incomplete_body", "client closed the connection mid-body")
            framer.feed(data)
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
                 scheme: str, multithread: bool = True, multiprocess: bool = False,
                 script_name: str = "") -> dict[str, Any]:
    """The environ keys that stay the same for every request of a connection.

    ``REMOTE_HOST`` is the client's address, not a reverse lookup (as waitress and
    gunicorn set it: a DNS query per connection would cost more than the request).
    ``wsgi.multiprocess`` is true when other processes run the same app at once
    (``workers > 1``).
    """
    return {
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "REMOTE_ADDR": remote_addr,
        "REMOTE_HOST": remote_addr,
        "REMOTE_PORT": remote_port,
        "SCRIPT_NAME": script_name,
        "SERVER_SOFTWARE": "gracehttp",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }
