"""The apps every server is measured on. Each echoes the client's port in ``X-Port`` so
the wrk script can count how many of its connections were served (fairness)."""

import json

HELLO = b"Hello, world!\n"
DOC = json.dumps({"items": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"], "price": i * 1.5}
                            for i in range(14)]})


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO))),
                              ("X-Port", environ.get("REMOTE_PORT", "-"))])
    return [HELLO]


def json_app(environ, start_response):
    body = json.dumps(json.loads(DOC)).encode()  # about 1 KB, encoded per request like a real API
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                              ("X-Port", environ.get("REMOTE_PORT", "-"))])
    return [body]
