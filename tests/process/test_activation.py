"""systemd socket activation (SPEC section 9): LISTEN_FDS by hand and from the real
`systemd-socket-activate`, and activated sockets kept across an upgrade."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import get, unix_get, wait_until
from tests.process.conftest import alive
from tests.process.test_upgrade import answering_pid, pid_in, upgrade


@pytest.fixture
def two_listeners() -> Iterator[tuple[socket.socket, socket.socket]]:
    socks = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        socks.append(sock)
    yield socks[0], socks[1]
    for sock in socks:
        sock.close()


def high_fd(sock: socket.socket) -> int:
    """A copy of the socket's descriptor numbered 10 or more, so moving it to 3 or 4 clobbers nothing."""
    return fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD, 10)


def activate(listen_pid: str, *fds: int, names: str) -> list[str]:
    """A bash wrapper that hands `fds` to the server as 3, 4, ... the way systemd does."""
    moves = " ".join(f"{3 + i}<&{fd} {fd}<&-" for i, fd in enumerate(fds))
    script = (f'exec {moves}; LISTEN_PID={listen_pid} LISTEN_FDS={len(fds)} LISTEN_FDNAMES={names} '
              'exec "$@"')
    return ["bash", "-c", script, "bash"]


def test_listen_fds_replace_the_configured_addresses(start_server: Any,
                                                     two_listeners: tuple[socket.socket, socket.socket]) -> None:
    main, admin = two_listeners
    fds = (high_fd(main), high_fd(admin))
    try:
        srv = start_server(wrapper=activate("$$", *fds, names="web:admin"), pass_fds=fds, threads=4)
    finally:
        for fd in fds:
            os.close(fd)
    assert srv.port == main.getsockname()[1]  # not the config's 127.0.0.1:0
    assert answering_pid(srv.port) == srv.proc.pid
    assert get(admin.getsockname()[1], "/readyz").body == b"ok"
    assert get(admin.getsockname()[1], "/metrics").status == 200
    assert wait_until(lambda: "admin listening" in "".join(srv.stderr), 5)  # the pipe lags
    log = "".join(srv.stderr)
    assert re.search(r"gracehttp listening on http://127.0.0.1:\d+ \(4 threads\) from systemd socket activation", log)
    assert re.search(r"admin listening on .* from systemd socket activation", log)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait_exit(15)[0] == 0


def test_listen_fds_for_another_process_are_ignored(start_server: Any,
                                                    two_listeners: tuple[socket.socket, socket.socket]) -> None:
    main, _ = two_listeners
    fd = high_fd(main)
    try:
        srv = start_server(wrapper=activate("1", fd, names="web"), pass_fds=(fd,), threads=4)
    finally:
        os.close(fd)
    assert srv.port != main.getsockname()[1]
    assert "systemd socket activation" not in "".join(srv.stderr)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait_exit(15)[0] == 0


def test_systemd_socket_activate_then_upgrade(start_server: Any, tmp_path: Path) -> None:
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-socket-activate is missing: .ci/run installs Debian's systemd package")
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    # Unix sockets: the tool needs its addresses up front, and a TCP port reserved here and
    # bound there could be taken in between.
    web, admin = str(tmp_path / "web.sock"), str(tmp_path / "admin.sock")
    pid_file = tmp_path / "server.pid"
    wrapper = [tool, "-l", web, "-l", admin, "--fdname=web:admin", "-E", "PYTHONPATH"]
    srv = start_server(wrapper=wrapper, wait_port=False, pid_file=str(pid_file), threads=4)
    assert wait_until(lambda: sum("Listening on" in line for line in srv.stderr) == 2, 10)
    # The tool starts the server on the first connection, which waits in the backlog meanwhile.
    first = int(unix_get(web, "/pid", timeout=15).body.split()[1])
    assert first == srv.proc.pid  # the tool execs the server in its own process
    assert wait_until(lambda: unix_get(admin, "/readyz").status == 200, 10)
    new = upgrade(first, pid_file)
    # The new generation took the activated sockets by their names, not the config's :0.
    assert int(unix_get(web, "/pid").body.split()[1]) == new
    assert unix_get(admin, "/readyz").status == 200
    assert wait_until(lambda: f"{new} gracehttp listening on unix:{web} (4 threads) from systemd socket activation"
                      in "".join(srv.stderr), 5)
    os.kill(new, signal.SIGTERM)
    assert wait_until(lambda: not alive(new), 15)
    assert pid_in(pid_file) == 0
