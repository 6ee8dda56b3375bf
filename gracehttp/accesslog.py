"""Access logs: Apache ``common`` and ``combined`` lines, gunicorn's ``access_logformat``
atoms, or one JSON object per line; to the ``gracehttp.access`` logger, or with
``access_logfile`` to a file or stdout alone on their line.

Middle layer: imports `wsgi` (for a probe's environ keys). A server without an access log never calls
in here; one with it formats nothing when the logger would drop the record.

The lines are exactly what log tooling parses (goaccess, Loki's and Elastic's
Apache patterns, jq): no application-log prefix in a file or on stdout, and a
JSON line is the object itself, never JSON inside a ``message`` string. The
record also carries the fields as ``record.access``, for a JSON formatter of the
application's own that wants to merge them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from gracehttp.wsgi import environ_key

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NAMED = ("common", "combined", "json")
#: gunicorn's access-log atoms (plus {header}i, {header}o, {variable}e).
ATOMS = {
    "h": "remote address", "l": "'-'", "u": "user name (REMOTE_USER)", "t": "date and time, Apache's format",
    "r": "request line", "m": "method", "U": "path without the query", "q": "query string", "H": "protocol",
    "s": "status", "B": "response body bytes", "b": "response body bytes, '-' for none", "f": "referer",
    "a": "user agent", "T": "request time, whole seconds", "M": "request time, milliseconds",
    "D": "request time, microseconds", "L": "request time, decimal seconds", "p": "process id",
}
_BRACED = re.compile(r"\{([^{}]+)\}([ioe])")
# Apache's escaping of logged strings: quotes, backslashes and anything not printable ASCII.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0x100)]}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})


def _clf_time(now: float) -> str:
    t = time.localtime(now)
    offset = t.tm_gmtoff
    sign = "-" if offset < 0 else "+"
    offset = abs(offset) // 60
    return (f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} "
            f"{sign}{offset // 60:02d}{offset % 60:02d}]")


def iso_time(now: float) -> str:
    """ISO 8601 with the local offset and milliseconds: ``2026-12-02T17:03:04.123+00:00``."""
    import datetime  # here: only a JSON access log needs it (0.3 MiB of every process)

    return datetime.datetime.fromtimestamp(now).astimezone().isoformat(timespec="milliseconds")


def _quote(value: object) -> str:
    return str(value).translate(_ESCAPES)


def compile_format(fmt: str) -> str:
    """Check a gunicorn-style format: every atom known, the string well formed. Raises
    `ValueError` naming the first unknown atom (gunicorn prints ``-`` for those, which
    hides a typo until someone reads the logs)."""
    if re.search(r"%(?!\()", fmt.replace("%%", "")):
        raise ValueError(f"{fmt!r}: a % must start an atom, %(name)s, or be doubled, %%")
    asked = _Asked()
    try:
        fmt % asked  # Python's own reading of the atoms (nested parentheses, %% included)
        fmt % _Fields({}, 200, 0, 0.0, [], 0.0)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{fmt!r} is not a format of %(atom)s fields: {exc}") from None
    for name in asked.keys_asked:
        if name not in ATOMS and not _BRACED.fullmatch(name):
            raise ValueError(f"unknown atom %({name})s; known: {' '.join(ATOMS)} and {{header}}i, "
                             "{header}o, {variable}e")
    return fmt


class _Asked(Mapping[str, str]):
    """Records the atoms a format asks for."""

    def __init__(self) -> None:
        self.keys_asked: list[str] = []

    def __getitem__(self, key: str) -> str:
        self.keys_asked.append(key)
        return ""

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _Fields(Mapping[str, str]):
    """The atoms of one request, computed when the format asks for them."""

    def __init__(self, environ: dict[str, Any], status: int, length: int, duration: float,
                 headers: list[tuple[str, str]], now: float) -> None:
        self.environ = environ
        self.status = status
        self.length = length
        self.duration = duration
        self.headers = headers
        self.now = now

    def __getitem__(self, key: str) -> str:
        env = self.environ
        if key == "h":
            return _quote(env.get("REMOTE_ADDR") or "-")
        if key == "r":
            return _quote(f"{env.get('REQUEST_METHOD', '-')} {env.get('RAW_URI', '-')} "
                          f"{env.get('SERVER_PROTOCOL', '-')}")
        if key == "s":
            return str(self.status)
        if key in ("b", "B"):
            return str(self.length) if self.length or key == "B" else "-"
        if key == "t":
            return _clf_time(self.now)
        if key in ("l", "u"):
            return _quote(env.get("REMOTE_USER") or "-") if key == "u" else "-"
        if key == "m":
            return _quote(env.get("REQUEST_METHOD", "-"))
        if key == "U":
            return _quote(env.get("RAW_URI", "-").split("?", 1)[0])
        if key == "q":
            return _quote(env.get("QUERY_STRING", ""))
        if key == "H":
            return str(env.get("SERVER_PROTOCOL", "-"))
        if key == "f":
            return _quote(env.get("HTTP_REFERER", "-"))
        if key == "a":
            return _quote(env.get("HTTP_USER_AGENT", "-"))
        if key in ("T", "M", "D", "L"):
            scale = {"T": 1, "M": 1000, "D": 1_000_000}.get(key)
            return f"{self.duration:.6f}" if scale is None else str(int(self.duration * scale))
        if key == "p":
            return f"<{os.getpid()}>"
        braced = _BRACED.fullmatch(key)
        if braced is None:
            return "-"
        name, kind = braced.groups()
        if kind == "i":
            value = env.get("HTTP_" + name.upper().replace("-", "_"))
            if value is None and name.lower() in ("content-type", "content-length"):
                value = env.get(name.upper().replace("-", "_"))
        elif kind == "o":
            low = name.lower()
            value = next((v for n, v in self.headers if n.lower() == low), None)
            if value is None and low == "x-request-id":  # the server's own, added to the head
                value = env.get("gracehttp.request_id")
        else:  # gunicorn finds {remote_addr}e as {REMOTE_ADDR}e
            value = env.get(name, env.get(name.upper()))
        return "-" if value is None else _quote(str(value))

    def __iter__(self) -> Iterator[str]:
        return iter(ATOMS)

    def __len__(self) -> int:
        return len(ATOMS)


COMMON = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s'
COMBINED = COMMON + ' "%(f)s" "%(a)s"'


class AccessLog:
    """Formats one line per answered request.

    With a `destination` (``-`` for stdout, or a file, reopened when rotated away as
    logrotate moves it), the lines go to a handler of this log's own, alone on their
    line and not on to the application's logging; several servers in one process
    each keep theirs, and `close` releases it. Without, they go to the logger.
    """

    def __init__(self, fmt: str, logger: logging.Logger | None = None, destination: str | None = None) -> None:
        if fmt not in NAMED:
            compile_format(fmt)
        self.json = fmt == "json"
        self.template = {"common": COMMON, "combined": COMBINED}.get(fmt, fmt)
        self.logger = logger or logging.getLogger("gracehttp.access")
        self.handler: logging.Handler | None = None
        if destination is not None:
            from logging.handlers import WatchedFileHandler  # here: only a log file needs it (0.5 MiB)

            self.handler = (logging.StreamHandler(sys.stdout) if destination == "-"
                            else WatchedFileHandler(destination, encoding="utf-8"))
            self.handler.setFormatter(logging.Formatter("%(message)s"))

    def close(self) -> None:
        if self.handler is not None:
            self.handler.close()

    def __call__(self, environ: dict[str, Any], status: int, length: int, duration: float,
                 headers: list[tuple[str, str]] | None = None) -> None:
        try:
            self._write(environ, status, length, duration, headers)
        except Exception:  # an app's odd environ value must not cost the response
            logging.getLogger("gracehttp").exception("access log line failed")

    def _emit(self, line: str, extra: dict[str, Any] | None = None) -> None:
        if self.handler is None:
            self.logger.info(line, extra=extra)
        else:
            record = self.logger.makeRecord(self.logger.name, logging.INFO, "", 0, line, (), None, extra=extra)
            self.handler.handle(record)

    def _write(self, environ: dict[str, Any], status: int, length: int, duration: float,
               headers: list[tuple[str, str]] | None) -> None:
        if self.handler is None and not self.logger.isEnabledFor(logging.INFO):
            return
        now = time.time()
        rid = environ.get("gracehttp.request_id")
        if self.json:
            entry = {
                "time": iso_time(now), "remote": environ.get("REMOTE_ADDR") or None,
                "method": environ.get("REQUEST_METHOD"), "target": environ.get("RAW_URI"),
                "protocol": environ.get("SERVER_PROTOCOL"), "status": status, "bytes": length,
                "duration_ms": round(duration * 1000, 3), "referer": environ.get("HTTP_REFERER"),
                "user_agent": environ.get("HTTP_USER_AGENT"),
            }
            if rid is not None:
                entry["request_id"] = rid
            self._emit(json.dumps(entry, separators=(",", ":")), {"access": entry})
            return
        self._emit(self.template % _Fields(environ, status, length, duration, headers or [], now))


def probe_environ(method: str, target: bytes, version: str, remote: str,
                  headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """What the access log reads, for a health probe the server answered itself."""
    env: dict[str, Any] = {"REQUEST_METHOD": method, "RAW_URI": target.decode("latin-1"),
                           "SERVER_PROTOCOL": version, "REMOTE_ADDR": remote}
    for name, value in headers:
        key = environ_key(name)  # as the app's environ would have it
        if key is not None:
            env.setdefault(key, value.decode("latin-1"))
    return env
