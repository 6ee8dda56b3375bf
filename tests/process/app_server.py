"""A gracehttp process for the signal tests: config as JSON in argv[1]; prints events to stdout.

Exit code: 0 when the shutdown drained every request and every callback succeeded, else 1
(the contract of SPEC section 5, step 6).
"""

import json
import logging
import os
import sys
import time
from urllib.parse import parse_qs

from gracehttp import Config, GracefulServer, register_shutdown_callback

# The upgrade tests make a new generation (and only it) fail at import, or never get ready.
if "_GRACEHTTP_UPGRADE" in os.environ:
    if os.environ.get("APP_FAIL_IN_NEW_GENERATION"):
        raise RuntimeError("this new generation fails at import (APP_FAIL_IN_NEW_GENERATION)")
    if os.environ.get("APP_HANG_IN_NEW_GENERATION"):
        time.sleep(3600)


def event(text: str) -> None:
    print(f"{time.time():.6f} {text}", flush=True)


def app(environ, start_response):
    query = parse_qs(environ["QUERY_STRING"])
    if environ["PATH_INFO"] == "/slow":
        time.sleep(float(query.get("t", ["0.7"])[0]))
    if environ["PATH_INFO"] == "/big":  # 64 MiB, for clients that never read
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(64 << 20))])
        return (b"x" * (1 << 20) for _ in range(64))
    if environ["PATH_INFO"] == "/upload":
        size = len(environ["wsgi.input"].read())
        body = b"read %d" % size
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if environ["PATH_INFO"] == "/environ":  # /environ?key=NAME: repr of that environ value
        body = repr(environ.get(query["key"][0])).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    body = b"done %d" % os.getpid() if environ["PATH_INFO"] == "/pid" else b"done"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class WorkerFault(logging.Filter):
    """APP_WORKER_FAULT=exit:FLAG or hang:FLAG: while the file FLAG exists, a new worker
    exits or hangs as it starts, before it serves (on its "starting" debug line)."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.mode, _, self.flag = spec.partition(":")
        self.supervisor = os.getpid()

    def filter(self, record: logging.LogRecord) -> bool:
        if os.getpid() != self.supervisor and record.getMessage().endswith(") starting") and \
                os.path.exists(self.flag):
            if self.mode == "exit":
                os._exit(3)
            time.sleep(3600)
        return True


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(process)d %(message)s")
    if os.environ.get("APP_WORKER_FAULT"):
        logging.getLogger("gracehttp").setLevel(logging.DEBUG)
        logging.getLogger().handlers[0].addFilter(WorkerFault(os.environ["APP_WORKER_FAULT"]))
    fields = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    if os.environ.get("APP_FIELDS_FILE"):  # read at each start: an upgrade can change the config
        with open(os.environ["APP_FIELDS_FILE"]) as f:
            fields.update(json.load(f))
    server = GracefulServer(Config(app=app, addr="127.0.0.1:0", **fields))
    server.register_shutdown_callback(event, "callback 1")
    server.register_shutdown_callback(event, "callback 2")
    register_shutdown_callback(event, "process callback")
    server.serve_forever()
    if server.config.workers > 1:
        event(f"supervisor exit {server.exit_code}")
        return server.exit_code
    report = server.shutdown()
    event(f"report drained={report.drained} left={report.in_flight_left} errors={len(report.callback_errors)}")
    return 0 if report.drained and not report.callback_errors else 1


if __name__ == "__main__":
    sys.exit(main())
