"""Access logs in ``common``, ``combined`` and ``json`` formats to the ``gracehttp.access`` logger.

Middle layer: standard library only. A server without ``access_log`` never
calls in here; one with it formats nothing when the logger would drop the record.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _clf_time(now: float) -> str:
    t = time.gmtime(now)
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class AccessLog:
    """Formats one line per answered request. Common and combined lines end with the
    request's duration in microseconds (Apache's ``%D``), which plain CLF lacks."""

    def __init__(self, fmt: str, logger: logging.Logger | None = None) -> None:
        if fmt not in ("common", "combined", "json"):
            raise ValueError(f"unknown access log format {fmt!r}")
        self.fmt = fmt
        self.logger = logger or logging.getLogger("gracehttp.access")

    def __call__(self, environ: dict[str, Any], status: int, length: int, duration: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        now = time.time()
        remote = environ.get("REMOTE_ADDR") or "-"
        method = environ.get("REQUEST_METHOD", "-")
        target = environ.get("RAW_URI", "-")
        protocol = environ.get("SERVER_PROTOCOL", "-")
        if self.fmt == "json":
            self.logger.info(json.dumps({
                "time": round(now, 3), "remote": remote, "method": method, "target": target,
                "protocol": protocol, "status": status, "bytes": length,
                "duration_ms": round(duration * 1000, 3), "referer": environ.get("HTTP_REFERER"),
                "user_agent": environ.get("HTTP_USER_AGENT"),
            }, separators=(",", ":")))
            return
        line = (f'{remote} - - [{_clf_time(now)}] "{_quote(method)} {_quote(target)} {protocol}" '
                f"{status} {length or '-'}")
        if self.fmt == "combined":
            line += (f' "{_quote(environ.get("HTTP_REFERER", "-"))}"'
                     f' "{_quote(environ.get("HTTP_USER_AGENT", "-"))}"')
        self.logger.info(f"{line} {int(duration * 1e6)}")
