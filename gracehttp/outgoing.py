"""A complete response the server owns, sent as fast as the client takes it.

Upper layer, beside `transport`: imports `transport` only.

Why: an app that returns a list of bytes (what Flask and Django return for
ordinary views) or a file through ``wsgi.file_wrapper`` is done once it has
returned; only the client's reading speed is left. Sending the rest with a
blocking write would hold a request thread for up to ``write_timeout`` per
client that reads slowly or never, so four such clients could take a 4-thread
pool. Instead the bytes become the server's own (in memory, or a duplicate of
the file's descriptor, so the app's ``close()`` can run on its own thread at
once), whatever the socket takes now is sent, and the rest is sent from the
parked connection each time the socket is writable, within ``write_timeout``
of the response's start.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from gracehttp.transport import FILE_NOTSENT, Transport

#: Bytes of a file read for one TLS write (there is no sendfile through TLS).
FILE_BLOCK = 65536
#: The last send of a closing response: held for the FIN that follows at once
#: (`gracehttp.outlet.SendFinal` says why).
_LAST = socket.MSG_DONTWAIT | socket.MSG_MORE


class Outgoing:
    """Bytes, then optionally `count` bytes of a file from `offset`, still to send."""

    __slots__ = ("_data", "_fd", "_offset", "_remaining", "restore_notsent", "short")

    def __init__(self, data: bytes, fd: int = -1, offset: int = 0, count: int = 0) -> None:
        self._data = memoryview(data)
        self._fd = fd
        self._offset = offset
        self._remaining = count if fd >= 0 else 0
        #: While the file is paced, the socket's own unsent-bytes setting, put back after
        #: the file's last sendfile (`Transport.pace`); a connection that closes first
        #: needs nothing put back.
        self.restore_notsent: int | None = None
        #: The file ended before `count` bytes: the connection must close after it.
        self.short = False

    @classmethod
    def of_file(cls, head: bytes, fd: int, offset: int, count: int) -> Outgoing:
        """`head`, then the file: `fd` is duplicated, so the caller may close its own."""
        return cls(head, os.dup(fd), offset, count)

    def pump(self, io: Transport) -> bool:
        """Send what the socket takes now; True once everything is sent.
        Raises OSError when the client is gone."""
        if self._remaining > 0 and not io.tls:
            with io.nonblocking():  # once for every sendfile of this turn
                return self._pump(io)
        return self._pump(io)

    def _pump(self, io: Transport) -> bool:
        while True:
            if self._data:
                sent = io.send_nowait(self._data)
                if not sent:
                    return False
                self._data = self._data[sent:]
                continue
            if self._remaining <= 0:
                self.release()
                if self.restore_notsent is not None:  # the next response may be in memory
                    io.unpace(self.restore_notsent)
                    self.restore_notsent = None
                return True
            if io.tls:
                block = os.pread(self._fd, min(self._remaining, FILE_BLOCK), self._offset)
                n = len(block)
                self._data = memoryview(block)  # sent from memory: TLS retries need the same bytes
            else:
                sent_file = io.sendfile_nowait(self._fd, self._offset, self._remaining)
                if sent_file is None:
                    return False
                n = sent_file
            if n == 0:  # the file is shorter than it was when the head was sent
                self.short = True
                self._remaining = 0
                continue
            self._offset += n
            self._remaining -= n

    def release(self) -> None:
        """Let go of the file (at the end, or when the connection closes first)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


class Sender:
    """One connection's complete responses: each goes out with one non-blocking send
    (the usual case: the socket takes all of it); what the socket does not take is
    kept, and the connection waits WRITING until `flush` has sent it."""

    __slots__ = ("_io", "_out", "pending", "short", "started")

    def __init__(self, io: Transport) -> None:
        self._io = io
        self._out: Outgoing | None = None
        #: A response is kept, not all sent yet (the connection is WRITING).
        self.pending = False
        #: When the response now kept began to go out (its write_timeout counts from here).
        self.started = 0.0
        #: A file ended before the length its head promised: only a close can tell the client.
        self.short = False

    def send(self, data: bytes, last: bool = False) -> None:
        """Send a complete response (what the socket does not take is kept); `last`: the
        connection closes after it, so it half-closes with these bytes once all are sent."""
        io = self._io
        if io.tls:
            sent = io.send_nowait(data)
        else:  # the hot path, inlined: one non-blocking send
            try:
                sent = io.sock.send(data, _LAST if last else socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if last and sent == len(data):
                io.send_fin()  # all sent: they leave with the FIN
        if sent != len(data):
            self._keep(Outgoing(data[sent:]))

    def send_file(self, head: bytes, fd: int, offset: int, count: int) -> None:
        out = Outgoing.of_file(head, fd, offset, count)
        if count > FILE_NOTSENT and not self._io.tls:  # a smaller file gains nothing from it
            out.restore_notsent = self._io.pace()
        self._keep(out)

    def _keep(self, out: Outgoing) -> None:
        try:
            done = out.pump(self._io)
        except BaseException:
            out.release()  # the client is gone: the duplicated file must not outlive it
            raise
        if done:
            self.short = out.short
        else:
            self._out, self.pending = out, True
            self.started = time.monotonic()

    def flush(self) -> bool:
        """Send more of the kept response; True once it is all sent. Raises OSError
        when the client is gone."""
        out = self._out
        if out is None or not out.pump(self._io):
            return out is None
        self._out, self.pending = None, False
        self.short = out.short
        return True

    def drop(self) -> None:
        """Give up the kept response (the client is gone, or too slow)."""
        if self._out is not None:
            self._out.release()
            self._out, self.pending = None, False
