"""The operator's side through the real ``gracehttp`` command: access lines exactly as
log tooling parses them, on stdout or in a file; log times in ISO 8601; gunicorn's
``--timeout``; and with workers, a request past ``request_timeout`` replaces its worker
the zero-drop way."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import get, wait_until

ROOT = Path(__file__).resolve().parents[2]
APP = '''
import os
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/hang":
        time.sleep(60)
    if environ["PATH_INFO"] == "/sleep":
        time.sleep(float(environ["QUERY_STRING"]))
    body = b"hi"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2"), ("X-Pid", str(os.getpid()))])
    return [body]
'''


class Cli:
    """``python -m gracehttp`` with its stdout and stderr in files; the port from its log."""

    def __init__(self, tmp: Path, *args: str) -> None:
        (tmp / "opsapp.py").write_text(APP)
        self.out, self.err = tmp / "stdout", tmp / "stderr"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "gracehttp", "opsapp:app", "--bind", "127.0.0.1:0",
                                          *args], cwd=tmp, stdout=out, stderr=err,
                                         env={**os.environ, "PYTHONPATH": f"{ROOT}:{tmp}"})
        assert wait_until(lambda: self.ports(), timeout=15), self.err.read_text()
        self.port = self.ports()[0]

    def ports(self) -> list[int]:
        return [int(p) for p in re.findall(r"listening on http://127\.0\.0\.1:(\d+)", self.err.read_text())]

    def admin(self) -> int:
        return int(re.search(r"admin listening on http://127\.0\.0\.1:(\d+)", self.err.read_text())[1])  # type: ignore[index]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def __enter__(self) -> Cli:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def hang(port: int) -> None:
    """A request that hangs in the app; how it ends (the server gives up on it) is not the test's."""
    with contextlib.suppress(OSError):
        get(port, "/hang", timeout=10)


COMBINED = (r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /x\?y=1 HTTP/1\.1" 200 2 '
            r'"-" "probe/1"')


def test_the_access_log_goes_to_stdout_exactly_combined_with_log_times_in_iso_8601(tmp_path: Path) -> None:
    with Cli(tmp_path, "--access-log", "combined") as cli:
        get(cli.port, "/x?y=1", headers={"User-Agent": "probe/1"})
        get(cli.port, "/livez")  # a probe: not logged by default
        assert cli.stop() == 0
        out = cli.out.read_text().splitlines()
        err = cli.err.read_text().splitlines()
    assert len(out) == 1, out
    assert re.fullmatch(COMBINED, out[0]), out
    # The server's own lines: ISO 8601 with milliseconds and the offset.
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d \[\d+\] INFO gracehttp: gracehttp listening",
                    err[0]), err[0]
    assert not [line for line in err if "GET /x" in line]


def test_access_logfile_and_a_gunicorn_format_with_request_ids(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with Cli(tmp_path, "--access-logfile", str(log), "--access-logformat",
             '%(h)s "%(r)s" %(s)s %(b)s %({x-request-id}i)s %({x-request-id}o)s', "--request-id") as cli:
        resp = get(cli.port, "/x?y=1", headers={"X-Request-ID": "edge-7"})
        assert resp.headers["x-request-id"] == "edge-7"
        assert cli.stop() == 0
    assert log.read_text() == '127.0.0.1 "GET /x?y=1 HTTP/1.1" 200 2 edge-7 edge-7\n'
    assert cli.out.read_text() == ""


def test_json_access_lines_are_objects_also_under_log_format_json(tmp_path: Path) -> None:
    with Cli(tmp_path, "--access-log", "json", "--log-format", "json", "--request-id") as cli:
        get(cli.port, "/x?y=1", headers={"User-Agent": "probe/1"})
        assert cli.stop() == 0
    entry = json.loads(cli.out.read_text())
    assert "message" not in entry
    assert entry["method"] == "GET"
    assert entry["target"] == "/x?y=1"
    assert entry["status"] == 200
    assert entry["bytes"] == 2
    assert entry["user_agent"] == "probe/1"
    assert re.fullmatch(r"[0-9a-f]{32}", entry["request_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", entry["time"])
    first = json.loads(cli.err.read_text().splitlines()[0])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", first["time"])


def test_gunicorns_timeout_flag_is_the_request_timeout(tmp_path: Path) -> None:
    with Cli(tmp_path, "--timeout", "0.3", "--threads", "1", "--drain-timeout", "0.5",
             "--shutdown-timeout", "1") as cli:
        threading.Thread(target=hang, args=(cli.port,), daemon=True).start()
        assert wait_until(lambda: "GET /hang from 127.0.0.1 has run" in cli.err.read_text(), timeout=5)
        assert wait_until(lambda: get(cli.port, "/livez").status == 503, timeout=5)  # its one thread is stuck
        assert "time.sleep(60)" in cli.err.read_text()  # the stack names where
        assert cli.stop() == 1  # the hung request did not drain


@pytest.mark.timeout(60)
def test_with_workers_a_request_past_request_timeout_replaces_its_worker_without_a_dropped_request(
        tmp_path: Path) -> None:
    with Cli(tmp_path, "--workers", "2", "--threads", "1", "--request-timeout", "0.3", "--drain-timeout", "1",
             "--shutdown-timeout", "2", "--admin-bind", "127.0.0.1:0") as cli:
        threading.Thread(target=hang, args=(cli.port,), daemon=True).start()
        assert wait_until(lambda: "GET /hang from 127.0.0.1 has run" in cli.err.read_text(), timeout=5)
        # With workers a stuck one is replaced; liveness never fails (the other worker serves).
        assert get(cli.port, "/livez").status == 200
        failures = served = 0
        deadline = time.monotonic() + 20
        while "replaced: pid" not in cli.err.read_text() and time.monotonic() < deadline:
            try:
                failures += get(cli.port, "/", timeout=5).status != 200
            except OSError:
                failures += 1
            served += 1
        err = cli.err.read_text()
        assert "replaced: pid" in err, err
        assert failures == 0
        assert served > 0
        assert re.search(r"request GET /hang from 127\.0\.0\.1 has run \d+\.\d+s, past request_timeout \(0\.3s\): "
                         r"replacing this worker", err), err
        assert re.search(r"worker \d \(pid \d+\) has a request past request_timeout: replacing it", err), err
        # The old worker drained its other requests, then left: its exit counted.
        scrape = ""
        for _ in range(100):
            scrape = get(cli.admin(), "/metrics").body.decode()
            if 'gracehttp_worker_exits_total{reason="retired"} 1.0' in scrape:
                break
            time.sleep(0.1)
        assert 'gracehttp_worker_starts_total{reason="replace"} 1.0' in scrape, scrape
        assert 'gracehttp_worker_starts_total{reason="start"} 2.0' in scrape
        assert 'gracehttp_worker_exits_total{reason="retired"} 1.0' in scrape
        assert "gracehttp_requests_over_timeout_total 1.0" in scrape
        assert cli.stop() == 0  # the stuck worker is gone; the rest drained


def test_a_timeout_that_is_no_number_is_named(tmp_path: Path) -> None:
    (tmp_path / "opsapp.py").write_text(APP)
    done = subprocess.run([sys.executable, "-m", "gracehttp", "opsapp:app", "--timeout", "abc"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"},
                          timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip() == "gracehttp: error: --timeout takes seconds (0: off), not 'abc'"


def test_text_log_lines_written_during_a_request_name_its_id(tmp_path: Path) -> None:
    (tmp_path / "idapp.py").write_text(
        "import logging\n"
        "def app(environ, start_response):\n"
        "    logging.getLogger('myapp').warning('handling it')\n"
        "    start_response('200 OK', [('Content-Length', '0')])\n"
        "    return []\n")
    proc = subprocess.Popen([sys.executable, "-m", "gracehttp", "idapp:app", "--bind", "127.0.0.1:0", "--request-id"],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"})
    try:
        assert proc.stderr is not None
        port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", proc.stderr.readline())[1])  # type: ignore[index]
        rid = get(port, "/").headers["x-request-id"]
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(10)
    assert f"WARNING myapp: handling it [request {rid}]" in err


def test_health_prefix_and_logged_probes_through_the_command_line(tmp_path: Path) -> None:
    with Cli(tmp_path, "--health-prefix", "/_gracehttp", "--access-log", "common", "--access-log-probes") as cli:
        assert get(cli.port, "/health").body == b"hi"  # the app's own
        assert get(cli.port, "/_gracehttp/health").body == b'{"status":"healthy"}'
        assert cli.stop() == 0
    out = cli.out.read_text()
    assert '"GET /health HTTP/1.1" 200 2' in out
    assert '"GET /_gracehttp/health HTTP/1.1" 200 20' in out
    assert "health endpoints /_gracehttp/health, /_gracehttp/livez" in cli.err.read_text()


def pinned(port: int, count: int) -> dict[int, list[http.client.HTTPConnection]]:
    """`count` keep-alive connections, grouped by the worker that answered each."""
    by_pid: dict[int, list[http.client.HTTPConnection]] = {}
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        by_pid.setdefault(int(resp.headers["X-Pid"]), []).append(conn)
    return by_pid


def send(conn: http.client.HTTPConnection, path: str) -> threading.Thread:
    """`path` on `conn` from a thread of its own (its answer is not the test's)."""
    def run() -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn.request("GET", path)
            conn.getresponse().read()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.timeout(90)
def test_a_stuck_worker_closes_its_idle_clients_and_once_replaced_never_takes_connections_again(
        tmp_path: Path) -> None:
    with Cli(tmp_path, "--workers", "2", "--threads", "2", "--request-timeout", "0.5", "--drain-timeout", "30",
             "--shutdown-timeout", "40") as cli:
        by_pid = pinned(cli.port, 12)
        stuck_pid, conns = next((pid, c) for pid, c in by_pid.items() if len(c) >= 3)
        send(conns[0], "/sleep?3")   # both threads of one worker stuck: a short one...
        send(conns[1], "/sleep?25")  # ...and one that outlives the test
        idle = conns[2]
        assert wait_until(lambda: "takes no new connections and closes its idle ones" in cli.err.read_text(), 5)
        assert idle.sock is not None
        idle.sock.settimeout(0.8)  # the sweep's grace for a connection used just now is 0.5 s
        assert idle.sock.recv(1) == b""  # closed cleanly: its client reconnects to a worker that serves
        assert "replaced: pid" not in cli.err.read_text()  # by the hold, not by the drain that follows
        assert wait_until(lambda: "replaced: pid" in cli.err.read_text(), 10), cli.err.read_text()
        # The 3 s request ends while its worker drains the 25 s one: the hold stays.
        assert wait_until(lambda: "a request thread came free: this worker is draining" in cli.err.read_text(), 10)
        answered_by = set()
        for _ in range(40):
            resp = get(cli.port, "/", timeout=10)
            assert resp.status == 200
            answered_by.add(int(resp.headers["x-pid"]))
        assert stuck_pid not in answered_by
        for pid in by_pid:
            os.kill(pid, 0)  # still there: the stuck one drains its 25 s request
