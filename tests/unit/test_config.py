import socket

import pytest

import gracehttp
from gracehttp import Config, ConfigError
from gracehttp.config import env_fields

SPEC_DEFAULTS = {
    "addr": ":8080", "addrs": (), "listeners": (), "app": None, "threads": 32, "max_connections": 1024,
    "backlog": 1024, "read_header_timeout": 10.0, "read_timeout": 30.0, "write_timeout": 30.0,
    "idle_timeout": 120.0, "keep_alive": True, "max_request_line": 8192, "max_header_bytes": 65536,
    "max_header_count": 100, "max_body_bytes": None, "drain_delay": 0.0, "drain_timeout": 25.0,
    "shutdown_timeout": 30.0, "drain_reject": False, "health": True, "admin_addr": None, "debug": False,
    "metrics": True, "certfile": None, "keyfile": None, "ssl_context": None, "reuse_port": False,
    "workers": 1, "max_requests": None, "max_requests_jitter": 0, "upgrade_timeout": 60.0,
    "pid_file": None, "access_log": None, "logger": None, "server_header": "gracehttp",
}


def test_defaults_match_the_spec_table() -> None:
    cfg = Config()
    assert {name: getattr(cfg, name) for name in SPEC_DEFAULTS} == SPEC_DEFAULTS
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(("fields", "field"), [
    ({"read_timeout": -1}, "read_timeout"),
    ({"idle_timeout": 0}, "idle_timeout"),
    ({"drain_timeout": 40.0}, "drain_timeout"),
    ({"drain_delay": -0.5}, "drain_delay"),
    ({"addr": "nonsense"}, "addr"),
    ({"addr": "127.0.0.1:99999"}, "addr"),
    ({"addr": "::1:80"}, "addr"),
    ({"addrs": ("ok:1", "bad")}, "addrs"),
    ({"admin_addr": "x"}, "admin_addr"),
    ({"certfile": "/etc/hostname"}, "certfile"),  # not a PEM certificate
    ({"keyfile": "/etc/hostname"}, "certfile"),
    ({"threads": 0}, "threads"),
    ({"threads": "8"}, "threads"),
    ({"max_body_bytes": -1}, "max_body_bytes"),
    ({"access_log": "xml"}, "access_log"),
    ({"app": "not callable"}, "app"),
    ({"listeners": ("nope",)}, "listeners"),
])
def test_invalid_values_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**fields)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_address_forms_are_accepted() -> None:
    for addr in (":8080", ":0", "127.0.0.1:80", "[::1]:8080", "unix:/tmp/x.sock", "fd://3", "localhost:1"):
        assert Config(addr=addr).addr == addr


def test_from_env_reads_every_text_field() -> None:
    env = {
        "GRACEHTTP_ADDR": "127.0.0.1:9000", "GRACEHTTP_ADDRS": ":1, :2", "GRACEHTTP_THREADS": "4",
        "GRACEHTTP_DRAIN_TIMEOUT": "5", "GRACEHTTP_KEEP_ALIVE": "false", "GRACEHTTP_MAX_BODY_BYTES": "100",
        "GRACEHTTP_SERVER_HEADER": "none", "GRACEHTTP_ACCESS_LOG": "json",
    }
    cfg = Config.from_env(environ=env)
    assert cfg.addr == "127.0.0.1:9000"
    assert cfg.addrs == (":1", ":2")
    assert cfg.threads == 4
    assert cfg.drain_timeout == 5.0
    assert cfg.keep_alive is False
    assert cfg.max_body_bytes == 100
    assert cfg.server_header is None
    assert cfg.access_log == "json"
    assert Config.from_env(prefix="APP_", environ={"APP_THREADS": "2"}).threads == 2


def test_from_env_errors_name_the_field_and_variable() -> None:
    with pytest.raises(ConfigError, match="threads: GRACEHTTP_THREADS='many'"):
        Config.from_env(environ={"GRACEHTTP_THREADS": "many"})
    with pytest.raises(ConfigError, match="keep_alive"):
        Config.from_env(environ={"GRACEHTTP_KEEP_ALIVE": "perhaps"})


def test_objects_are_not_read_from_text() -> None:
    assert "app" not in env_fields()
    assert "listeners" not in env_fields()
    assert "logger" not in env_fields()


def test_prebound_listener_is_accepted() -> None:
    with socket.socket() as sock:
        assert Config(listeners=[sock]).listeners == (sock,)  # type: ignore[arg-type]


SPEC_NAMES = ["Config", "ConfigError", "GracefulServer", "State", "ShutdownReport", "RouteRegistrar",
              "Router", "serve", "register_shutdown_callback", "ServiceGroup", "wait_group"]
SERVER_MEMBERS = ["serve_forever", "listen_and_serve", "run_in_background", "shutdown", "close", "wait",
                  "drain", "undrain", "register_shutdown_callback", "state", "status", "in_flight",
                  "is_ready", "is_shutting_down", "is_https", "addresses", "port", "fds", "health_app",
                  "readiness_app", "server_close", "__enter__", "__exit__"]


def test_spec_names_are_exported() -> None:
    for name in SPEC_NAMES:
        assert hasattr(gracehttp, name), name
    for member in SERVER_MEMBERS:
        assert hasattr(gracehttp.GracefulServer, member), member
    assert [s.name for s in gracehttp.State] == ["NEW", "STARTING", "READY", "DRAINING", "STOPPING", "STOPPED"]
