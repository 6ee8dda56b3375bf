"""The servers under test: how to start each one on a port, with the app to serve.

``python benchmarks/servers.py NAME APP PORT`` runs one in-process server (the
pure-Python ones); the others are started through their own command lines.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS = {"hello": "hello", "json": "json_app", "flask": "flask_app", "heavy": "heavy"}


@dataclass(frozen=True)
class Server:
    name: str
    label: str
    kind: str  # "inproc", "gunicorn" or "granian"
    args: tuple[str, ...] = ()


SERVERS = [
    Server("gracehttp", "gracehttp (1 process)", "inproc"),
    Server("gracehttp-w2", "gracehttp workers=2", "inproc"),
    Server("gracehttp-nometrics", "gracehttp metrics=False", "inproc"),
    # The same, from another checkout (GRACEHTTP_BASELINE=DIR): a before-and-after in one run.
    Server("gracehttp-baseline", "gracehttp at $GRACEHTTP_BASELINE", "inproc"),
    Server("waitress", "waitress (4 threads)", "inproc"),
    Server("waitress-8", "waitress 8 threads", "inproc"),
    Server("cheroot", "cheroot (10 threads)", "inproc"),
    Server("werkzeug", "werkzeug threaded", "inproc"),
    Server("gunicorn-sync-1", "gunicorn sync 1 worker", "gunicorn", ("-k", "sync", "-w", "1")),
    Server("gunicorn-sync-2", "gunicorn sync 2 workers", "gunicorn", ("-k", "sync", "-w", "2")),
    Server("gunicorn-gthread", "gunicorn gthread 2x4", "gunicorn", ("-k", "gthread", "-w", "2", "--threads", "4")),
    Server("granian-1", "granian 1 worker (Rust)", "granian", ("--workers", "1")),
    Server("granian-2", "granian 2 workers (Rust)", "granian", ("--workers", "2")),
]
BY_NAME = {s.name: s for s in SERVERS}


def free_port() -> int:
    """A port for servers that cannot take an inherited socket (bind, read, release)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(server: Server, app: str, port: int) -> list[str]:
    target = f"apps:{APPS[app]}"
    if server.kind == "gunicorn":
        return [sys.executable, "-m", "gunicorn", *server.args, "-b", f"127.0.0.1:{port}",
                "--log-level", "warning", "--keep-alive", "120", target]
    if server.kind == "granian":
        return [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning", *server.args, target]
    return [sys.executable, os.path.join(HERE, "servers.py"), server.name, app, str(port)]


def start(server: Server, app: str) -> tuple[subprocess.Popen[bytes], int, float]:
    """Start `server`; return the process, its port and seconds until it first answered."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, ROOT, os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    proc = subprocess.Popen(command(server, app, port), cwd=HERE, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as probe:
                probe.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if probe.recv(16).startswith(b"HTTP/1.1 200"):
                    return proc, port, time.perf_counter() - started
        except OSError:
            time.sleep(0.002)
    proc.kill()
    raise RuntimeError(f"{server.name} did not answer within 20 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


def serve_inproc(name: str, app_name: str, port: int) -> None:
    baseline = os.environ.get("GRACEHTTP_BASELINE", "") if name == "gracehttp-baseline" else ""
    sys.path[:0] = [HERE, *([baseline] if baseline else []), ROOT]
    import apps

    app = getattr(apps, APPS[app_name])
    if name.startswith("gracehttp"):
        from gracehttp import Config, GracefulServer

        workers = 2 if name == "gracehttp-w2" else 1
        metrics = name != "gracehttp-nometrics"
        GracefulServer(Config(app=app, addr=f"127.0.0.1:{port}", workers=workers,
                              metrics=metrics)).serve_forever()
    elif name.startswith("waitress"):
        import waitress

        threads = 8 if name == "waitress-8" else 4
        waitress.serve(app, host="127.0.0.1", port=port, threads=threads, _quiet=True)
    elif name == "cheroot":
        from cheroot import wsgi

        server = wsgi.Server(("127.0.0.1", port), app)
        try:
            server.start()
        finally:
            server.stop()
    elif name == "werkzeug":
        import logging

        from werkzeug.serving import run_simple

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        run_simple("127.0.0.1", port, app, threaded=True)
    else:
        sys.exit(f"unknown server {name}")


if __name__ == "__main__":
    serve_inproc(sys.argv[1], sys.argv[2], int(sys.argv[3]))
