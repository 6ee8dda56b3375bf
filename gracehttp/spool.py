"""Request bodies received in full before the app runs, while the connection waits parked.

Middle layer: imports the body framer (`gracehttp.http.framing`).

Why: a body that streams to the app as the app reads it holds a request thread for
as long as its client takes to send it, so a few slow uploaders (or one client
dribbling a chunked body) could take every thread for ``read_timeout``. Instead a
body that has not all arrived with its head is collected here, a piece per
readable event, by whichever thread the event wakes; the app runs once the body is
whole, and reads it at memory (or disk) speed. Up to `MEMORY_LIMIT` it is kept in
memory, the rest in an anonymous temporary file, so a thousand parked uploads cost
at most that much memory each.

What is collected is bounded too (``max_spool_bytes``, 16 MiB by default): past
it the app is called with what has arrived and reads the rest as it comes, so a
client cannot make the server store a 100 MiB upload for an app that answers 404
without reading it.

Chunked bodies are decoded here (their framing errors and their size against
``max_body_bytes`` are answered before the app runs); the app gets the decoded
bytes and a ``wsgi.input`` that ends where they end.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO

from gracehttp.http.framing import BodyFramer
from gracehttp.http.parser import RequestHead

#: Bytes of one body kept in memory; past this the body goes to a temporary file.
MEMORY_LIMIT = 64 * 1024
#: What one `read` hands back (the size of a socket read).
READ_SIZE = 65536


class BodySpool:
    """Collects one request's body from raw bytes as they arrive, until it is whole
    (`done`) or `limit` body bytes are stored (`full`: the app then reads the rest
    as it arrives, through the same `framer`)."""

    __slots__ = ("_file", "_mem", "_read_at", "framer", "head", "length", "limit")

    def __init__(self, head: RequestHead, max_body: int | None, max_trailer_bytes: int = 65536,
                 limit: int | None = None) -> None:
        self.head = head
        self.framer = BodyFramer(head, max_body, max_trailer_bytes)
        self.limit = limit
        self._mem = bytearray()
        self._file: IO[bytes] | None = None
        self._read_at = 0
        #: Body bytes collected so far (decoded, for a chunked body).
        self.length = 0

    @property
    def done(self) -> bool:
        return self.framer.done

    @property
    def full(self) -> bool:
        return self.limit is not None and self.length >= self.limit and not self.framer.done

    def feed(self, data: bytes) -> None:
        """Take raw bytes from the socket; raises `ProtocolError` (bad chunk framing, 413)."""
        self._store(self.framer.feed(data))

    def _store(self, data: bytes) -> None:
        if not data:
            return
        self.length += len(data)
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
