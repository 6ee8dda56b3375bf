"""Routes over werkzeug's routing (docs/architecture.rst, "Routes"): `Router`, `RouteRegistrar`, and the
WSGI app that tries the routes before the user's app.

Middle layer: imports werkzeug only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

# werkzeug is imported where it is used, not here: a server without routes does not
# pay its memory (about 7 MiB) and start-up time.

View = Callable[..., Any]
WSGIApp = Callable[..., Iterable[bytes]]


@runtime_checkable
class RouteRegistrar(Protocol):
    """Anything that adds its routes to a server's `Router` (passed to `GracefulServer`)."""

    def register_routes(self, router: Router) -> None:
        """Add routes with ``router.get(...)``, ``router.mount(...)`` and the others."""


class Router:
    """Collects rules and mounts; views take a werkzeug `Request` and url arguments."""

    def __init__(self) -> None:
        from werkzeug.routing import Map

        self.map = Map(strict_slashes=False)
        self.views: dict[str, View] = {}
        self.mounts: list[tuple[str, WSGIApp]] = []

    def route(self, rule: str, view: View, methods: list[str] | None = None) -> View:
        """Serve `rule` (werkzeug's syntax, ``/items/<int:id>``) with ``view(request, **args)``
        for `methods` (GET when None); returns `view`. `get`, `post`, `put`, `patch` and
        `delete` are this with one method."""
        from werkzeug.routing import Rule

        endpoint = f"{len(self.views)}:{rule}"
        self.views[endpoint] = view
        self.map.add(Rule(rule, endpoint=endpoint, methods=methods or ["GET"]))
        return view

    def get(self, rule: str, view: View) -> View:
        return self.route(rule, view, ["GET"])

    def post(self, rule: str, view: View) -> View:
        return self.route(rule, view, ["POST"])

    def put(self, rule: str, view: View) -> View:
        return self.route(rule, view, ["PUT"])

    def patch(self, rule: str, view: View) -> View:
        return self.route(rule, view, ["PATCH"])

    def delete(self, rule: str, view: View) -> View:
        return self.route(rule, view, ["DELETE"])

    def mount(self, prefix: str, app: WSGIApp) -> None:
        """Send every path under `prefix` to `app`, with SCRIPT_NAME/PATH_INFO shifted."""
        self.mounts.append(("/" + prefix.strip("/"), app))


def _to_response(value: Any) -> Response:
    from werkzeug.wrappers import Response

    if isinstance(value, Response):
        return value
    if isinstance(value, dict):
        return Response(json.dumps(value), mimetype="application/json")
    if isinstance(value, (str, bytes)):
        return Response(value)
    raise TypeError(f"a view must return Response, str, bytes or dict, not {type(value).__name__}")


def build_app(app: WSGIApp | None, registrars: tuple[RouteRegistrar, ...]) -> WSGIApp:
    """The app the server calls: routes first, then `app` for what no route matches."""
    if not registrars:
        if app is not None:
            return app
        return _not_found
    router = Router()
    for registrar in registrars:
        registrar.register_routes(router)
    return _routed_app(router, app)


def _not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    from werkzeug.exceptions import NotFound

    return NotFound()(environ, start_response)


def _routed_app(router: Router, fallback: WSGIApp | None) -> WSGIApp:
    from werkzeug.exceptions import HTTPException, NotFound
    from werkzeug.wrappers import Request

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        for prefix, mounted in router.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix):]
                return mounted(environ, start_response)
        adapter = router.map.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
        except NotFound as exc:
            if fallback is not None:
                return fallback(environ, start_response)
            return exc(environ, start_response)
        except HTTPException as exc:
            return exc(environ, start_response)
        response = _to_response(router.views[endpoint](Request(environ), **args))
        return response(environ, start_response)

    return app
