"""Request ids: one ``X-Request-ID`` per request, the same in the environ, the
response and every log line written while the request runs.

Bottom layer: standard library only. A trusted proxy's id is kept, so one id
follows the request from the edge through every hop (nginx's ``$request_id``,
an ALB's trace header passed on); a client's own is not believed from an
untrusted peer, where it could be chosen to collide with another request's.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
from typing import Any

#: An id is kept only when it is short and made of characters safe in a header and a log line.
_VALID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
ENVIRON_KEY = "gracehttp.request_id"
#: The id of the request the current thread serves, for `RequestIdFilter`.
current: contextvars.ContextVar[str | None] = contextvars.ContextVar("gracehttp_request_id", default=None)


def assign(environ: dict[str, Any], trusted: bool) -> str:
    """The request's id, set in the environ (``HTTP_X_REQUEST_ID`` too, so an app that
    reads the header sees the id in use): a trusted peer's when well formed, else new."""
    given = environ.get("HTTP_X_REQUEST_ID")
    rid = given if trusted and given is not None and _VALID.fullmatch(given) else os.urandom(16).hex()
    environ["HTTP_X_REQUEST_ID"] = rid
    environ[ENVIRON_KEY] = rid
    return rid


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` on every record (None outside a request), so a formatter can
    write it: the app's own log lines carry the id of the request they belong to."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current.get()
        return True
