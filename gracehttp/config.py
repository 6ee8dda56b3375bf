"""`Config`: every setting declared once, with its default, help text and parser.

Middle layer: imports `errors` and `addresses`. The environment reader, the CLI's
flags and TOML keys (`gracehttp.cli`) and the docs' table (docs/configuration.rst) derive from the field
declarations below, so a setting cannot exist in one place and be missing from another.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from gracehttp.accesslog import compile_format
from gracehttp.addresses import parse_address

if TYPE_CHECKING:
    import ssl  # imported at run time only when TLS is configured: it costs memory and start-up
from gracehttp.errors import ConfigError

WSGIApp = Callable[..., Any]
ACCESS_LOG_FORMATS = (None, "common", "combined", "json")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (use true/false)")


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(text: str) -> Any:
        return None if text.strip().lower() in ("", "none", "null") else parse(text)
    return parse_optional


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def setting(default: Any, help: str, parse: Callable[[str], Any] | None = None, *, topic: str,
            flags: tuple[str, ...] | None = None) -> Any:
    """Declare a field: `parse` turns a string (env var, flag) into its value; None means
    the field cannot come from text (an app object, a socket, a logger). `topic` groups
    it in ``--help``; `flags` overrides the command-line flag derived from its name."""
    return field(default=default, metadata={"help": help, "parse": parse, "topic": topic, "flags": flags})


@dataclass
class Config:
    """The server's settings (docs/configuration.rst). Invalid values raise `ConfigError`."""

    addr: str = setting(":8080", "main listener: host:port, :port, :0, [::1]:port, unix:/path or fd://N", str,
                        topic="listeners", flags=("--bind", "-b"))
    addrs: tuple[str, ...] = setting((), "more main listeners, same forms (comma-separated in env)", _parse_list,
                                     topic="listeners", flags=())
    listeners: tuple[socket.socket, ...] = setting((), "already-bound sockets to serve on", topic="listeners")
    app: WSGIApp | None = setting(None, "the WSGI callable; None serves the registered routes", topic="serving")
    threads: int = setting(32, "request-handling threads (a bounded pool)", int, topic="serving")
    max_connections: int = setting(1024, "client connections per process that may wait on their client; past "
                                   "it, stalled ones give way and new ones get 0.25 s to send a request", int,
                                   topic="listeners")
    backlog: int = setting(1024, "listen backlog", int, topic="listeners")
    read_header_timeout: float = setting(10.0, "seconds to receive the request line and headers", float,
                                         topic="timeouts")
    read_timeout: float = setting(30.0, "seconds to receive a whole request, body included", float, topic="timeouts")
    write_timeout: float = setting(30.0, "seconds a response may take to be written", float, topic="timeouts")
    idle_timeout: float = setting(120.0, "seconds a keep-alive connection may sit idle", float, topic="timeouts")
    request_timeout: float | None = setting(
        None, "seconds a request may run in the app before it is logged with its stack and counted; with "
        "workers, its worker is then replaced (the new one ready first); in one process, /livez fails once "
        "every request thread is stuck", _optional(float), topic="timeouts")
    keep_alive: bool = setting(True, "HTTP/1.1 persistent connections", _parse_bool, topic="serving")
    max_request_line: int = setting(8192, "bytes of the request line; past it: 414", int, topic="limits")
    max_header_bytes: int = setting(65536, "bytes of all header lines; past it: 431", int, topic="limits")
    max_header_count: int = setting(100, "header fields; past it: 431", int, topic="limits")
    max_body_bytes: int | None = setting(None, "request body limit in bytes; past it: 413", _optional(int),
                                         topic="limits")
    max_spool_bytes: int = setting(16 * 1024 * 1024, "bytes of a request body collected before the app is "
                                   "called; the app reads the rest as it arrives", int, topic="limits")
    drain_delay: float = setting(0.0, "seconds between the readiness flip and closing the listeners", float,
                                 topic="shutdown")
    drain_timeout: float = setting(25.0, "seconds from the signal to wait for in-flight requests", float,
                                   topic="shutdown")
    shutdown_timeout: float = setting(30.0, "seconds from the signal for drain and callbacks", float, topic="shutdown")
    drain_reject: bool = setting(False, "answer 503 to requests arriving after the signal", _parse_bool,
                                 topic="shutdown")
    health: bool = setting(True, "serve /livez, /readyz, /health, /ready on the main listeners", _parse_bool,
                           topic="admin")
    health_prefix: str = setting("", "path prefix of the health endpoints on the main listeners (/_gracehttp: "
                                 "/_gracehttp/livez ...), leaving /health and the others to the app", str,
                                 topic="admin")
    admin_addr: str | None = setting(None, "private listener for metrics, drain and debug", _optional(str),
                                     topic="admin", flags=("--admin-bind",))
    debug: bool = setting(False, "serve /debug/* on the admin listener", _parse_bool, topic="admin")
    metrics: bool = setting(True, "collect Prometheus metrics", _parse_bool, topic="admin")
    certfile: str | None = setting(None, "TLS certificate chain (PEM; may hold the key too)", _optional(str),
                                   topic="tls")
    keyfile: str | None = setting(None, "TLS private key (PEM), when not in certfile", _optional(str), topic="tls")
    ssl_context: ssl.SSLContext | None = setting(None, "a ready ssl.SSLContext for the main listeners", topic="tls")
    reuse_port: bool = setting(False, "SO_REUSEPORT on TCP listeners", _parse_bool, topic="listeners")
    workers: int = setting(1, "processes; more than one forks workers sharing the listeners", int, topic="processes")
    max_requests: int | None = setting(None, "replace a worker (new one ready first) after this many requests",
                                              _optional(int), topic="processes")
    max_requests_jitter: int = setting(0, "random extra requests added to max_requests", int, topic="processes")
    upgrade_timeout: float = setting(60.0, "seconds a new generation (or worker) has to report ready", float,
                                     topic="processes")
    pid_file: str | None = setting(None, "pid file: written when ready, rewritten by an upgrade, removed at exit",
                                     _optional(str), topic="processes")
    access_log: str | None = setting(None, "None, common, combined or json", _optional(str), topic="logging")
    access_logfile: str | None = setting(None, "where access lines go, alone on their line: a file, or - for "
                                         "stdout (the CLI's default); alone it turns on the combined format",
                                         _optional(str), topic="logging")
    access_logformat: str | None = setting(None, "a gunicorn access line: atoms such as %(h)s %(r)s %(s)s %(b)s "
                                           "%(D)s %({x-request-id}i)s; alone it turns the access log on",
                                           _optional(str), topic="logging")
    access_log_probes: bool = setting(False, "also log the health probes the server answers itself",
                                      _parse_bool, topic="logging")
    request_id: bool = setting(False, "give each request an X-Request-ID (a trusted peer's, or a new one): "
                               "in the environ, the response and the request's log lines", _parse_bool,
                               topic="logging")
    logger: logging.Logger | None = setting(None, "a logging.Logger (default: 'gracehttp')", topic="logging")
    server_header: str | None = setting("gracehttp", "the Server response header; None omits it", _optional(str),
                                        topic="serving")
    forwarded_allow_ips: tuple[str, ...] = setting(
        ("127.0.0.1", "::1"), "peers trusted to set X-Forwarded-* (addresses or networks, comma-separated; * for "
        "any; a Unix socket's peer is trusted)", _parse_list, topic="proxy")
    proxy_headers: bool = setting(True, "from a trusted peer, X-Forwarded-For and -Proto set REMOTE_ADDR and "
                                  "wsgi.url_scheme", _parse_bool, topic="proxy")
    forwarded_host: bool = setting(False, "also X-Forwarded-Host and -Port from a trusted peer (only if the proxy "
                                   "sets them itself, never passing a client's own)", _parse_bool, topic="proxy")
    root_path: str = setting("", "the path prefix the app is mounted under: SCRIPT_NAME, taken off PATH_INFO "
                             "when the path starts with it", str, topic="proxy")

    def __post_init__(self) -> None:
        self.addrs = tuple(self.addrs)
        self.listeners = tuple(self.listeners)
        parse_address(self.addr, "addr")
        for extra in self.addrs:
            parse_address(extra, "addrs")
        if self.admin_addr is not None:
            parse_address(self.admin_addr, "admin_addr")
        for sock in self.listeners:
            if not isinstance(sock, socket.socket):
                raise ConfigError("listeners", f"expected socket.socket objects, got {type(sock).__name__}")
        if self.app is not None and not callable(self.app):
            raise ConfigError("app", "the WSGI app must be callable")
        for name in ("threads", "max_connections", "backlog", "max_request_line",
                     "max_header_bytes", "max_header_count", "workers", "max_spool_bytes"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("max_body_bytes", "max_requests"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=0)
        _check_int("max_requests_jitter", self.max_requests_jitter, minimum=0)
        for name in ("read_header_timeout", "read_timeout", "write_timeout", "idle_timeout",
                     "shutdown_timeout", "upgrade_timeout"):
            _check_number(name, getattr(self, name), positive=True)
        for name in ("drain_delay", "drain_timeout"):
            _check_number(name, getattr(self, name), positive=False)
        if self.request_timeout is not None:
            _check_number("request_timeout", self.request_timeout, positive=True)
        if self.drain_timeout > self.shutdown_timeout:
            raise ConfigError("drain_timeout", f"{self.drain_timeout} is longer than shutdown_timeout "
                              f"({self.shutdown_timeout}); the drain must fit inside the shutdown")
        if self.drain_delay > self.drain_timeout:
            raise ConfigError("drain_delay", f"{self.drain_delay} is longer than drain_timeout ({self.drain_timeout})")
        if self.access_log not in ACCESS_LOG_FORMATS:
            raise ConfigError("access_log", f"{self.access_log!r} is not one of common, combined, json")
        if self.access_logformat is not None:
            if self.access_log is not None:
                raise ConfigError("access_logformat", f"give access_log ({self.access_log!r}) or "
                                  "access_logformat, not both")
            try:
                compile_format(self.access_logformat)
            except ValueError as exc:
                raise ConfigError("access_logformat", str(exc)) from None
        if self.access_logfile is not None and self.access_logfile != "-":
            path = self.access_logfile
            parent = os.path.dirname(os.path.abspath(path))
            if os.path.isdir(path):
                raise ConfigError("access_logfile", f"{path!r} is a directory")
            if not os.path.isdir(parent):
                raise ConfigError("access_logfile", f"{path!r}: no directory {parent!r}")
            if not os.access(path if os.path.exists(path) else parent, os.W_OK):
                raise ConfigError("access_logfile", f"{path!r} is not writable")
        _check_prefix("health_prefix", self.health_prefix, "/_gracehttp")
        if self.keyfile is not None and self.certfile is None:
            raise ConfigError("certfile", "keyfile is given without its certfile")
        if self.ssl_context is not None:
            import ssl

            if not isinstance(self.ssl_context, ssl.SSLContext):
                raise ConfigError("ssl_context", "expected an ssl.SSLContext")
        for name in ("certfile", "keyfile"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ConfigError(name, f"{path!r} is not a readable file")
        if self.ssl_context is not None and self.certfile is not None:
            raise ConfigError("certfile", "give certfile/keyfile or ssl_context, not both")
        self._tls: ssl.SSLContext | None = None
        if self.certfile is not None:
            self._tls = self.tls_context()  # now: a mistake is one line naming the file, and --check loads them
        if self.logger is not None and not isinstance(self.logger, logging.Logger):
            raise ConfigError("logger", "expected a logging.Logger")
        if isinstance(self.forwarded_allow_ips, str):
            self.forwarded_allow_ips = _parse_list(self.forwarded_allow_ips)
        self.forwarded_allow_ips = tuple(self.forwarded_allow_ips)
        for entry in self.forwarded_allow_ips:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ConfigError("forwarded_allow_ips", f"{entry!r} is not an address, a network "
                                      "(10.0.0.0/8) or *") from None
        _check_prefix("root_path", self.root_path, "/prefix")

    @classmethod
    def from_env(cls, prefix: str = "GRACEHTTP_", environ: Mapping[str, str] | None = None,
                 **overrides: Any) -> Config:
        """Build a Config from ``{prefix}{FIELD}`` variables; `overrides` win over them."""
        values = env_values(prefix, os.environ if environ is None else environ)
        values.update(overrides)
        return cls(**values)

    def get_logger(self) -> logging.Logger:
        return self.logger or logging.getLogger("gracehttp")

    @property
    def access_format(self) -> str | None:
        """The access log's format in effect: `access_log`, else `access_logformat`, else
        ``combined`` when only `access_logfile` is given (gunicorn's default line); None: off."""
        if self.access_log is not None:
            return self.access_log
        if self.access_logformat is not None:
            return self.access_logformat
        return "combined" if self.access_logfile is not None else None

    def tls_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context (TLS 1.2 or newer), or None for plain HTTP."""
        if self.ssl_context is not None:
            return self.ssl_context
        if self.certfile is None:
            return None
        if self._tls is not None:
            return self._tls  # loaded when this Config was made
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            # No keyfile: a PEM holding both. The password callback keeps OpenSSL from
            # prompting on the terminal for an encrypted key.
            ctx.load_cert_chain(self.certfile, self.keyfile, password=_no_password)
        except (ssl.SSLError, OSError, _EncryptedKey) as exc:
            raise _tls_mistake(self.certfile, self.keyfile, exc) from None
        return ctx


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    raise _EncryptedKey


def _tls_mistake(certfile: str, keyfile: str | None, exc: Exception) -> ConfigError:
    """What is wrong with a certificate and key that OpenSSL refused, naming the file (the
    field the user set: certfile when it holds the key too)."""

    texts: dict[str, bytes] = {}

    def holds(path: str, marker: bytes) -> bool:
        if path not in texts:  # each file read once
            try:
                with open(path, "rb") as f:
                    texts[path] = f.read()
            except OSError:
                texts[path] = b""
        return marker in texts[path]

    if not holds(certfile, b"-----BEGIN CERTIFICATE-----"):
        swapped = " (is it the key? certfile and keyfile swapped?)" if holds(certfile, b"PRIVATE KEY-----") else ""
        return ConfigError("certfile", f"{certfile!r} holds no PEM certificate{swapped}")
    key = keyfile or certfile
    if not holds(key, b"PRIVATE KEY-----"):
        if keyfile is None:
            return ConfigError("keyfile", f"{certfile!r} holds no private key: give keyfile, or put the key "
                               "in the same PEM file")
        swapped = " (is it the certificate?)" if holds(keyfile, b"-----BEGIN CERTIFICATE-----") else ""
        return ConfigError("keyfile", f"{keyfile!r} holds no PEM private key{swapped}")
    field = "keyfile" if keyfile is not None else "certfile"
    if isinstance(exc, _EncryptedKey) or holds(key, b"ENCRYPTED"):
        return ConfigError(field, f"{key!r} holds an encrypted private key: give it unencrypted (openssl pkey "
                           "-in KEY -out PLAIN), or build an ssl.SSLContext yourself (ssl_context)")
    if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
        if keyfile is None:
            return ConfigError(field, f"the key in {certfile!r} is not the key of its certificate")
        return ConfigError(field, f"{key!r} is not the key of the certificate in {certfile!r}")
    return ConfigError("certfile", f"{certfile!r} and {key!r} could not be loaded: {exc}")


def env_values(prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as ``{prefix}{FIELD}`` variables, parsed; ConfigError names a bad one."""
    values: dict[str, Any] = {}
    for f in fields(Config):
        parse = f.metadata.get("parse")
        key = prefix + f.name.upper()
        if parse is None or key not in environ:
            continue
        try:
            values[f.name] = parse(environ[key])
        except ValueError as exc:
            raise ConfigError(f.name, f"{key}={environ[key]!r}: {exc}") from None
    return values


def flags_of(f: Field[Any]) -> tuple[str, ...]:
    """A field's command-line flags: ``--drain-timeout`` for `drain_timeout`, unless declared."""
    if f.metadata.get("parse") is None:
        return ()
    declared: tuple[str, ...] | None = f.metadata.get("flags")
    return declared if declared is not None else ("--" + f.name.replace("_", "-"),)


def env_fields() -> list[str]:
    """Names of the fields that can be set from text (environment, flags, files)."""
    return [f.name for f in fields(Config) if f.metadata.get("parse") is not None]


def _check_prefix(name: str, value: object, example: str) -> None:
    """A path prefix matched against request paths as sent: plain, so it matches one way."""
    if not isinstance(value, str) or (value and (not value.startswith("/") or value.endswith("/")
                                                 or not value.isascii() or any(c in value for c in "?#% "))):
        raise ConfigError(name, f"{value!r}: expected '' or a path like {example} (ASCII, unescaped, "
                          "no trailing /)")


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")


def _check_number(name: str, value: Any, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"expected a number of seconds, got {value!r}")
    if value < 0 or (positive and value == 0) or value != value:
        raise ConfigError(name, f"must be {'positive' if positive else 'zero or more'}, got {value}")


def config_table_rst() -> str:
    """The configuration table of docs/configuration.rst, derived from the field declarations."""
    header = ("field", "default", "environment", "flag", "meaning")
    rows = [header]
    for f in fields(Config):
        default = "``None``" if f.default is None else f"``{f.default!r}``"
        env = f"``GRACEHTTP_{f.name.upper()}``" if f.metadata.get("parse") else "(Python only)"
        flag = ", ".join(f"``{x}``" for x in flags_of(f)) or ("(``--bind``)" if f.name == "addrs" else "")
        rows.append((f"``{f.name}``", default, env, flag, f.metadata["help"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip(), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows[1:]]
    lines.append(rule)
    return "\n".join(lines)
