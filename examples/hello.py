"""The smallest gracehttp program: ``python examples/hello.py``, then curl localhost:8080.

Ctrl-C (or SIGTERM) drains in-flight requests and exits; a second Ctrl-C forces it.
"""

import logging
import os

from gracehttp import Config, GracefulServer


def app(environ, start_response):
    body = b"Hello, world!\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = GracefulServer(Config(addr=os.environ.get("GRACEHTTP_ADDR", ":8080"), app=app))
    server.register_shutdown_callback(print, "bye")
    server.serve_forever()
