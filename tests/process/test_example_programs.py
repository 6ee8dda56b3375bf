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
