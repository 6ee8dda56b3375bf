"""The apps every server is measured on."""

import json

HELLO = b"Hello, world!\n"
DOC = json.dumps({"items": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"], "price": i * 1.5}
                            for i in range(14)]}).encode()


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def json_app(environ, start_response):
    body = json.dumps(json.loads(DOC)).encode()  # about 1 KB, encoded per request like a real API
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
