"""Start `app_server.py` as a real process and learn its port from its first log line."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

SCRIPT = pathlib.Path(__file__).with_name("app_server.py")
ROOT = pathlib.Path(__file__).resolve().parents[2]


class ServerProcess:
    def __init__(self, fields: dict[str, Any], env_extra: dict[str, str] | None = None,
                 wrapper: list[str] | None = None, pass_fds: tuple[int, ...] = (),
                 wait_port: bool = True) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
        argv = [*(wrapper or []), sys.executable, str(SCRIPT), json.dumps(fields)]
        self.proc = subprocess.Popen(argv, env=env, pass_fds=pass_fds,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        #: Every process that logged: workers and later generations too, for the cleanup.
        self.pids: set[int] = {self.proc.pid}
        self.stdout: list[str] = []
        self._port = threading.Event()
        self.port = 0
        threading.Thread(target=self._pump_err, daemon=True).start()
        threading.Thread(target=self._pump_out, daemon=True).start()
        if wait_port and not self._port.wait(15):
            self.proc.kill()
            raise RuntimeError("server did not log its address: " + "".join(self.stderr))

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            pid = re.match(r"\S+ \S+ (\d+) ", line)
            if pid:
                self.pids.add(int(pid.group(1)))
            m = re.search(r"listening on (?:https?://)?127\.0\.0\.1:(\d+)", line)
            if m and not self._port.is_set():
                self.port = int(m.group(1))
                self._port.set()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)

    def events(self) -> list[tuple[float, str]]:
        out = []
        for line in self.stdout:
            m = re.fullmatch(r"(\d+\.\d+) (.*)", line.strip())
            if m:  # workers share stdout: skip anything that is not one whole event line
                out.append((float(m.group(1)), m.group(2)))
        return out

    def wait_exit(self, timeout: float) -> tuple[int, float]:
        code = self.proc.wait(timeout)
        return code, time.time()


@pytest.fixture
def start_server() -> Iterator[Any]:
    procs: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, wrapper: list[str] | None = None,
              pass_fds: tuple[int, ...] = (), wait_port: bool = True, **fields: Any) -> ServerProcess:
        """Start app_server.py with `fields` as its config; `wrapper` is a command to run it under."""
        proc = ServerProcess(fields, env, wrapper, pass_fds, wait_port)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(5)
        for pid in p.pids - {p.proc.pid}:  # upgraded generations are not our children
            if alive(pid):
                os.kill(pid, 9)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # the second: it exited while we read
        return False
