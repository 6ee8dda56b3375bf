"""A Flask app under gracehttp, with a shutdown callback.

    pip install -e . flask && python examples/flask_app.py

or from the command line: ``gracehttp examples.flask_app:app --bind :8080``. Then
``curl localhost:8080/``, ``curl localhost:8080/readyz``, and Ctrl-C (or SIGTERM) to
watch the drain in the log.
"""

import logging
import os

from flask import Flask, jsonify

from gracehttp import Config, GracefulServer

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "hello from Flask\n"


@app.get("/items/<int:item_id>")
def item(item_id: int):  # type: ignore[no-untyped-def]
    return jsonify(id=item_id)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = GracefulServer(Config(app=app, addr=os.environ.get("GRACEHTTP_ADDR", ":8080")))
    server.register_shutdown_callback(lambda: logging.info("closing the database pool"))
    server.serve_forever()
