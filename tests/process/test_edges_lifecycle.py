"""Edges of the lifecycle against real processes: nothing answered before the server has
announced that it is ready, and workers that refuse or serve every connection at SIGTERM
(docs/lifecycle.rst: "What happens on SIGTERM", "Health endpoints"; docs/upgrades.rst: systemd). The
drain's budget is tested in test_shutdown.py."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.process.test_activation import activate, high_fd
from tests.process.test_shutdown import in_flight


def read_answer(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends on a ``Connection: close`` exchange; raises on a reset."""
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def complete_200(answer: bytes) -> bool:
    """A whole ``200`` response: the head, and as many body bytes as its Content-Length says."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return bool(sep) and head.startswith(b"HTTP/1.1 200 ") and length is not None and \
        len(body) == int(length.group(1))


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()


# -- nothing is answered before READY -------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_nothing_is_answered_before_the_server_announced_ready(start_server: Any, tmp_path: Path,
                                                               workers: int) -> None:
    """Clients connect from the first moment (the test owns the listening socket and hands
    it over by systemd's socket activation, so connections queue before the server runs);
    every one is answered, and none before the pid file exists and ``READY=1`` was sent."""
    pid_file = tmp_path / "server.pid"
    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(notify_path)
        manager.setblocking(False)
        with socket.create_server(("127.0.0.1", 0), backlog=1024) as listener:
            port = listener.getsockname()[1]
            fd = high_fd(listener)
            try:
                srv = start_server(env={"NOTIFY_SOCKET": notify_path}, wrapper=activate("$$", fd, names="web"),
                                   pass_fds=(fd,), wait_port=False, pid_file=str(pid_file), workers=workers,
                                   threads=8)
            finally:
                os.close(fd)  # the server holds the socket now

        ready = False

        def heard_ready() -> bool:
            """READY=1 is in the manager's queue once the server's send returned (a Unix
            datagram is delivered synchronously), so reading it here never lags the server."""
            nonlocal ready
            while not ready:
                try:
                    ready = manager.recv(200).startswith(b"READY=1")
                except BlockingIOError:
                    break
            return ready

        waiting: dict[socket.socket, tuple[str, bool]] = {}  # client -> (path, opened before READY)
        answers: list[tuple[str, bool, bool, bool, bytes | str]] = []
        opened = 0
        deadline = time.monotonic() + 20
        # Bounded: at most 300 connections (one every 5 ms until READY=1, a few after) and 20 s.
        while time.monotonic() < deadline and (waiting or not ready):
            if opened < 300 and (not ready or opened % 10):
                path = "/livez" if opened % 2 else "/"
                client = socket.create_connection(("127.0.0.1", port), timeout=5)
                client.sendall(request(path))
                waiting[client] = (path, not heard_ready())
                opened += 1
            readable, _, _ = select.select([*waiting], [], [], 0.005)
            for client in readable:
                # First look at what the manager was told: anything the server sent before
                # it answered is there already.
                announced, pid_there = heard_ready(), pid_file.exists()
                path, early = waiting.pop(client)
                try:
                    answer: bytes | str = read_answer(client)
                except OSError as exc:
                    answer = repr(exc)
                client.close()
                answers.append((path, early, announced, pid_there, answer))
            heard_ready()
        for client in waiting:
            client.close()

        before_ready = sum(early for _, early, _, _, _ in answers)
        assert before_ready >= 10, f"only {before_ready} connections were made before READY=1: test is vacuous"
        premature = [(path, announced, pid_there) for path, _, announced, pid_there, _ in answers
                     if not (announced and pid_there)]
        assert premature == [], f"{len(premature)} answered before READY=1 and the pid file: {premature[:5]}"
        assert not waiting, f"{len(waiting)} connections never answered"
        bad = [(path, answer) for path, _, _, _, answer in answers
               if not (isinstance(answer, bytes) and complete_200(answer))]
        assert bad == [], bad[:5]
        assert len(answers) == opened
        srv.proc.send_signal(signal.SIGTERM)
        code, _ = srv.wait_exit(15)
    assert code == 0, "".join(srv.stderr)[-3000:]


# -- workers at SIGTERM: refused or served, never reset --------------------------------------


def test_workers_refuse_or_serve_every_connection_at_sigterm(start_server: Any) -> None:
    srv = start_server(workers=2, threads=16)
    assert wait_until(lambda: any("all 2 workers ready" in line for line in srv.stderr), 10)

    slow: list[bytes | str] = []
    sent = [threading.Event() for _ in range(20)]

    def slow_client(i: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                sock.sendall(request("/slow?t=0.5"))
                sent[i].set()
                slow.append(read_answer(sock, 10))
        except OSError as exc:
            slow.append(repr(exc))
        finally:
            sent[i].set()

    slow_threads = [threading.Thread(target=slow_client, args=(i,)) for i in range(20)]
    for t in slow_threads:
        t.start()
    assert all(e.wait(10) for e in sent)
    assert wait_until(lambda: in_flight(srv.port) > 0, 5)

    served = refused = 0
    failures: list[str] = []
    lock = threading.Lock()
    pace = threading.Event()  # never set: its wait spaces the arrivals out

    def arriving_client() -> None:
        """New connections for 1.5 s after the signal: at most 150, one every 10 ms."""
        nonlocal served, refused
        end = time.monotonic() + 1.5
        for _ in range(150):
            if time.monotonic() >= end:
                break
            opened_at = time.time()
            try:
                sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            except ConnectionRefusedError:
                with lock:
                    refused += 1
            except OSError as exc:
                with lock:
                    failures.append(f"{opened_at:.3f} connect: {exc!r}")
            else:
                with sock:
                    try:
                        sock.sendall(request("/"))
                        answer = read_answer(sock)
                    except OSError as exc:
                        with lock:
                            failures.append(f"{opened_at:.3f} accepted, then {exc!r} at {time.time():.3f}")
                    else:
                        with lock:
                            if complete_200(answer):
                                served += 1
                            else:
                                failures.append(f"{opened_at:.3f} accepted, then {answer[:80]!r}")
            pace.wait(0.01)  # a steady stream of arrivals, not a spin

    clients = [threading.Thread(target=arriving_client) for _ in range(4)]
    signalled = time.time()
    srv.proc.send_signal(signal.SIGTERM)
    for t in clients:
        t.start()
    for t in clients + slow_threads:
        t.join(15)
    code, _ = srv.wait_exit(15)
    assert [a if isinstance(a, str) or not complete_200(a) else 200 for a in slow] == [200] * 20
    assert failures == [], f"signal at {signalled:.3f}; served={served} refused={refused}; {failures[:5]}"
    assert refused > 0  # the listeners did close while the workers drained
    assert code == 0, "".join(srv.stderr)[-3000:]
