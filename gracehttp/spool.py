"""Request bodies received in full before the app runs, while the connection waits parked.

Middle layer: imports the parser's chunked decoder and `ProtocolError`.

Why: a body that streams to the app as the app reads it holds a request thread for
as long as its client takes to send it, so a few slow uploaders (or one client
dribbling a chunked body) could take every thread for ``read_timeout``. Instead a
body that has not all arrived with its head is collected here, a piece per
readable event, by whichever thread the event wakes; the app runs once the body is
whole, and reads it at memory (or disk) speed. Up to `MEMORY_LIMIT` it is kept in
memory, the rest in an anonymous temporary file, so a thousand parked uploads cost
at most that much memory each.

Chunked bodies are decoded here (their framing errors and their size against
``max_body_bytes`` are answered before the app runs); the app gets the decoded
bytes and a ``wsgi.input`` that ends where they end.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO

from gracehttp.errors import ProtocolError
from gracehttp.http.parser import ChunkedDecoder, RequestHead

#: Bytes of one body kept in memory; past this the body goes to a temporary file.
MEMORY_LIMIT = 64 * 1024
#: What one `read` hands back (the size of a socket read).
READ_SIZE = 65536


class BodySpool:
    """Collects one request's body from raw bytes as they arrive; `done` once it is whole."""

    __slots__ = ("_decoder", "_file", "_max", "_mem", "_read_at", "_remaining", "done", "leftover", "length")

    def __init__(self, head: RequestHead, max_body: int | None, max_trailer_bytes: int = 65536) -> None:
        self._decoder = ChunkedDecoder(max_trailer_bytes) if head.chunked else None
        self._remaining = 0 if head.chunked else (head.content_length or 0)
        self._max = max_body
        self._mem = bytearray()
        self._file: IO[bytes] | None = None
        self._read_at = 0
        #: Body bytes collected so far (decoded, for a chunked body).
        self.length = 0
        #: Bytes past the end of the body: the start of a pipelined request.
        self.leftover = b""
        self.done = self._decoder is None and self._remaining == 0

    def feed(self, data: bytes) -> None:
        """Take raw bytes from the socket; raises `ProtocolError` (bad chunk framing, 413)."""
        if self.done:
            self.leftover += data
            return
        if self._decoder is not None:
            self._store(self._decoder.feed(data))
            if self._decoder.done:
                self.done = True
                self.leftover = self._decoder.leftover
            return
        piece = data[:self._remaining]
        self._remaining -= len(piece)
        self._store(piece)
        if self._remaining == 0:
            self.done = True
            self.leftover = data[len(piece):]

    def _store(self, data: bytes) -> None:
        if not data:
            return
        self.length += len(data)
        if self._max is not None and self.length > self._max:
            raise ProtocolError(413, "body_too_large", "request body too large")
        if self._file is None and len(self._mem) + len(data) <= MEMORY_LIMIT:
            self._mem += data
            return
        if self._file is None:
            # Unbuffered: every write is in the file, so `read` can pread at its offset.
            self._file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 (closed by `close`)
            self._write(self._mem)
            self._mem = bytearray()
        self._write(data)

    def _write(self, data: bytes | bytearray) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:  # a raw file may take less than all (a full disk raises on the next write)
            view = view[self._file.write(view) or 0:]

    def read(self) -> bytes:
        """The next piece of the collected body, ``b""`` at its end (a `Body`'s receive)."""
        if self._file is not None:
            piece = os.pread(self._file.fileno(), READ_SIZE, self._read_at)
        else:
            piece = bytes(self._mem[self._read_at:self._read_at + READ_SIZE])
        self._read_at += len(piece)
        return piece

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mem = bytearray()
