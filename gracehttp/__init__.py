"""gracehttp: a synchronous WSGI server that drains on SIGTERM and never drops a request."""

from gracehttp.callbacks import register_shutdown_callback
from gracehttp.config import Config
from gracehttp.errors import ConfigError, ProtocolError
from gracehttp.group import ServiceGroup, wait_group
from gracehttp.routing import Router, RouteRegistrar
from gracehttp.server import GracefulServer, serve
from gracehttp.shutdown import ShutdownReport
from gracehttp.state import State

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "GracefulServer",
    "ProtocolError",
    "RouteRegistrar",
    "Router",
    "ServiceGroup",
    "ShutdownReport",
    "State",
    "__version__",
    "register_shutdown_callback",
    "serve",
    "wait_group",
]
