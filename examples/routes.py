"""Routes without a framework (SPEC section 4): ``python examples/routes.py``, then

    curl localhost:8080/hello/ada
    curl localhost:8080/items/7
    curl -X POST -d 'hi' localhost:8080/echo
    curl localhost:8080/legacy/anything

Views take a werkzeug Request and the url arguments, and return a str, bytes, a dict
(sent as JSON) or a werkzeug Response; 404 and 405 come from werkzeug's routing.
"""

import logging

from gracehttp import Config, GracefulServer, Router


def legacy_app(environ, start_response):
    """Any WSGI app can be mounted under a prefix."""
    body = f"legacy app saw {environ['PATH_INFO']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class Api:
    """A route registrar: anything with register_routes(router)."""

    def __init__(self) -> None:
        self.items = {7: "seven"}

    def register_routes(self, router: Router) -> None:
        router.get("/hello/<name>", self.hello)
        router.get("/items/<int:item_id>", self.item)
        router.post("/echo", self.echo)
        router.mount("/legacy", legacy_app)

    def hello(self, request, name):
        return f"hello {name}\n"

    def item(self, request, item_id):
        from werkzeug.wrappers import Response

        if item_id not in self.items:
            return Response("no such item\n", status=404)
        return {"id": item_id, "name": self.items[item_id]}

    def echo(self, request):
        return {"you_sent": request.get_data(as_text=True)}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Settings from GRACEHTTP_* variables (GRACEHTTP_ADDR=127.0.0.1:9000 ...), :8080 by default.
    GracefulServer(Config.from_env(), Api()).serve_forever()
