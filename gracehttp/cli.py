"""The command line (docs/architecture.rst, "Command line"): ``gracehttp [options] MODULE:APP``.

Top layer: the only module that exits the process. Every flag is generated from
the `Config` field declarations (`gracehttp.config.flags_of`), like the
environment variables and the TOML keys, so none can go missing from one of them.

Precedence, lowest first: the defaults, ``[tool.gracehttp]`` in ``./pyproject.toml``,
the ``--config`` file, ``GRACEHTTP_*`` variables, the flags. A mistake (an unknown
module or attribute, an app that is not callable, a bad value) is one line on
stderr naming what to fix, and exit status 2; ``--log-level debug`` adds the
traceback. After serving, the exit status is 0 when every request drained and
every shutdown callback succeeded, 1 otherwise (docs/architecture.rst, "The shutdown sequence").
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from gracehttp import __version__
from gracehttp.accesslog import iso_time
from gracehttp.config import Config, env_values, flags_of
from gracehttp.errors import BindError, ConfigError
from gracehttp.foreign_flags import ForeignFlagError, translate
from gracehttp.requestid import RequestIdFilter
from gracehttp.server import GracefulServer

TOPICS = ("listeners", "serving", "proxy", "timeouts", "limits", "shutdown", "admin", "tls", "processes",
          "logging")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _log_level(text: str) -> str:
    """gunicorn takes the level in any case, uvicorn also ``trace``: both mean what they say."""
    low = text.lower()
    return "debug" if low == "trace" else low


class UsageError(Exception):
    """A mistake on the command line or in its files: one line for the user, exit status 2.

    `in_app`: the app's own code failed (its module raised on import, its factory
    raised), so its traceback is printed before the line, as gunicorn and uvicorn do.
    """

    def __init__(self, message: str, in_app: bool = False) -> None:
        super().__init__(message)
        self.in_app = in_app


# -- the app -------------------------------------------------------------------------


def load_app(spec: str) -> Callable[..., Any]:
    """``module:attr``, ``module:factory()`` or ``module:factory(arg=...)`` (literal arguments)."""
    module_name, sep, expr = spec.partition(":")
    if not module_name or (sep and not expr):
        raise UsageError(f"expected MODULE:APP (e.g. myproject.wsgi:application), got {spec!r}")
    try:
        call = ast.parse(expr or "app", mode="eval").body
    except SyntaxError:
        raise UsageError(f"{expr!r} is not an attribute name or a call like factory(debug=True)") from None
    target, args, kwargs = call, [], {}
    if isinstance(call, ast.Call):
        target = call.func
        try:
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
        except ValueError:
            raise UsageError(f"{expr!r}: a factory's arguments must be literals (numbers, strings, ...)") from None
    path = _dotted(target)
    if path is None:
        raise UsageError(f"{expr!r} is not an attribute name or a call like factory(debug=True)")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the current directory's modules
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise UsageError(f"no module named {exc.name!r} (looked in {os.getcwd()} and sys.path)") from exc
        raise UsageError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}", in_app=True) from exc
    except Exception as exc:
        raise UsageError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}", in_app=True) from exc
    for part in path:
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {'.'.join(path)!r}")
        obj = getattr(obj, part)
    if isinstance(call, ast.Call):
        try:
            obj = obj(*args, **kwargs)
        except Exception as exc:
            raise UsageError(f"{spec} raised {type(exc).__name__}: {exc}", in_app=True) from exc
    if not callable(obj):
        raise UsageError(f"{spec} is not a WSGI app: a {type(obj).__name__} is not callable")
    return obj  # type: ignore[no-any-return]


def app_traceback(exc: BaseException) -> str:
    """`exc`'s traceback from the app's own frames: without this module's and importlib's."""
    shown = traceback.TracebackException.from_exception(exc)
    ours = (__file__, importlib.__file__ or "")
    shown.stack = traceback.StackSummary.from_list(
        [f for f in shown.stack if f.filename not in ours and not f.filename.startswith("<frozen importlib")])
    return "".join(shown.format())


def _dotted(node: ast.expr) -> list[str] | None:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else [*head, node.attr]
    return None


# -- settings from files, the environment and flags ------------------------------------


def file_values(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A TOML table's settings, keys as the field names (``drain_timeout`` or ``drain-timeout``)."""
    settable = {f.name: f for f in fields(Config) if f.metadata.get("parse") is not None}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in settable:
            raise UsageError(f"{source}: unknown setting {key!r}{_did_you_mean(name, settable)}")
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


def _did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def unknown_env_warnings(environ: Mapping[str, str]) -> list[str]:
    """``GRACEHTTP_*`` variables that are no setting (a typo is otherwise silently ignored)."""
    known = {f.name.upper() for f in fields(Config) if f.metadata.get("parse") is not None}
    return [f"unknown setting {key}{_did_you_mean(key[10:], known, 'GRACEHTTP_')} ignored"
            for key in sorted(environ) if key.startswith("GRACEHTTP_") and key[10:] not in known]


def read_toml(path: str) -> dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found, unused-ignore]
    except ModuleNotFoundError:  # Python 3.10: tomli is the same parser, when installed
        try:
            import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]
        except ModuleNotFoundError:
            raise UsageError(f"{path}: reading TOML on Python 3.10 needs tomli (pip install tomli)") from None
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
            return data
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}") from None


def pyproject_values(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, "pyproject.toml")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            if "gracehttp" not in f.read():
                return {}  # nothing for us: not parsed (Python 3.10 may have no TOML parser)
    except OSError:
        return {}
    table = read_toml(path).get("tool", {}).get("gracehttp", {})
    return file_values(table, f"{path} [tool.gracehttp]")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        """One line, not the whole usage: the flag and what is wrong with its value."""
        self.exit(2, f"gracehttp: error: {message} (see gracehttp --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(  # no abbreviations: --reload is passed on to the child minus itself
        allow_abbrev=False,
        prog="gracehttp", description="Serve a WSGI app; drain on SIGTERM, upgrade on SIGUSR2.",
        epilog="Every option is also GRACEHTTP_<FIELD> in the environment and <field> in a TOML file; "
               "precedence: flags > environment > --config file > pyproject.toml [tool.gracehttp] > defaults.")
    parser.add_argument("app_spec", nargs="?", metavar="MODULE:APP",
                        help="the WSGI app: module:attr, module:factory() or module:factory(arg=...)")
    general = parser.add_argument_group("general")
    general.add_argument("--config", metavar="FILE.toml", help="settings file (top-level keys are field names)")
    general.add_argument("--check", action="store_true", help="print the effective config and exit")
    general.add_argument("--reload", action="store_true",
                         help="development: restart when a .py file under the current directory changes")
    general.add_argument("--log-level", choices=LOG_LEVELS, default="info", type=_log_level,
                         help="default: info (any case; uvicorn's trace is debug)")
    general.add_argument("--log-format", choices=("text", "json"), default="text",
                         help="text for terminals, json (one object per line) for log shippers")
    general.add_argument("--version", action="version", version=f"gracehttp {__version__}")
    groups = {topic: parser.add_argument_group(topic) for topic in TOPICS}
    for f in fields(Config):
        flags = flags_of(f)
        if not flags:
            continue
        group = groups[f.metadata["topic"]]
        default = f.default if f.default is not None else "none"
        if isinstance(default, tuple):
            default = ",".join(default) or "none"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                              # argparse %-formats help: an access line's atoms are literal
                              "help": f"{f.metadata['help']} (default: {default})".replace("%", "%%")}
        if f.name == "addr":
            group.add_argument(*flags, action="append", metavar="ADDR", **kw | {
                "help": f.metadata["help"] + f" (repeat for more listeners; default: {f.default})"})
        elif f.type in ("bool", bool):
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, **kw)
        else:
            metavar = "FORMAT" if f.name == "access_log" else f.name.upper()
            group.add_argument(*flags, type=_flag_parser(f.name, f.metadata["parse"]), metavar=metavar, **kw)
    return parser


def _flag_parser(name: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}") from None
    convert.__name__ = name  # argparse names the type in its message
    return convert


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    values = {f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)}
    if "addr" in values:
        binds = values.pop("addr")
        values["addr"], values["addrs"] = binds[0], tuple(binds[1:])
    return values


def settings(args: argparse.Namespace, environ: Mapping[str, str], directory: str) -> dict[str, Any]:
    """Every source merged, lowest precedence first."""
    values = pyproject_values(directory)
    if args.config:
        values.update(file_values(read_toml(args.config), args.config))
    values.update(env_values("GRACEHTTP_", environ))
    for warning in unknown_env_warnings(environ):
        print(f"gracehttp: warning: {warning}", file=sys.stderr)
    values.update(flag_values(args))
    return values


# -- logging ---------------------------------------------------------------------------


class TextFormatter(logging.Formatter):
    """``time [pid] LEVEL logger: message [request ID]``, the time in ISO 8601 with its
    offset (what journald, Loki and a reader in another time zone can all place); the
    request id (`RequestIdFilter`) on the lines written while a request runs."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        line = super().formatMessage(record)
        return f"{line} [request {rid}]" if rid is not None else line


class JsonFormatter(TextFormatter):
    """One JSON object per line: what log shippers (Loki, Elasticsearch, CloudWatch) parse.
    (Access lines have a handler of their own, which writes their object as it is.)"""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname.lower(), "logger": record.name,
                 "pid": record.process, "message": record.getMessage()}
        rid = getattr(record, "request_id", None)
        if rid is not None:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())  # the app's own lines carry their request's id (json)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# -- main ------------------------------------------------------------------------------


def describe(config: Config, app_spec: str) -> str:
    """The effective config, one ``field = value`` line each (what --check prints); the
    app as it was given (``examples.flask_app:app``), which the user can recognise."""
    shown = []
    for f in fields(Config):
        value = getattr(config, f.name)
        if f.name == "app":
            shown.append(f"app = {app_spec}")
        else:
            shown.append(f"{f.name} = {value!r}")
    return "\n".join(shown)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        # gunicorn's and uvicorn's spellings: the same meaning rewritten, the rest named.
        translated = translate(sys.argv[1:] if argv is None else argv)
    except ForeignFlagError as exc:
        print(f"gracehttp: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(translated)
    setup_logging(args.log_level, args.log_format)
    try:
        if not args.app_spec:
            raise UsageError("which app? give MODULE:APP (e.g. myproject.wsgi:application)")
        values = settings(args, os.environ, os.getcwd())
        app = load_app(args.app_spec)
        if (values.get("access_log") or values.get("access_logformat")) and values.get("access_logfile") is None:
            values["access_logfile"] = "-"  # gunicorn's and uvicorn's place: stdout, apart from the server's log
        config = Config(app=app, **values)
    except (UsageError, ConfigError) as exc:
        if args.log_level == "debug":
            traceback.print_exc()
        elif isinstance(exc, UsageError) and exc.in_app and exc.__cause__ is not None:
            print(app_traceback(exc.__cause__), end="", file=sys.stderr)  # then the summary line
        where = ""
        if isinstance(exc, ConfigError) and exc.field in {f.name for f in fields(Config)}:
            f = next(f for f in fields(Config) if f.name == exc.field)
            where = f" (set by {', '.join(flags_of(f)) or '--bind'}, GRACEHTTP_{f.name.upper()} or a TOML file)"
        print(f"gracehttp: error: {exc}{where}", file=sys.stderr)
        return 2
    if args.check:
        print(describe(config, args.app_spec))
        return 0

    if args.reload:
        from gracehttp.reloader import run_with_reload

        child_argv = [arg for arg in (argv if argv is not None else sys.argv[1:]) if arg != "--reload"]
        return run_with_reload(child_argv, config.shutdown_timeout, config.get_logger())
    server = GracefulServer(config)
    try:
        server.serve_forever()
    except OSError as exc:  # binding: the port is taken, the path is not writable...
        if args.log_level == "debug":
            traceback.print_exc()
        message = str(exc) if isinstance(exc, BindError) else f"cannot listen: {exc}"
        print(f"gracehttp: error: {message}", file=sys.stderr)
        return 2
    if config.workers > 1:
        return server.exit_code
    report = server.shutdown()
    return 0 if report.drained and not report.callback_errors and not server.exit_code else 1


if __name__ == "__main__":
    sys.exit(main())
