"""The pid file and sd_notify from a real server process (single and with workers)."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until


@pytest.mark.parametrize("workers", [1, 2])
def test_pid_file_and_notify_follow_the_lifecycle(start_server: Any, tmp_path: Path, workers: int) -> None:
    pid_file = tmp_path / "server.pid"
    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(notify_path)
        manager.settimeout(10)
        srv = start_server(env={"NOTIFY_SOCKET": notify_path}, pid_file=str(pid_file), workers=workers)
        ready = manager.recv(200).decode()
        assert ready == f"READY=1\nMAINPID={srv.proc.pid}"
        assert wait_until(lambda: pid_file.exists(), 5)
        assert pid_file.read_text() == f"{srv.proc.pid}\n"
        srv.proc.send_signal(signal.SIGTERM)
        try:
            stopping = manager.recv(200)
        except TimeoutError:
            stopping = b"(nothing) " + "".join(srv.stderr)[-3000:].encode()
        assert stopping == b"STOPPING=1"
        code, _ = srv.wait_exit(15)
    assert code == 0, "".join(srv.stderr)[-3000:]
    assert not pid_file.exists()
    assert os.path.exists(notify_path)
