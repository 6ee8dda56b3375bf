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


@pytest.mark.parametrize("workers", [1, 2])
def test_watchdog_pings_at_half_the_interval(start_server: Any, tmp_path: Path, workers: int) -> None:
    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(notify_path)
        manager.settimeout(10)
        srv = start_server(env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "200000"}, workers=workers)
        messages = []
        while messages.count(b"WATCHDOG=1") < 5:  # bounded: recv times out after 10 s
            messages.append(manager.recv(200))
        assert f"READY=1\nMAINPID={srv.proc.pid}".encode() in messages
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.wait_exit(15)[0] == 0


def test_no_watchdog_pings_for_another_pid(start_server: Any, tmp_path: Path) -> None:
    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(notify_path)
        manager.settimeout(1.0)
        srv = start_server(env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
        assert manager.recv(200).startswith(b"READY=1")
        with pytest.raises(TimeoutError):  # 1 s: ten intervals of 0.1 s without a ping
            manager.recv(200)
        srv.proc.send_signal(signal.SIGTERM)
        assert manager.recv(200) == b"STOPPING=1"
        assert srv.wait_exit(15)[0] == 0
