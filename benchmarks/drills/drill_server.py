"""The server the drills upgrade: the benchmarks' hello app under gracehttp.

Usage: ``python drill_server.py PORT PID_FILE [WORKERS]`` (PORT 0: a free one, logged). Started again, with the
same command line, by every upgrade (SIGUSR2), which is the point.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps import hello

from gracehttp import Config, GracefulServer

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(message)s")
    port, pid_file = sys.argv[1], sys.argv[2]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    GracefulServer(Config(addr=f"127.0.0.1:{port}", app=hello, pid_file=pid_file, workers=workers,
                          threads=8, metrics=False)).serve_forever()
