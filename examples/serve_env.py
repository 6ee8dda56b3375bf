"""Serve `examples/hello.py`'s app with every setting from ``GRACEHTTP_*`` environment
variables: the program the systemd and supervisord examples run.

    GRACEHTTP_ADDR=127.0.0.1:8080 GRACEHTTP_WORKERS=2 python examples/serve_env.py
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hello import app

from gracehttp import Config, GracefulServer

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    GracefulServer(Config.from_env(app=app)).serve_forever()
