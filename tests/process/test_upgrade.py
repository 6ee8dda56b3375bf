"""Zero-downtime upgrades (SPEC section 8) of a real process under real load, by real signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import get, read_until_close, unix_get, wait_until
from tests.process.conftest import alive
from tests.process.load import Load


def pid_in(pid_file: Path) -> int:
    try:
        text = pid_file.read_text()
    except FileNotFoundError:
        return 0
    return int(text) if text.endswith("\n") else 0


def answering_pid(port: int) -> int:
    return int(get(port, "/pid").body.split()[1])


def upgrade(old: int, pid_file: Path, signum: int = signal.SIGUSR2) -> int:
    """Signal `old`, wait for its successor to own the pid file and for `old` to exit."""
    os.kill(old, signum)
    assert wait_until(lambda: pid_in(pid_file) not in (0, old), 20), "no new generation took over"
    new = pid_in(pid_file)
    assert wait_until(lambda: not alive(old), 20), f"old generation {old} did not exit"
    return new


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGHUP])
def test_three_upgrades_in_a_row_under_load_lose_nothing(start_server: Any, tmp_path: Path,
                                                         signum: int) -> None:
    pid_file = tmp_path / "server.pid"
    srv = start_server(pid_file=str(pid_file), threads=8)
    generations = [srv.proc.pid]
    assert wait_until(lambda: pid_in(pid_file) == srv.proc.pid, 5)
    started = time.monotonic()
    with Load(srv.port, clients=8, max_seconds=30) as load:
        assert wait_until(lambda: time.monotonic() - started >= 2.0 and load.ok > 0, 10)
        for _ in range(3):
            new = upgrade(generations[-1], pid_file, signum)
            assert wait_until(lambda new=new: load.answered_by(new), 10), f"{new} never answered"
            generations.append(new)
        assert wait_until(lambda: time.monotonic() - started >= 8.0, 10)
    assert load.failures == [], (load.failures[:5], "".join(srv.stderr)[-5000:])
    assert len(set(generations)) == 4
    assert answering_pid(srv.port) == generations[-1]
    assert srv.proc.wait(10) == 0  # the first generation drained cleanly
    assert not any(alive(pid) for pid in generations[:-1])
    assert load.ok > 500
    log = "".join(srv.stderr)
    assert log.count("draining this one") == 3
    os.kill(generations[-1], signal.SIGTERM)
    assert wait_until(lambda: not alive(generations[-1]), 15)
    assert not pid_file.exists()  # the last generation removed it


def new_generation_pid(srv: Any) -> int:
    for line in srv.stderr:
        m = re.search(r"started the new generation \(pid (\d+)\)", line)
        if m:
            return int(m.group(1))
    return 0


@pytest.mark.parametrize(("env", "timeout", "why"), [
    # A generous timeout for the child that fails at import: it must be seen to exit, not time out.
    ({"APP_FAIL_IN_NEW_GENERATION": "1"}, 30.0, r"exited with 1 before it was ready"),
    ({"APP_HANG_IN_NEW_GENERATION": "1"}, 1.5, r"did not report ready within 1\.5s \(upgrade_timeout\)"),
])
def test_a_failed_new_generation_is_killed_and_the_old_one_serves_on(
        start_server: Any, tmp_path: Path, env: dict[str, str], timeout: float, why: str) -> None:
    pid_file = tmp_path / "server.pid"
    srv = start_server(env=env, pid_file=str(pid_file), threads=8, upgrade_timeout=timeout)
    assert wait_until(lambda: pid_in(pid_file) == srv.proc.pid, 5)
    with Load(srv.port, clients=8, max_seconds=30) as load:
        assert wait_until(lambda: load.ok > 100, 10)
        srv.proc.send_signal(signal.SIGUSR2)
        assert wait_until(lambda: new_generation_pid(srv) != 0, 10)
        srv.proc.send_signal(signal.SIGUSR2)  # during the upgrade: ignored
        assert wait_until(lambda: any("upgrade failed" in line for line in srv.stderr), 15)
        child = new_generation_pid(srv)
        ok_at_failure = load.ok
        assert wait_until(lambda: load.ok > ok_at_failure + 100, 10)
    assert load.failures == [], load.failures[:5]
    assert set(load.pids) == {srv.proc.pid}
    assert not alive(child)
    log = "".join(srv.stderr)
    assert re.search(why, log), log[-2000:]
    assert "keeps serving" in log
    assert "ignored (one at a time)" in log
    if "APP_FAIL" in next(iter(env)):
        assert "RuntimeError: this new generation fails at import" in log  # the child's own traceback
    assert pid_in(pid_file) == srv.proc.pid
    assert srv.proc.poll() is None
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait_exit(15)[0] == 0


def test_upgrade_tells_systemd_and_keeps_a_port_zero_listener(start_server: Any, tmp_path: Path) -> None:
    notify_path = str(tmp_path / "notify.sock")
    pid_file = tmp_path / "server.pid"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(notify_path)
        manager.settimeout(10)
        srv = start_server(env={"NOTIFY_SOCKET": notify_path}, pid_file=str(pid_file),
                           admin_addr="127.0.0.1:0")
        assert manager.recv(200).decode() == f"READY=1\nMAINPID={srv.proc.pid}"
        assert wait_until(lambda: pid_in(pid_file) == srv.proc.pid, 5)
        admin_line = re.compile(r"admin listening on http://127\.0\.0\.1:(\d+)")
        assert wait_until(lambda: admin_line.search("".join(srv.stderr)) is not None, 5)  # the pipe lags
        admin_port = int(admin_line.search("".join(srv.stderr))[1])  # type: ignore[index]
        new = upgrade(srv.proc.pid, pid_file)
        reloading = manager.recv(200).decode()
        assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", reloading), reloading
        usec = int(reloading.rsplit("=", 1)[1])
        assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 30_000_000
        assert manager.recv(200).decode() == f"MAINPID={new}\nREADY=1"
        # The same real ports, main and admin, although the config says :0 for both.
        assert answering_pid(srv.port) == new
        assert get(admin_port, "/readyz").status == 200
        os.kill(new, signal.SIGTERM)
        assert manager.recv(200) == b"STOPPING=1"
        assert wait_until(lambda: not alive(new), 15)
    assert srv.proc.wait(10) == 0


def test_at_most_two_generations_and_unix_sockets_survive(start_server: Any, tmp_path: Path) -> None:
    """While the old generation drains a slow request, the new one refuses to upgrade again;
    a Unix socket is handed over, not unlinked by the old one, and removed by the last."""
    import http.client
    import threading

    pid_file = tmp_path / "server.pid"
    path = str(tmp_path / "app.sock")
    srv = start_server(pid_file=str(pid_file), addrs=[f"unix:{path}"], threads=4)
    assert wait_until(lambda: pid_in(pid_file) == srv.proc.pid, 5)
    slow: list[bytes] = []

    def slow_request() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
        conn.request("GET", "/slow?t=3")
        slow.append(conn.getresponse().read())

    t = threading.Thread(target=slow_request)
    t.start()
    assert wait_until(lambda: get(srv.port, "/readyz").status == 200 and srv.proc.poll() is None, 5)
    os.kill(srv.proc.pid, signal.SIGUSR2)
    assert wait_until(lambda: pid_in(pid_file) not in (0, srv.proc.pid), 15)
    new = pid_in(pid_file)
    assert alive(srv.proc.pid)  # still draining the slow request
    os.kill(new, signal.SIGUSR2)
    assert wait_until(lambda: any("still draining: upgrade ignored" in line for line in srv.stderr), 5)
    t.join(15)
    assert slow == [b"done"]
    assert srv.proc.wait(15) == 0
    assert os.path.exists(path)  # the old generation did not unlink the new one's socket

    def unix_pid() -> int:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return int(read_until_close(s).rsplit(b" ", 1)[1])

    assert unix_pid() == new
    newest = upgrade(new, pid_file)  # the old one is gone: now it may
    assert unix_pid() == newest
    os.kill(newest, signal.SIGTERM)
    assert wait_until(lambda: not alive(newest), 15)
    assert not os.path.exists(path)  # the last generation removed it


def test_an_upgrade_applies_a_changed_config(start_server: Any, tmp_path: Path) -> None:
    """The new generation reads its own config: a dropped address's inherited socket is
    closed (and logged), a new one is bound, the kept one is inherited by name."""
    import json

    fields_file = tmp_path / "fields.json"
    old_sock, new_sock = str(tmp_path / "old.sock"), str(tmp_path / "new.sock")
    fields_file.write_text(json.dumps({"addrs": [f"unix:{old_sock}"], "threads": 4}))
    pid_file = tmp_path / "server.pid"
    srv = start_server(env={"APP_FIELDS_FILE": str(fields_file)}, pid_file=str(pid_file))
    assert wait_until(lambda: pid_in(pid_file) == srv.proc.pid, 5)
    assert unix_get(old_sock, "/pid").status == 200
    fields_file.write_text(json.dumps({"addrs": [f"unix:{new_sock}"], "threads": 6}))
    new = upgrade(srv.proc.pid, pid_file)
    assert answering_pid(srv.port) == new  # 127.0.0.1:0, inherited: the same port
    assert int(unix_get(new_sock, "/pid").body.split()[1]) == new
    assert wait_until(lambda: any(f"'main unix:{old_sock}' is not in this config: closed" in line
                                  for line in srv.stderr), 5)
    assert not os.path.exists(old_sock)  # its last owner closed it and removed the path
    assert any(f"{new} gracehttp listening on" in line and "(6 threads)" in line for line in srv.stderr)
    os.kill(new, signal.SIGTERM)
    assert wait_until(lambda: not alive(new), 15)


def make_cert(directory: Path, common_name: str) -> tuple[str, str]:
    key, crt = str(directory / "key.pem"), str(directory / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", f"/CN={common_name}", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key


def test_an_upgrade_rereads_the_certificate_files(start_server: Any, tmp_path: Path) -> None:
    """Renewing a certificate: replace the files, SIGUSR2, and the new generation serves the new one."""
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    crt, key = make_cert(tmp_path, "first")
    pid_file = tmp_path / "server.pid"
    srv = start_server(certfile=crt, keyfile=key, pid_file=str(pid_file))
    assert wait_until(lambda: pid_in(pid_file) == srv.proc.pid, 5)

    def served_cert() -> bytes:
        ctx = ssl.create_default_context(cafile=crt)  # verified against the file as it is now
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True) or b""

    first = served_cert()
    make_cert(tmp_path, "second")  # renewed in place, as certbot does
    new = upgrade(srv.proc.pid, pid_file)
    second = served_cert()
    assert second != first
    assert second == ssl.PEM_cert_to_DER_cert(Path(crt).read_text())
    os.kill(new, signal.SIGTERM)
    assert wait_until(lambda: not alive(new), 15)


def admin_port(srv: Any) -> int:
    assert wait_until(lambda: any("admin listening on" in line for line in srv.stderr), 10)
    line = next(line for line in srv.stderr if "admin listening on" in line)
    return int(re.search(r"admin listening on http://127\.0\.0\.1:(\d+)", line)[1])  # type: ignore[index]


def scrape(port: int) -> str:
    return get(port, "/metrics").body.decode()


@pytest.mark.parametrize("workers", [1, 2])
def test_upgrades_are_counted_across_generations(start_server: Any, tmp_path: Path, workers: int) -> None:
    pid_file = tmp_path / "server.pid"
    srv = start_server(pid_file=str(pid_file), threads=4, workers=workers, admin_addr="127.0.0.1:0")
    admin = admin_port(srv)
    assert wait_until(lambda: pid_in(pid_file) == srv.proc.pid, 10)
    assert 'gracehttp_upgrades_total{result="succeeded"} 0.0' in scrape(admin)
    new = upgrade(srv.proc.pid, pid_file)
    newer = upgrade(new, pid_file)
    assert wait_until(lambda: 'gracehttp_upgrades_total{result="succeeded"} 2.0' in scrape(admin), 10), scrape(admin)
    assert 'gracehttp_upgrades_total{result="failed"} 0.0' in scrape(admin)
    if workers > 1:
        text = scrape(admin)
        assert 'gracehttp_worker_starts_total{reason="start"} 2.0' in text, text
        # A worker killed unasked is restarted, and both are counted with their reason.
        victim = answering_pid(srv.port)
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: 'gracehttp_worker_starts_total{reason="restart"} 1.0' in scrape(admin), 15)
        assert 'gracehttp_worker_exits_total{reason="killed"} 1.0' in scrape(admin)
    os.kill(newer, signal.SIGTERM)
    assert wait_until(lambda: not alive(newer), 15)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_upgrade_is_counted(start_server: Any, tmp_path: Path, workers: int) -> None:
    pid_file = tmp_path / "server.pid"
    srv = start_server(env={"APP_FAIL_IN_NEW_GENERATION": "1"}, pid_file=str(pid_file), threads=4,
                       workers=workers, admin_addr="127.0.0.1:0")
    admin = admin_port(srv)
    srv.proc.send_signal(signal.SIGUSR2)
    assert wait_until(lambda: any("upgrade failed" in line for line in srv.stderr), 30)
    assert wait_until(lambda: 'gracehttp_upgrades_total{result="failed"} 1.0' in scrape(admin), 5), scrape(admin)
    assert 'gracehttp_upgrades_total{result="succeeded"} 0.0' in scrape(admin)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait_exit(15)[0] == 0
