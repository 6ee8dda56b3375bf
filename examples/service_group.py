"""An API, its private admin port and a background job under one lifecycle (SPEC section 7):

    python examples/service_group.py
    curl localhost:8080/            # the app
    curl localhost:9090/metrics     # the admin listener (and /debug/ there)

SIGTERM or Ctrl-C stops everything together: both listeners drain, the job sees its
stop event, and members are joined under one shutdown_timeout. If the job raises,
the group stops too and run() returns the exception.
"""

import logging
import os
import threading

from gracehttp import Config, ServiceGroup

cache = {"refreshed": 0}


def app(environ, start_response):
    body = f"cache refreshed {cache['refreshed']} times\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def refresh_cache(stop: threading.Event) -> None:
    """A background job: it must return once `stop` is set."""
    interval = float(os.environ.get("REFRESH_SECONDS", "1.0"))
    while not stop.wait(interval):
        cache["refreshed"] += 1
    logging.getLogger("example").info("refresh_cache stopped after %d refreshes", cache["refreshed"])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.from_env(admin_addr=os.environ.get("GRACEHTTP_ADMIN_ADDR", "127.0.0.1:9090"), debug=True)
    group = ServiceGroup(app, config=config)
    group.add(refresh_cache)
    error = group.run()
    raise SystemExit(1 if error is not None else 0)
