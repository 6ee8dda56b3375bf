"""A real framework's app (werkzeug, what Flask is built on) through a real client (requests)."""

from __future__ import annotations

import io
import json
from typing import Any

import requests
from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from tests.helpers import running


@Request.application  # type: ignore[arg-type]
def werkzeug_app(request: Request) -> Response:
    if request.path == "/form":
        upload = request.files["doc"]
        return Response(json.dumps({"name": request.form["name"], "file": upload.filename,
                                    "size": len(upload.read())}), mimetype="application/json")
    if request.path == "/json":
        return Response(json.dumps({"echo": request.get_json()}), mimetype="application/json")
    if request.path == "/stream":
        return Response((f"line {i}\n" for i in range(100)), mimetype="text/plain")
    if request.path == "/file":
        return send_file(io.BytesIO(b"z" * 100_000), environ=request.environ, mimetype="application/zip",
                         download_name="z.zip")
    if request.path == "/cookie":
        resp = Response("set")
        resp.set_cookie("session", "abc", httponly=True)
        return resp
    return Response(f"{request.method} {request.path} {dict(request.args)} {request.cookies.get('session')}")


def test_werkzeug_app_with_requests() -> None:
    with running(werkzeug_app) as server, requests.Session() as session:
        base = f"http://127.0.0.1:{server.port}"
        form = session.post(f"{base}/form", data={"name": "report"},
                            files={"doc": ("r.pdf", b"%PDF" + b"0" * 50_000)}).json()
        assert form == {"name": "report", "file": "r.pdf", "size": 50_004}
        assert session.post(f"{base}/json", json={"a": [1, 2]}).json() == {"echo": {"a": [1, 2]}}
        stream = session.get(f"{base}/stream")
        assert stream.text.count("\n") == 100
        assert stream.headers["Transfer-Encoding"] == "chunked"
        file = session.get(f"{base}/file")
        assert file.content == b"z" * 100_000
        assert "z.zip" in file.headers["Content-Disposition"]
        assert session.get(f"{base}/cookie").text == "set"
        echo = session.get(f"{base}/q?x=1&y=%C3%A9")
        assert echo.text == "GET /q {'x': '1', 'y': 'é'} abc"


def test_unicode_path_reaches_the_app_as_wsgi_latin1() -> None:
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    with running(app) as server:
        assert requests.get(f"http://127.0.0.1:{server.port}/caf%C3%A9/a%2Fb", timeout=5).status_code == 200
    # PEP 3333: the URL-decoded bytes, as latin-1 text; frameworks re-decode as UTF-8.
    assert seen == ["/caf\xc3\xa9/a/b"]
    assert seen[0].encode("latin-1").decode("utf-8") == "/café/a/b"
