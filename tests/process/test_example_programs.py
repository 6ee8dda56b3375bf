"""Every runnable example starts, answers and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import get, wait_until

ROOT = Path(__file__).resolve().parents[2]


class Example:
    def __init__(self, name: str, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / name)],
            env={**os.environ, "PYTHONPATH": str(ROOT), "GRACEHTTP_ADDR": "127.0.0.1:0", **env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),  # type: ignore[union-attr]
                         daemon=True).start()

    def port(self, what: str = "gracehttp listening on") -> int:
        pattern = re.compile(re.escape(what) + r" http://127\.0\.0\.1:(\d+)")
        assert wait_until(lambda: any(pattern.search(x) for x in list(self.lines)), 15), "".join(self.lines)
        return int(next(m[1] for x in list(self.lines) if (m := pattern.search(x))))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


def test_hello() -> None:
    example = Example("hello.py")
    assert get(example.port(), "/").body == b"Hello, world!\n"
    assert example.stop() == 0


def test_routes() -> None:
    example = Example("routes.py")
    port = example.port()
    assert get(port, "/hello/ada").body == b"hello ada\n"
    item = get(port, "/items/7")
    assert item.headers["content-type"] == "application/json"
    assert json.loads(item.body) == {"id": 7, "name": "seven"}
    assert get(port, "/items/8").status == 404  # the view's own Response
    assert get(port, "/items/x").status == 404  # no rule matches (werkzeug)
    assert json.loads(get(port, "/echo", method="POST", body=b"hi").body) == {"you_sent": "hi"}
    wrong = get(port, "/echo")
    assert wrong.status == 405  # werkzeug: the rule exists for POST only
    assert "POST" in wrong.headers["allow"]
    assert get(port, "/legacy/anything").body == b"legacy app saw /anything\n"
    assert example.stop() == 0


def test_service_group() -> None:
    example = Example("service_group.py", GRACEHTTP_ADMIN_ADDR="127.0.0.1:0", REFRESH_SECONDS="0.05")
    port, admin = example.port(), example.port("gracehttp admin listening on")
    assert wait_until(lambda: int(get(port, "/").body.split()[2]) >= 2, 10)  # the job runs
    assert get(admin, "/metrics").status == 200
    assert get(admin, "/debug/threads").status == 200
    assert example.stop() == 0
    log = "".join(example.lines)
    assert "refresh_cache stopped after" in log
    assert "group: SIGTERM received; stopping 2 members" in log


def test_flask_app() -> None:
    pytest.importorskip("flask")
    example = Example("flask_app.py")
    port = example.port()
    assert get(port, "/").body == b"hello from Flask\n"
    assert json.loads(get(port, "/items/3").body) == {"id": 3}
    assert get(port, "/readyz").status == 200  # answered by gracehttp before Flask
    assert example.stop() == 0
    assert "closing the database pool" in "".join(example.lines)


def test_django_project_from_the_command_line() -> None:
    pytest.importorskip("django")
    project = ROOT / "examples" / "django_project"
    proc = subprocess.Popen([sys.executable, "-m", "gracehttp", "mysite.wsgi:application", "--bind", "127.0.0.1:0"],
                            cwd=project, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    pattern = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
    try:
        assert wait_until(lambda: any(pattern.search(x) for x in list(lines)), 20), "".join(lines)
        port = int(next(m[1] for x in list(lines) if (m := pattern.search(x))))
        assert json.loads(get(port, "/").body) == {"hello": "django", "method": "GET", "path": "/",
                                                    "body_length": 0}
        echoed = json.loads(get(port, "/echo", method="POST", body=b"x" * 100_000).body)
        assert echoed["body_length"] == 100_000
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, "".join(lines)
