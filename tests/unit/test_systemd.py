"""sd_notify to a real Unix datagram socket, and the pid file."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from gracehttp.systemd import notify, remove_pid_file, write_pid_file


def test_notify_reaches_a_datagram_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("READY=1\nMAINPID=42")
        assert sock.recv(100) == b"READY=1\nMAINPID=42"


def test_notify_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"gracehttp-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1")
        assert sock.recv(100) == b"STOPPING=1"


def test_notify_without_a_manager_is_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert notify("READY=1") is False


def test_pid_file_is_written_whole_and_removed_only_by_its_owner(tmp_path: Path) -> None:
    path = str(tmp_path / "app.pid")
    write_pid_file(path)
    assert Path(path).read_text() == f"{os.getpid()}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["app.pid"]  # no temp file left behind
    write_pid_file(path, pid=12345)  # a newer generation took it over
    remove_pid_file(path)
    assert Path(path).read_text() == "12345\n"
    remove_pid_file(path, pid=12345)
    assert not Path(path).exists()
