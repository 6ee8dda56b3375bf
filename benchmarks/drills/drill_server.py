"""The server the drills upgrade: the benchmarks' hello app under gracehttp.

Usage: ``python drill_server.py PORT PID_FILE [WORKERS [soak]]`` (PORT 0: a free one, logged;
``soak``: also ``POST /upload``, which reads the body, and metrics on). Started again, with the
same command line, by every upgrade (SIGUSR2), which is the point.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps import hello

from gracehttp import Config, GracefulServer

#: Request threads: the pool's limit (it starts fewer and grows as requests wait).
THREADS = 8

def soak_app(environ, start_response):
    if environ["PATH_INFO"] == "/upload":
        body = b"read %d" % len(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return hello(environ, start_response)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(message)s")
    port, pid_file = sys.argv[1], sys.argv[2]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    soak = sys.argv[4:5] == ["soak"]
    GracefulServer(Config(addr=f"127.0.0.1:{port}", app=soak_app if soak else hello, pid_file=pid_file,
                          workers=workers, threads=THREADS, metrics=soak, max_body_bytes=1 << 20)).serve_forever()
