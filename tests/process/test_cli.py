"""The command line (SPEC section 11) against real module files in a temporary directory."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import get, wait_until

ROOT = Path(__file__).resolve().parents[2]
APP_MODULE = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain app"]

def make(greeting="factory app", times=1):
    def inner(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [greeting.encode() * times]
    return inner

not_callable = 42
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "webapp.py").write_text(APP_MODULE)
    (tmp_path / "broken.py").write_text("raise RuntimeError('the app module is broken')\n")
    return tmp_path


def run_cli(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gracehttp", *args], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=30)


class Served:
    """``python -m gracehttp ...`` serving in the background; its port from the first log line."""

    def __init__(self, project: Path, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gracehttp", *args], cwd=project,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.first = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.first.wait(15), "no log line"

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self.first.set()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


@pytest.mark.parametrize(("spec", "body"), [
    ("webapp:app", b"plain app"),
    ("webapp:make()", b"factory app"),
    ("webapp:make(greeting='hi ', times=2)", b"hi hi "),
])
def test_serves_an_app_or_a_factory(project: Path, spec: str, body: bytes) -> None:
    served = Served(project, spec, "--bind", "127.0.0.1:0", "--bind", f"unix:{project / 'app.sock'}",
                    "--threads", "4")
    first = served.lines[0]
    # The first log line names every bound address, with the real port for :0.
    port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+), unix:\S+app\.sock \(4 threads\)", first)[1])
    assert get(port, "/").body == body
    assert served.stop() == 0


@pytest.mark.parametrize(("args", "message"), [
    (["nosuchmodule:app"], "no module named 'nosuchmodule'"),
    (["webapp:nope"], "module 'webapp' has no attribute 'nope'"),
    (["webapp:not_callable"], "webapp:not_callable is not a WSGI app: a int is not callable"),
    (["webapp:make(1 +)"], "is not an attribute name or a call"),
    (["webapp:app", "--threads", "many"], "argument --threads: invalid literal for int()"),
    (["webapp:app", "--drain-timeout", "99"], "drain_timeout: 99.0 is longer than shutdown_timeout"),
    (["webapp:app", "--bind", "nowhere"], "addr: 'nowhere': expected host:port"),
    (["nope:"], "expected MODULE:APP"),
    ([], "which app?"),
])
def test_mistakes_are_one_line_and_exit_2(project: Path, args: list[str], message: str) -> None:
    result = run_cli(project, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gracehttp: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("spec", "summary", "frame"), [
    ("broken:app", "importing 'broken' failed: RuntimeError: the app module is broken", "broken.py"),
    ("failing:make()", "failing:make() raised KeyError: 'DATABASE_URL'", "failing.py"),
])
def test_an_app_that_fails_gets_its_traceback_then_one_summary_line(project: Path, spec: str, summary: str,
                                                                   frame: str) -> None:
    """As gunicorn and uvicorn print it: the app's own frames (not the loader's), then the line."""
    (project / "failing.py").write_text("def make():\n    raise KeyError('DATABASE_URL')\n")
    result = run_cli(project, spec)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1].startswith("gracehttp: error: " + summary)
    assert frame in result.stderr
    assert "importlib" not in result.stderr
    assert "gracehttp/cli.py" not in result.stderr


def test_check_names_the_app_as_given(project: Path) -> None:
    checked = run_cli(project, "webapp:make(greeting='hi')", "--check")
    assert checked.returncode == 0
    assert "app = webapp:make(greeting='hi')" in checked.stdout.splitlines()


def test_debug_log_level_adds_the_traceback(project: Path) -> None:
    result = run_cli(project, "broken:app", "--log-level", "debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("gracehttp: error: importing 'broken' failed")


def threads_in(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stderr
    return int(re.search(r"^threads = (\d+)$", result.stdout, re.M)[1])


def test_precedence_flags_env_file_pyproject_defaults(project: Path) -> None:
    assert threads_in(run_cli(project, "webapp:app", "--check")) == 32
    (project / "pyproject.toml").write_text("[tool.gracehttp]\nthreads = 3\ndrain-timeout = 5.0\n")
    assert threads_in(run_cli(project, "webapp:app", "--check")) == 3
    (project / "serve.toml").write_text("threads = 4\naddrs = ['unix:/tmp/x.sock']\n")
    assert threads_in(run_cli(project, "webapp:app", "--check", "--config", "serve.toml")) == 4
    env = {"GRACEHTTP_THREADS": "5"}
    assert threads_in(run_cli(project, "webapp:app", "--check", "--config", "serve.toml", env=env)) == 5
    checked = run_cli(project, "webapp:app", "--check", "--config", "serve.toml", "--threads", "6", env=env)
    assert threads_in(checked) == 6
    assert "drain_timeout = 5.0" in checked.stdout  # from pyproject, nothing overrode it
    assert "addrs = ('unix:/tmp/x.sock',)" in checked.stdout


def test_bad_config_files_are_one_line(project: Path) -> None:
    (project / "serve.toml").write_text("thread = 4\n")
    result = run_cli(project, "webapp:app", "--config", "serve.toml")
    assert result.returncode == 2
    assert result.stderr.strip() == "gracehttp: error: serve.toml: unknown setting 'thread' (did you mean threads?)"
    (project / "serve.toml").write_text("threads = [\n")
    result = run_cli(project, "webapp:app", "--config", "serve.toml")
    assert result.returncode == 2
    assert result.stderr.startswith("gracehttp: error: serve.toml: ")
    result = run_cli(project, "webapp:app", "--config", "missing.toml")
    assert result.stderr.strip() == "gracehttp: error: cannot read missing.toml: No such file or directory"


def test_version_and_json_logs(project: Path) -> None:
    from gracehttp import __version__

    result = run_cli(project, "--version")
    assert result.stdout.strip() == f"gracehttp {__version__}"
    served = Served(project, "webapp:app", "-b", "127.0.0.1:0", "--log-format", "json")
    entry = json.loads(served.lines[0])
    assert entry["level"] == "info"
    assert entry["logger"] == "gracehttp"
    assert entry["message"].startswith("gracehttp listening on http://127.0.0.1:")
    assert served.stop() == 0
    assert all(json.loads(line)["pid"] == served.proc.pid for line in served.lines)


def test_reload_restarts_on_a_source_change(project: Path) -> None:
    served = Served(project, "webapp:app", "--reload", "-b", "127.0.0.1:0", "--threads", "2")

    def latest_port() -> int:
        ports = [int(m[1]) for line in list(served.lines)
                 if (m := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line))]
        return ports[-1] if ports else 0

    assert wait_until(lambda: latest_port() > 0, 15)
    first = latest_port()
    assert get(first, "/").body == b"plain app"
    source = project / "webapp.py"
    source.write_text(APP_MODULE.replace("plain app", "edited app"))
    os.utime(source, (source.stat().st_atime, source.stat().st_mtime + 2))  # a coarse-mtime file system
    assert wait_until(lambda: latest_port() not in (0, first), 20), "".join(served.lines)
    assert get(latest_port(), "/").body == b"edited app"
    assert any("reload: webapp.py changed; restarting" in line for line in served.lines)
    assert served.stop() == 0
    assert sum("drained=True" in line for line in served.lines) == 2  # each generation drained


def test_reload_is_off_by_default(project: Path) -> None:
    served = Served(project, "webapp:app", "-b", "127.0.0.1:0")
    assert wait_until(lambda: any("listening on" in line for line in served.lines), 10)
    listening = next(line for line in served.lines if "listening on" in line)
    assert f"[{served.proc.pid}]" in listening  # served by the command's own process: no reloader parent
    assert served.stop() == 0
    assert not any("reload:" in line for line in served.lines)


FAILING_CALLBACK_MODULE = '''
import gracehttp

def fail():
    raise RuntimeError("the process callback failed")

gracehttp.register_shutdown_callback(fail)

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_failing_process_callback_makes_the_cli_exit_1(project: Path, workers: str) -> None:
    """As a failing server callback does: every callback of the shutdown counts."""
    (project / "cbapp.py").write_text(FAILING_CALLBACK_MODULE)
    served = Served(project, "cbapp:app", "--bind", "127.0.0.1:0", "--workers", workers)
    ready = "all 2 workers ready" if workers == "2" else "listening on http://"
    assert wait_until(lambda: ready in "".join(served.lines), 15)
    port = int(re.search(r"listening on (?:http://)?127\.0\.0\.1:(\d+)", "".join(served.lines))[1])
    assert get(port, "/").body == b"ok"
    assert served.stop() == 1
    assert "the process callback failed" in "".join(served.lines)


@pytest.mark.parametrize(("args", "named"), [
    (["--bind", "127.0.0.1:{taken}"], "127.0.0.1:{taken}"),
    (["--bind", "127.0.0.1:0", "--bind", "127.0.0.1:{taken}"], "127.0.0.1:{taken}"),  # an extra listener
    (["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:{taken}"], "127.0.0.1:{taken} (admin)"),
    (["--bind", "127.0.0.1:{taken}", "--workers", "2"], "127.0.0.1:{taken}"),
])
def test_a_bind_error_names_the_address_in_one_line(project: Path, args: list[str], named: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        taken = str(holder.getsockname()[1])
        result = run_cli(project, "webapp:app", *(a.replace("{taken}", taken) for a in args))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"gracehttp: error: cannot listen on {named.replace('{taken}', taken)}: address already in use"]


def test_a_unix_socket_in_a_missing_directory_is_named(project: Path) -> None:
    result = run_cli(project, "webapp:app", "--bind", f"unix:{project}/missing/app.sock")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"gracehttp: error: cannot listen on unix:{project}/missing/app.sock: "
                                     "no such file or directory")


def test_unknown_settings_are_named_with_the_closest_known_one(project: Path) -> None:
    checked = run_cli(project, "webapp:app", "--check", env={"GRACEHTTP_ADR": ":9000", "GRACEHTTP_THREDS": "4"})
    assert checked.returncode == 0  # a stray variable is a warning: environments carry others' junk
    assert checked.stderr.strip().splitlines() == [
        "gracehttp: warning: unknown setting GRACEHTTP_ADR (did you mean GRACEHTTP_ADDR?) ignored",
        "gracehttp: warning: unknown setting GRACEHTTP_THREDS (did you mean GRACEHTTP_THREADS?) ignored"]
    (project / "serve.toml").write_text("drain-timout = 3\n")
    result = run_cli(project, "webapp:app", "--config", "serve.toml")
    assert result.returncode == 2  # a file is the user's own: an error
    assert result.stderr.strip() == ("gracehttp: error: serve.toml: unknown setting 'drain-timout' "
                                     "(did you mean drain_timeout?)")


def test_help_shows_every_default() -> None:
    from dataclasses import fields

    from gracehttp.config import Config, flags_of

    out = subprocess.run([sys.executable, "-m", "gracehttp", "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}, timeout=30).stdout
    lines = out.splitlines()
    for f in fields(Config):
        for flag in flags_of(f):
            if flag.startswith("--"):
                first = next(i for i, line in enumerate(lines) if line.strip().startswith(flag))
                rest = itertools.takewhile(lambda line: not line.lstrip().startswith("-"), lines[first + 1:])
                block = [lines[first], *rest]
                assert "default: " in " ".join(block), block


def test_gunicorn_and_uvicorn_spellings_work_or_are_named(project: Path) -> None:
    checked = run_cli(project, "--keep-alive", "5", "webapp:app", "-w", "2", "--host", "0.0.0.0", "--port", "9000",
                      "--check")
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    for expected in ("app = webapp:app", "idle_timeout = 5.0", "workers = 2", "addr = '0.0.0.0:9000'"):
        assert expected in lines, expected
    checked = run_cli(project, "webapp:app", "--timeout", "30", "--access-logfile", "-", "--check")
    assert checked.returncode == 0, checked.stderr
    assert {"request_timeout = 30.0", "access_logfile = '-'"} <= set(checked.stdout.splitlines())
    result = run_cli(project, "webapp:app", "-k", "gevent")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gracehttp: error: -k is gunicorn's; there are no worker classes: one engine, in which idle and slow "
        "clients hold no thread (--threads, --workers)"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls_mistakes_are_one_line_and_check_loads_the_files(project: Path) -> None:
    key, crt = str(project / "key.pem"), str(project / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    result = run_cli(project, "webapp:app", "--check", "--certfile", key, "--keyfile", crt)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"gracehttp: error: certfile: {key!r} holds no PEM certificate (is it the key? certfile and keyfile "
        "swapped?) (set by --certfile, GRACEHTTP_CERTFILE or a TOML file)"]
    both = project / "both.pem"
    both.write_text(Path(crt).read_text() + Path(key).read_text())
    assert run_cli(project, "webapp:app", "--check", "--certfile", str(both)).returncode == 0
