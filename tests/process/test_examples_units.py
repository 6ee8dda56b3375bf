"""The systemd and supervisord examples are consistent and work: their settings are parsed
from the files, and the program they run is driven the way the manager would drive it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import get, unix_get, wait_until
from tests.process.conftest import alive
from tests.process.test_upgrade import pid_in

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def unit(path: Path) -> dict[str, list[str]]:
    """A systemd unit or supervisord file as ``{key: [values...]}`` (keys repeat in units)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def unit_environment(values: list[str]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in values)


def test_systemd_unit_is_consistent() -> None:
    service = unit(EXAMPLES / "systemd" / "gracehttp-hello.service")
    env = unit_environment(service["Environment"])
    assert service["Type"] == ["notify"]
    assert service["ExecReload"] == ["/bin/kill -USR2 $MAINPID"]
    assert service["PIDFile"] == [env["GRACEHTTP_PID_FILE"]]
    assert service["KillMode"] == ["mixed"]
    drain = float(env["GRACEHTTP_DRAIN_DELAY"]) + float(env["GRACEHTTP_DRAIN_TIMEOUT"])
    assert drain <= float(env["GRACEHTTP_SHUTDOWN_TIMEOUT"]) < float(service["TimeoutStopSec"][0])
    assert service["ExecStart"][0].endswith("examples/serve_env.py")
    socket_unit = unit(EXAMPLES / "systemd" / "gracehttp-hello.socket")
    assert socket_unit["FileDescriptorName"] == ["web"]


def test_systemd_unit_drives_the_example_like_systemd(tmp_path: Path) -> None:
    """Socket activation from the .socket unit, the service's environment, sd_notify, then
    `systemctl reload` (ExecReload) and `systemctl stop` (KillSignal) by hand."""
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    service = unit(EXAMPLES / "systemd" / "gracehttp-hello.service")
    sock_unit = unit(EXAMPLES / "systemd" / "gracehttp-hello.socket")
    env = unit_environment(service["Environment"])
    env["GRACEHTTP_PID_FILE"] = str(tmp_path / "server.pid")  # /run/... is the unit's RuntimeDirectory
    env["GRACEHTTP_ADMIN_ADDR"] = "127.0.0.1:0"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", sock_unit["ListenStream"][0])
    # The unit's TCP address becomes a Unix socket here: a port reserved by the test and bound
    # by the tool could be taken in between.
    listen = str(tmp_path / "web.sock")
    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager, \
            open(tmp_path / "journal.log", "w") as journal:
        manager.bind(notify_path)
        manager.settimeout(15)
        program = [sys.executable, str(EXAMPLES / "serve_env.py")]  # ExecStart, from this checkout
        env.update(PYTHONPATH=str(ROOT), NOTIFY_SOCKET=notify_path)
        passed = [arg for name in env for arg in ("-E", name)]  # the tool passes only these on
        proc = subprocess.Popen(
            [tool, "-l", listen, f"--fdname={sock_unit['FileDescriptorName'][0]}", *passed, *program],
            env={**os.environ, **env}, stdout=journal, stderr=subprocess.STDOUT)
        try:
            assert wait_until(lambda: "Listening on" in (tmp_path / "journal.log").read_text(), 10)
            assert unix_get(listen, "/", timeout=15).body == b"Hello, world!\n"  # starts the service
            assert manager.recv(200) == f"READY=1\nMAINPID={proc.pid}".encode()
            assert wait_until(lambda: pid_in(tmp_path / "server.pid") == proc.pid, 5)
            # systemctl reload
            reload = service["ExecReload"][0].replace("$MAINPID", str(proc.pid)).split()
            subprocess.run(reload, check=True)
            assert manager.recv(200).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
            main_pid = int(re.fullmatch(rb"MAINPID=(\d+)\nREADY=1", manager.recv(200))[1])
            assert main_pid != proc.pid
            assert proc.wait(30) == 0  # the old generation drained and exited
            assert pid_in(tmp_path / "server.pid") == main_pid
            assert unix_get(listen, "/").body == b"Hello, world!\n"
            # systemctl stop
            os.kill(main_pid, signal.Signals[service["KillSignal"][0]])
            assert manager.recv(200) == b"STOPPING=1"
            assert wait_until(lambda: not alive(main_pid), float(service["TimeoutStopSec"][0]))
            assert not (tmp_path / "server.pid").exists()
        finally:
            if proc.poll() is None:
                proc.kill()
            for pid in {pid_in(tmp_path / "server.pid")} - {0}:
                os.kill(pid, signal.SIGKILL)
    log = (tmp_path / "journal.log").read_text()
    assert "from systemd socket activation" in log
    assert "Traceback" not in log


def test_supervisord_program_reloads_in_place() -> None:
    program = unit(EXAMPLES / "supervisord" / "gracehttp-hello.conf")
    env = dict(re.findall(r'(\w+)="([^"]*)"', program["environment"][0]))
    assert float(program["stopwaitsecs"][0]) > float(env["GRACEHTTP_SHUTDOWN_TIMEOUT"])
    assert program["stopsignal"] == ["TERM"]
    assert int(env["GRACEHTTP_WORKERS"]) > 1  # HUP replaces workers, the pid supervisord follows stays
    env["GRACEHTTP_ADDR"] = "127.0.0.1:0"
    env["GRACEHTTP_ADMIN_ADDR"] = "127.0.0.1:0"
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "serve_env.py")],
                            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:  # bounded by the supervisor's own log and the kill below
            lines.append(line)
            if "all 2 workers ready" in line and len(lines) < 1000:
                break
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", "".join(lines))[1])
        proc.send_signal(signal.SIGHUP)  # supervisorctl signal HUP gracehttp-hello
        for line in proc.stdout:
            lines.append(line)
            if sum("replaced: pid" in x for x in lines) == 2:
                break
        assert get(port, "/").status == 200
        proc.send_signal(signal.Signals["SIG" + program["stopsignal"][0]])
        assert proc.wait(float(program["stopwaitsecs"][0])) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
