"""The apps every server is measured on. Each echoes the client's port in ``X-Port`` so
the wrk script can count how many of its connections were served (fairness)."""

import json
import os
import tempfile
import time

HELLO = b"Hello, world!\n"
DOC = json.dumps({"items": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"], "price": i * 1.5}
                            for i in range(14)]})
MIB = 1 << 20
#: 1 MiB of random bytes, made when the heavier app first asks (`_big`): the idle memory
#: measured on the hello app holds no other app's payload.
_BIG = []
#: The file served through ``wsgi.file_wrapper``: 1 MiB, written by the first server that needs it.
_FILE = os.path.join(tempfile.gettempdir(), f"gracehttp-bench-{os.getuid()}.bin")


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO))),
                              ("X-Port", environ.get("REMOTE_PORT", "-"))])
    return [HELLO]


def json_app(environ, start_response):
    body = json.dumps(json.loads(DOC)).encode()  # about 1 KB, encoded per request like a real API
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                              ("X-Port", environ.get("REMOTE_PORT", "-"))])
    return [body]


def _flask():
    from flask import Flask, request

    flask_app = Flask("bench")

    @flask_app.route("/")
    def index():
        return HELLO, 200, {"Content-Type": "text/plain", "X-Port": request.environ.get("REMOTE_PORT", "-")}

    return flask_app


def __getattr__(name):
    # The Flask app is made only when a server asks for it: the others never import Flask.
    if name == "flask_app":
        globals()[name] = _flask()
        return globals()[name]
    raise AttributeError(name)


def _big():
    if not _BIG:
        _BIG.append(os.urandom(MIB))  # two threads may both make it: harmless
    return _BIG[0]


def _file_path():
    if not os.path.exists(_FILE) or os.path.getsize(_FILE) != MIB:
        tmp = f"{_FILE}.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(_big())
        os.replace(tmp, _FILE)
    return _FILE


def _chunks(f):
    with f:
        while block := f.read(65536):
            yield block


def heavy(environ, start_response):
    """The heavier requests, by path: ``/upload`` reads the whole body (wrk POSTs 1 MiB),
    ``/big`` answers 1 MiB from memory, ``/file`` 1 MiB through ``wsgi.file_wrapper``,
    ``/work`` spends 1 ms of pure Python."""
    path = environ.get("PATH_INFO", "/")
    if path == "/upload":
        body = str(len(environ["wsgi.input"].read())).encode()
    elif path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(MIB))])
        return [_big()]
    elif path == "/file":
        f = open(_file_path(), "rb")  # noqa: SIM115 (closed by the wrapper or _chunks)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(MIB))])
        wrapper = environ.get("wsgi.file_wrapper")
        return _chunks(f) if wrapper is None else wrapper(f, 65536)
    elif path == "/work":
        end = time.perf_counter() + 0.001
        n = 0
        while time.perf_counter() < end:
            n += 1
        body = str(n).encode()
    else:
        body = HELLO
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
