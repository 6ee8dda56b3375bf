"""gunicorn's and uvicorn's flag spellings: the ones that mean the same thing here are
rewritten to gracehttp's before parsing; the others fail naming what to use instead.

Upper layer (the command line's, which calls `translate` before parsing): standard
library only. `FOREIGN` is the one declaration of these flags; the README's
migration table is checked against it.
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


FOREIGN: tuple[Foreign, ...] = (
    Foreign(("-w",), "gunicorn", lambda v: ["--workers", v], "--workers"),
    Foreign(("--graceful-timeout",), "gunicorn", lambda v: ["--drain-timeout", v], "--drain-timeout"),
    Foreign(("--limit-request-line",), "gunicorn", lambda v: ["--max-request-line", v], "--max-request-line"),
    Foreign(("--limit-request-fields",), "gunicorn", lambda v: ["--max-header-count", v], "--max-header-count"),
    Foreign(("-p", "--pid"), "gunicorn", lambda v: ["--pid-file", v], "--pid-file"),
    Foreign(("--preload",), "gunicorn", lambda v: [], "nothing: the app is always imported before forking",
            takes_value=False),
    Foreign(("--uds",), "uvicorn", lambda v: ["--bind", f"unix:{v}"], "--bind unix:PATH"),
    Foreign(("--fd",), "uvicorn", lambda v: ["--bind", f"fd://{v}"], "--bind fd://N"),
    Foreign(("--timeout", "-t"), "gunicorn", None,
            "no equivalent yet: gunicorn kills a worker whose request runs longer; here --read-timeout and "
            "--write-timeout bound each client, and /debug/threads shows a stuck request"),
    Foreign(("--limit-request-field_size",), "gunicorn", None,
            "use --max-header-bytes, which bounds the whole header block, not each field"),
    Foreign(("--access-logfile",), "gunicorn", None, "use --access-log common|combined|json (written to stderr)"),
    Foreign(("-k", "--worker-class"), "gunicorn", None,
            "there are no worker classes: one engine, in which idle and slow clients hold no thread "
            "(--threads, --workers)"),
    Foreign(("-c",), "gunicorn", None, "use --config FILE.toml (or [tool.gracehttp] in pyproject.toml)"),
)
#: uvicorn's --host and --port: together one --bind (uvicorn's defaults fill a missing half).
HOST_PORT = ("--host", "--port")
UVICORN_HOST, UVICORN_PORT = "127.0.0.1", "8000"
_NUMBER = re.compile(r"\d+(\.\d+)?$")


class ForeignFlagError(Exception):
    """A flag of another server with no equivalent here: the message names what to use."""


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
        if arg.startswith("-w") and arg[2:].isdigit():  # gunicorn's -w4
            out += ["--workers", arg[2:]]
            i += 1
            continue
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
