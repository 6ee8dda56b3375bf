"""A ServiceGroup process for the group tests: two servers and one worker.

argv[1] is JSON: {"worker": "loop" | "raise" | "hang", "flag": path, "shutdown_timeout": s}.
"loop" returns when stopped; "raise" raises once the flag file exists; "hang" ignores
its stop event. Events go to stdout; the result of ``run()`` last.
"""

import json
import logging
import os
import sys
import threading
import time

from gracehttp import Config, GracefulServer, ServiceGroup


def event(text: str) -> None:
    print(f"{time.time():.6f} {text}", flush=True)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"group"]


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(process)d %(message)s")
    opts = json.loads(sys.argv[1])
    group = ServiceGroup(hello, config=Config(addr="127.0.0.1:0", threads=4,
                                              shutdown_timeout=opts.get("shutdown_timeout", 30.0),
                                              drain_timeout=min(25.0, opts.get("shutdown_timeout", 30.0))))
    group.add_server(GracefulServer(Config(app=hello, addr="127.0.0.1:0", threads=2)))

    def worker(stop: threading.Event) -> None:
        event("worker started")
        while not stop.wait(0.02):
            if opts["worker"] == "raise" and os.path.exists(opts["flag"]):
                raise ValueError("the worker failed")
        event("worker saw stop")
        if opts["worker"] == "hang":
            time.sleep(3600)

    group.add(worker, name="poller")
    result = group.run()
    event(f"result {result!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
