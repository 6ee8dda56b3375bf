"""wsgiref.validate around an app: the server's side of PEP 3333 raises nothing."""

from __future__ import annotations

import logging
import threading
from typing import Any
from wsgiref.validate import validator

import pytest

from tests.helpers import connect, get, read_response, running


def make_app(tmp_file: str) -> Any:
    def inner(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        if path == "/post":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/chunked":
            stream = environ["wsgi.input"]
            parts = [stream.readline(), stream.read(3), *stream.readlines()]
            body = b"".join(parts)
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return iter([b"a", b"b", b"c"])
        if path == "/file":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return environ["wsgi.file_wrapper"](open(tmp_file, "rb"))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"get"]

    return validator(inner)


class Errors(logging.Handler):
    """Collects the app errors the server logs (the validator raises AssertionError)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> Any:
    handler = Errors()
    logger = logging.getLogger("gracehttp")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def test_validator_reports_nothing(tmp_path: Any, logged: list[logging.LogRecord]) -> None:
    blob = tmp_path / "f.bin"
    blob.write_bytes(b"file-content" * 100)
    with running(make_app(str(blob))) as server:
        assert get(server.port, "/").body == b"get"
        assert get(server.port, "/post", method="POST", body=b"payload").body == b"payload"
        with connect(server.port) as sock:
            sock.sendall(b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"6\r\nline1\n\r\n9\r\nabcline2\n\r\n6\r\nline3\n\r\n0\r\n\r\n")
            assert read_response(sock).body == b"line1\nabcline2\nline3\n"
        assert get(server.port, "/stream").body == b"abc"
        assert get(server.port, "/file").body == b"file-content" * 100
    assert [r.getMessage() for r in logged] == []


def test_validator_catches_a_broken_environ_key(logged: list[logging.LogRecord]) -> None:
    """The check above can fail: a server that sends a wrong key is caught."""
    app = make_app("/dev/null")

    def broken(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.url_scheme"] = "gopher"
        return app(environ, start_response)

    with running(broken) as server:
        assert get(server.port, "/").status == 500
    assert logged
    assert logged[0].exc_info
    assert isinstance(logged[0].exc_info[1], AssertionError)


def test_concurrent_requests_see_separate_environs() -> None:
    seen: list[str] = []
    lock = threading.Lock()
    gate = threading.Barrier(4, timeout=5)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        gate.wait()
        with lock:
            seen.append(environ["QUERY_STRING"])
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    with running(app, threads=4) as server:
        threads = [threading.Thread(target=get, args=(server.port, f"/?n={i}")) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert sorted(seen) == [f"n={i}" for i in range(4)]


pytestmark = pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")
