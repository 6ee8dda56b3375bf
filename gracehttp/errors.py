"""Exceptions that carry their meaning: the field that is wrong, or the HTTP status.

Bottom layer: imports nothing from gracehttp.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid configuration value; the message starts with the field's name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class BindError(OSError):
    """A listener could not be opened; the message names the address and the reason
    (``cannot listen on 127.0.0.1:8080: address already in use``). An OSError, with
    the original's errno, so callers that catch OSError still do."""

    def __init__(self, address: str, cause: OSError) -> None:
        reason = (cause.strerror or str(cause)).lower() if cause.errno is not None else str(cause)
        super().__init__(cause.errno, f"cannot listen on {address}: {reason}")
        self.address = address
        self.cause = cause

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[type[BindError], tuple[str, OSError]]:
        return BindError, (self.address, self.cause)  # pickled and copied as made


class ProtocolError(Exception):
    """A request the server refuses, with the status to answer it with.

    `reason` is a short stable slug (``"bad_header"``, ``"too_large"``...) that
    logs and the bad-request metric use as a bounded label value.
    """

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.status = status
        self.reason = reason
        self.detail = detail or reason


class IllegalTransition(RuntimeError):
    """A lifecycle transition that the state table does not allow."""
