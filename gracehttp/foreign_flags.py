"""gunicorn's and uvicorn's flag spellings: the ones that mean the same thing here are
rewritten to gracehttp's before parsing; the others fail naming what to use instead.

Upper layer (the command line's, which calls `translate` before parsing): standard
library only. `FOREIGN` and `SAME` are the one declaration of their flags, from which
the table of docs/migration.rst is generated (`migration_table_rst`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Foreign:
    flags: tuple[str, ...]  # their spellings, e.g. ("-w",)
    server: str  # "gunicorn" or "uvicorn"
    #: The flag's value -> gracehttp's arguments (the same meaning); None: no equivalent.
    rewrite: Callable[[str], list[str]] | None
    #: With `rewrite`: what it becomes; without: what to do instead, and why (a phrase).
    says: str
    takes_value: bool = True
    #: What differs, for the docs' table (a rewritten flag with the same meaning: nothing).
    note: str = ""


class ForeignFlagError(Exception):
    """A flag of another server with no equivalent here: the message names what to use."""


_NUMBER = re.compile(r"\d+(\.\d+)?$")


def _seconds_or_off(flag: str, value: str) -> str:
    """gunicorn's seconds, where 0 means never."""
    if not _NUMBER.match(value):
        raise ForeignFlagError(f"{flag} takes seconds (0: off), not {value!r}")
    return "none" if float(value) == 0 else value


FOREIGN: tuple[Foreign, ...] = (
    Foreign(("-w",), "gunicorn", lambda v: ["--workers", v], "--workers"),
    Foreign(("--graceful-timeout",), "gunicorn", lambda v: ["--drain-timeout", v], "--drain-timeout"),
    Foreign(("--limit-request-line",), "gunicorn", lambda v: ["--max-request-line", v], "--max-request-line"),
    Foreign(("--limit-request-fields",), "gunicorn", lambda v: ["--max-header-count", v], "--max-header-count"),
    Foreign(("-p", "--pid"), "gunicorn", lambda v: ["--pid-file", v], "--pid-file"),
    Foreign(("--preload",), "gunicorn", lambda v: [], "(nothing)", takes_value=False,
            note="the app is always imported before forking"),
    Foreign(("--uds",), "uvicorn", lambda v: ["--bind", f"unix:{v}"], "--bind unix:PATH"),
    Foreign(("--fd",), "uvicorn", lambda v: ["--bind", f"fd://{v}"], "--bind fd://N"),
    Foreign(("--ssl-certfile",), "uvicorn", lambda v: ["--certfile", v], "--certfile"),
    Foreign(("--ssl-keyfile",), "uvicorn", lambda v: ["--keyfile", v], "--keyfile"),
    Foreign(("--timeout-keep-alive",), "uvicorn", lambda v: ["--idle-timeout", v], "--idle-timeout"),
    Foreign(("--timeout-graceful-shutdown",), "uvicorn", lambda v: ["--drain-timeout", v], "--drain-timeout"),
    Foreign(("--limit-max-requests",), "uvicorn", lambda v: ["--max-requests", v], "--max-requests",
            note="with --workers, the worker is replaced, the new one ready first"),
    Foreign(("--limit-concurrency",), "uvicorn", None,
            "use --max-connections (connections per process; past it, stalled ones give way) and --threads"),
    Foreign(("--timeout", "-t"), "gunicorn", lambda v: ["--request-timeout", _seconds_or_off("--timeout", v)],
            "--request-timeout", note="0 is off; the stuck request is logged with its stack, and its worker "
            "replaced (the new one ready first) instead of killed"),
    Foreign(("--limit-request-field_size",), "gunicorn", None,
            "use --max-header-bytes, which bounds the whole header block, not each field"),
    Foreign(("-k", "--worker-class"), "gunicorn", None,
            "there are no worker classes: one engine, in which idle and slow clients hold no thread "
            "(--threads, --workers)"),
    Foreign(("-c",), "gunicorn", None, "use --config FILE.toml (or [tool.gracehttp] in pyproject.toml)"),
)
#: Their flags that gracehttp takes as they are, with the same meaning: (server, flags).
SAME: tuple[tuple[str, str], ...] = (
    ("gunicorn", "-b, --bind"), ("gunicorn", "--workers"), ("gunicorn", "--threads"), ("gunicorn", "--backlog"),
    ("gunicorn", "--max-requests"), ("gunicorn", "--max-requests-jitter"), ("gunicorn", "--certfile"),
    ("gunicorn", "--keyfile"), ("gunicorn", "--access-logfile"), ("gunicorn", "--access-logformat"),
    ("gunicorn", "--log-level"), ("gunicorn", "--forwarded-allow-ips"), ("gunicorn", "--reload"),
    ("gunicorn", "--reuse-port"), ("uvicorn", "--workers"), ("uvicorn", "--backlog"), ("uvicorn", "--reload"),
    ("uvicorn", "--root-path"), ("uvicorn", "--proxy-headers, --no-proxy-headers"),
    ("uvicorn", "--forwarded-allow-ips"), ("uvicorn", "--log-level"),
)
#: uvicorn's --host and --port: together one --bind (uvicorn's defaults fill a missing half).
HOST_PORT = ("--host", "--port")
UVICORN_HOST, UVICORN_PORT = "127.0.0.1", "8000"


def translate(argv: Sequence[str]) -> list[str]:
    """`argv` with gunicorn's and uvicorn's spellings rewritten to gracehttp's; raises
    `ForeignFlagError` for one that has no equivalent.

    gunicorn's ``--keep-alive N`` (seconds) is ``--idle-timeout N``; gracehttp's own
    ``--keep-alive`` takes no value, so a number after it is gunicorn's, never the next
    argument swallowed.
    """
    by_flag = {flag: f for f in FOREIGN for flag in f.flags}
    out: list[str] = []
    host = port = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        short = by_flag.get(arg[:2]) if len(arg) > 2 and arg[1] != "-" else None
        if short is not None and short.takes_value:  # attached, as their parsers take it: -w4, -t30
            name, eq, inline = arg[:2], "=", arg[2:]
        value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if name == "--keep-alive" and _NUMBER.match(value):
            # gunicorn's seconds; 0 turns keep-alive off there
            out += ["--no-keep-alive"] if float(value) == 0 else ["--idle-timeout", value]
            i += 1 if eq else 2
            continue
        if name in HOST_PORT or name in by_flag:
            foreign = by_flag.get(name)
            takes_value = foreign.takes_value if foreign is not None else True
            if takes_value and not eq and i + 1 >= len(argv):
                raise ForeignFlagError(f"{name} needs a value")
            value = inline if eq else (argv[i + 1] if takes_value else "")
            i += 1 if eq or not takes_value else 2
            if name == "--host":
                host = value
            elif name == "--port":
                port = value
            elif foreign is not None and foreign.rewrite is not None:
                out += foreign.rewrite(value)
            elif foreign is not None:
                raise ForeignFlagError(f"{name} is {foreign.server}'s; {foreign.says}")
            continue
        out.append(arg)
        i += 1
    if host is not None or port is not None:
        host = host or UVICORN_HOST
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address, as uvicorn takes it
        out += ["--bind", f"{host}:{port or UVICORN_PORT}"]
    return out


def migration_table_rst() -> str:
    """The docs' flag-by-flag table for gunicorn and uvicorn users, from `SAME`, `FOREIGN`
    and `HOST_PORT` (a test holds the page to it)."""
    rows = [(server, flags, flags, "same") for server, flags in SAME]
    rows.append(("uvicorn", "--host, --port", "--bind HOST:PORT", "same meaning; uvicorn's 127.0.0.1:8000 fills "
                 "a missing half"))
    rows.append(("gunicorn", "--keep-alive N", "--idle-timeout N", "same meaning; 0 is --no-keep-alive"))
    for f in FOREIGN:
        if f.rewrite is not None:
            rows.append((f.server, ", ".join(f.flags), f.says, f"same meaning; {f.note}" if f.note else "same meaning"))
        else:
            rows.append((f.server, ", ".join(f.flags), "\\-", f"refused: {f.says}"))
    rows.sort(key=lambda r: (r[0], r[1].lstrip("-").lower()))
    head = ("server", "their flag", "gracehttp", "same or different")
    widths = [max(len(r[i]) + (4 if i in (1, 2) and r[i] != "\\-" else 0) for r in [*rows, head])
              for i in range(4)]

    def line(cells: tuple[str, ...], code: bool) -> str:
        out = []
        for i, cell in enumerate(cells):
            text = f"``{cell}``" if code and i in (1, 2) and cell != "\\-" else cell
            out.append(text.ljust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("=" * w for w in widths)
    return "\n".join([rule, line(head, False), rule, *(line(r, True) for r in rows), rule])
