"""A pytest plugin for waitress's own functional tests: their fixture servers become gracehttp.

Loaded into a separate pytest run inside waitress's unpacked source (``-p
gracehttp_peer_plugin``, see `tests/peers/test_waitress_suite.py`), where ``tests`` is
waitress's test package. The test classes run unmodified; only the server class each
one starts in its subprocess (``TcpTests.server``, ``UnixTests.server``) is replaced
by one that serves the same fixture app with gracehttp, on a socket bound the same
way, reporting its address through the same queue.

waitress's options become gracehttp's where gracehttp has them
(``max_request_header_size``, ``max_request_body_size``: `_OPTIONS`); the others have no
equivalent and are dropped: ``expose_tracebacks`` (gracehttp never sends a traceback
to a client) and the ``trusted_proxy*`` settings.
"""

from __future__ import annotations

import os
import socket
from typing import Any

#: waitress option -> gracehttp fields. waitress's header size counts the request line too,
#: which gracehttp bounds on its own (max_request_line): both get the value.
_OPTIONS = {"max_request_header_size": ("max_header_bytes", "max_request_line"),
            "max_request_body_size": ("max_body_bytes",)}
_DROPPED = {"expose_tracebacks", "trusted_proxy", "trusted_proxy_count", "trusted_proxy_headers",
            "clear_untrusted_proxy_headers"}


class _GracehttpFixture:
    """What waitress's fixture servers are to its tests: built in the server subprocess
    with the app, a queue for the bound address and waitress's options; then ``run()``."""

    family = socket.AF_INET

    def __init__(self, application: Any, queue: Any, **kw: Any) -> None:
        from gracehttp import Config, GracefulServer

        unknown = set(kw) - set(_OPTIONS) - _DROPPED
        if unknown:
            raise TypeError(f"no gracehttp equivalent decided for waitress options {sorted(unknown)}")
        fields = {field: v for k, v in kw.items() if k in _OPTIONS for field in _OPTIONS[k]}
        sock = self.bind()
        self.server = GracefulServer(Config(app=application, listeners=(sock,), threads=4, **fields))
        queue.put(sock.getsockname())

    def bind(self) -> socket.socket:
        return socket.create_server(("127.0.0.1", 0))

    def run(self) -> None:
        self.server.serve_forever()  # until the test's terminate(): SIGTERM, a graceful drain


class _GracehttpUnixFixture(_GracehttpFixture):
    family = socket.AF_UNIX

    def bind(self) -> socket.socket:
        path = f"/tmp/gracehttp-peer-{os.getpid()}.sock"
        if os.path.exists(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(128)
        return sock


def pytest_configure(config: Any) -> None:
    from tests import test_functional  # waitress's

    test_functional.TcpTests.server = _GracehttpFixture
    if hasattr(test_functional, "UnixTests"):
        test_functional.UnixTests.server = _GracehttpUnixFixture
