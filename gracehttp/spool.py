"""Request bodies received in full before the app runs, while the connection waits parked.

Middle layer: imports the body framer (`gracehttp.http.framing`).

Why: a body that streams to the app as the app reads it holds a request thread for
as long as its client takes to send it, so a few slow uploaders (or one client
dribbling a chunked body) could take every thread for ``read_timeout``. Instead a
body that has not all arrived with its head is collected here, a piece per
readable event, by whichever thread the event wakes; the app runs once the body is
whole, and reads it at memory (or disk) speed. Up to `MEMORY_LIMIT` it is kept in
memory, so a thousand parked uploads cost at most that much memory each. A larger
body of known size up to `BODY_MEMORY_LIMIT` goes to anonymous memory of its size
while the process's bodies together hold less than `MEMORY_BUDGET` (a temporary file
costs a create, a page-cache copy each way and an unlink: a 1 MiB upload was five
times slower through one); any other goes to an anonymous temporary file.

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
import threading
from typing import IO

from gracehttp.http.framing import BodyFramer
from gracehttp.http.parser import RequestHead

#: Bytes of one body always kept in memory.
MEMORY_LIMIT = 64 * 1024
#: A sized body up to this is kept in anonymous memory while `MEMORY_BUDGET` allows.
BODY_MEMORY_LIMIT = 4 * 1024 * 1024
#: Bytes of anonymous memory all the bodies of this process may hold at once.
MEMORY_BUDGET = 64 * 1024 * 1024


class _Budget:
    """The memory of the body buffers in use in this process: a buffer's size is taken
    when its body passes `MEMORY_LIMIT`, given back when the body is closed."""

    def __init__(self, total: int) -> None:
        self.free = total
        self._lock = threading.Lock()

    def take(self, count: int) -> bool:
        with self._lock:
            if count > self.free:
                return False
            self.free -= count
            return True

    def give(self, count: int) -> None:
        with self._lock:
            self.free += count


BUDGET = _Budget(MEMORY_BUDGET)
#: Bytes of body buffers kept for reuse once their bodies are closed.
POOL_KEEP = 16 * 1024 * 1024


class _Pool:
    """Body buffers by power-of-two size, kept for the next body: a fresh buffer this
    large costs a zero-filled allocation (and, above malloc's mmap threshold, an munmap
    that interrupts every core), and buffers grown and freed piece by piece leave the
    heap fragmented and grown (the soak drill's RSS crept 7 MiB). Holds `POOL_KEEP` at
    most."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.held = 0
        self._free: dict[int, list[bytearray]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def size_for(size: int) -> int:
        """The buffer a body of `size` bytes gets: the next power of two."""
        return max(2 * MEMORY_LIMIT, 1 << (size - 1).bit_length())

    def get(self, want: int) -> bytearray:
        """A buffer of `want` bytes (a `size_for` size), reused when one is kept."""
        with self._lock:
            free = self._free.get(want)
            if free:
                self.held -= want
                return free.pop()
        return bytearray(want)

    def put(self, buf: bytearray) -> None:
        with self._lock:
            if self.held + len(buf) <= self.keep:
                self._free.setdefault(len(buf), []).append(buf)
                self.held += len(buf)


POOL = _Pool(POOL_KEEP)
#: What one `read` hands back (the size of a socket read).
READ_SIZE = 65536


class BodySpool:
    """Collects one request's body from raw bytes as they arrive, until it is whole
    (`done`) or `limit` body bytes are stored (`full`: the app then reads the rest
    as it arrives, through the same `framer`)."""

    __slots__ = ("_file", "_map", "_mem", "_read_at", "_taken", "framer", "head", "length", "limit")

    def __init__(self, head: RequestHead, max_body: int | None, max_trailer_bytes: int = 65536,
                 limit: int | None = None) -> None:
        self.head = head
        self.framer = BodyFramer(head, max_body, max_trailer_bytes)
        self.limit = limit
        self._mem = bytearray()
        self._file: IO[bytes] | None = None
        #: A sized body past `MEMORY_LIMIT`, in a buffer from `POOL` while `BUDGET` allows.
        self._map: bytearray | None = None
        self._read_at = 0
        #: Bytes of `BUDGET` this body holds.
        self._taken = 0
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
        if self._map is not None:
            # Never past its size: the framer ends the body at Content-Length. Through a
            # memoryview: a bytearray's own slice assignment is ten times slower.
            memoryview(self._map)[self.length - len(data):self.length] = data
            return
        if self._file is None:
            if len(self._mem) + len(data) <= MEMORY_LIMIT:
                self._mem += data
                return
            size = self.head.content_length
            want = POOL.size_for(size) if size is not None and size <= BODY_MEMORY_LIMIT else 0
            if want and BUDGET.take(want):  # the buffer's whole size counts
                self._taken = want
                self._map = POOL.get(want)
                held = len(self._mem)
                view = memoryview(self._map)
                view[:held] = self._mem
                view[held:self.length] = data
                del view
                self._mem = bytearray()
                return
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
        """The next piece of the collected body, ``b""`` at its end (a `Body`'s receive):
        from a file a socket read's worth, from memory all of it in one copy (an app
        reading the whole body gets it without another)."""
        if self._map is not None:
            piece = bytes(memoryview(self._map)[self._read_at:self.length])
        elif self._file is not None:
            piece = os.pread(self._file.fileno(), READ_SIZE, self._read_at)
        else:
            piece = bytes(memoryview(self._mem)[self._read_at:])
        self._read_at += len(piece)
        return piece

    def close(self) -> None:
        if self._map is not None:
            POOL.put(self._map)
            self._map = None
            BUDGET.give(self._taken)
            self._taken = 0
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mem = bytearray()
