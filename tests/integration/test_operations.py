"""What an operator coming from gunicorn or uvicorn relies on: a request timeout that
acts, request ids, access lines their tools parse, health paths that can move out of
the app's way, and the metrics that say how full the pool is."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from gracehttp import Config, ConfigError
from gracehttp.accesslog import AccessLog, compile_format
from tests.helpers import GatedApp, get, running, wait_until


def admin_port(server: Any) -> int:
    return int(server.admin_addresses[0].rsplit(":", 1)[1])


def metric(port: int, name: str) -> float:
    text = get(port, "/metrics").body.decode()
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert m, f"{name} not in the scrape"
    return float(m.group(1))


# -- request_timeout --------------------------------------------------------------------


def hung_request(app: GatedApp, port: int) -> threading.Thread:
    """A /slow request in a thread of its own, its thread inside the app when this returns."""
    t = threading.Thread(target=lambda: get(port, "/slow", timeout=15), daemon=True)
    app.entered.clear()
    t.start()
    assert app.entered.wait(5)
    return t


def test_a_request_past_request_timeout_is_logged_once_with_its_stack_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    app = GatedApp()
    with caplog.at_level(logging.WARNING, logger="gracehttp"), \
            running(app, threads=4, request_timeout=0.2, admin_addr="127.0.0.1:0") as server:
        t = hung_request(app, server.port)
        assert wait_until(lambda: any("past request_timeout" in r.getMessage() for r in caplog.records))
        time.sleep(0.6)  # several more scans of the watchdog: still one line for this request
        reports = [r.getMessage() for r in caplog.records if "past request_timeout (0.2s)" in r.getMessage()]
        assert len(reports) == 1, reports
        report = reports[0]
        assert report.startswith("request GET /slow from 127.0.0.1 has run")
        assert "on thread gracehttp" in report
        assert "in __call__" in report
        assert "self.release.wait(10)" in report
        assert metric(admin_port(server), "gracehttp_requests_over_timeout_total") == 1
        assert get(server.port, "/livez").body == b"ok"  # one of four threads: the process still serves
        app.release.set()
        t.join(5)


def test_livez_fails_once_every_request_thread_is_stuck_and_only_then(caplog: pytest.LogCaptureFixture) -> None:
    app = GatedApp()
    with caplog.at_level(logging.WARNING, logger="gracehttp"), \
            running(app, threads=2, request_timeout=0.2) as server:
        first = hung_request(app, server.port)
        assert wait_until(lambda: any("past request_timeout" in r.getMessage() for r in caplog.records))
        assert get(server.port, "/livez").status == 200  # one stuck, one free
        second = hung_request(app, server.port)
        assert wait_until(lambda: get(server.port, "/livez").status == 503, timeout=3)
        assert get(server.port, "/livez").body.startswith(b"stuck")
        assert get(server.port, "/readyz").status == 200  # readiness is another question
        assert any("/livez now answers 503" in r.getMessage() for r in caplog.records)
        app.release.set()
        first.join(5)
        second.join(5)
        assert wait_until(lambda: get(server.port, "/livez").status == 200, timeout=3)


def test_without_request_timeout_a_long_request_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    app = GatedApp()
    with caplog.at_level(logging.WARNING, logger="gracehttp"), running(app, threads=1) as server:
        t = hung_request(app, server.port)
        time.sleep(0.5)
        assert get(server.port, "/livez").status == 200
        assert not [r for r in caplog.records if "request_timeout" in r.getMessage()]
        app.release.set()
        t.join(5)


@pytest.mark.parametrize("value", [0, -1.0, "soon"])
def test_a_bad_request_timeout_is_named(value: object) -> None:
    with pytest.raises(ConfigError, match="request_timeout"):
        Config(request_timeout=value)  # type: ignore[arg-type]


# -- request ids ------------------------------------------------------------------------


def echo_id(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    logging.getLogger("app").warning("handling")
    body = f"{environ.get('gracehttp.request_id')} {environ.get('HTTP_X_REQUEST_ID')}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_a_request_gets_a_new_id_in_the_environ_the_response_and_the_log(caplog: pytest.LogCaptureFixture) -> None:
    from gracehttp.requestid import RequestIdFilter

    handler_filter = RequestIdFilter()
    seen: list[Any] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name == "app":
                handler_filter.filter(record)
                seen.append(record.request_id)  # type: ignore[attr-defined]

    keep = Keep()
    logging.getLogger("app").addHandler(keep)
    try:
        with caplog.at_level(logging.INFO, logger="gracehttp.access"), \
                running(echo_id, request_id=True, access_log="json") as server:
            resp = get(server.port, "/")
            again = get(server.port, "/")
    finally:
        logging.getLogger("app").removeHandler(keep)
    rid = resp.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert resp.body.decode() == f"{rid} {rid}"
    assert again.headers["x-request-id"] != rid
    assert seen[0] == rid  # the app's own log line, written while the request ran
    access = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gracehttp.access"]
    assert access[0]["request_id"] == rid


def test_a_trusted_proxys_request_id_is_kept_an_untrusted_clients_is_not() -> None:
    with running(echo_id, request_id=True) as server:  # loopback is trusted by default
        resp = get(server.port, "/", headers={"X-Request-ID": "edge-42"})
        assert resp.headers["x-request-id"] == "edge-42"
        assert resp.body == b"edge-42 edge-42"
        bad = get(server.port, "/", headers={"X-Request-ID": "has space"})
        assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["x-request-id"])  # not well formed: a new one
    with running(echo_id, request_id=True, forwarded_allow_ips=("10.9.9.9",)) as server:
        resp = get(server.port, "/", headers={"X-Request-ID": "chosen-by-client"})
        rid = resp.headers["x-request-id"]
        assert rid != "chosen-by-client"
        assert resp.body.decode() == f"{rid} {rid}"


def test_an_apps_own_request_id_header_is_not_doubled() -> None:
    def own(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "0"), ("X-Request-ID", "mine")])
        return []

    with running(own, request_id=True) as server:
        from tests.helpers import exchange

        raw = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.lower().count(b"x-request-id") == 1
    assert b"X-Request-ID: mine" in raw


def test_request_ids_are_off_by_default() -> None:
    with running(echo_id) as server:
        resp = get(server.port, "/")
    assert "x-request-id" not in resp.headers
    assert resp.body == b"None None"


# -- access lines ----------------------------------------------------------------------


def test_a_gunicorn_access_logformat_writes_its_atoms(caplog: pytest.LogCaptureFixture) -> None:
    fmt = ('%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(B)s %(b)s "%(f)s" "%(a)s" %(m)s %(U)s %(q)s %(H)s '
           '%({x-trace}i)s %({content-type}o)s %({wsgi.url_scheme}e)s %(p)s %(D)s %(M)s %(T)s %(L)s')
    with caplog.at_level(logging.INFO, logger="gracehttp.access"), \
            running(access_logformat=fmt) as server:
        get(server.port, "/p?x=1", headers={"X-Trace": "t1", "User-Agent": 'ua "quoted"'})
    line = next(r.getMessage() for r in caplog.records if r.name == "gracehttp.access")
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /p\?x=1 HTTP/1\.1" 200 5 5 "-" '
        r'"ua \\"quoted\\"" GET /p x=1 HTTP/1\.1 t1 text/plain http <\d+> \d+ \d+ 0 \d+\.\d{6}', line), line


@pytest.mark.parametrize(("fmt", "named"), [
    ("%(h)s %(nope)s", "unknown atom %(nope)s"),
    ("%(h)d", "not a format"),
])
def test_a_bad_access_logformat_is_named(fmt: str, named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        Config(access_logformat=fmt)
    with pytest.raises(ValueError, match=re.escape(named)):
        compile_format(fmt)


def test_access_log_and_access_logformat_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="access_logformat"):
        Config(access_log="common", access_logformat="%(h)s")


def test_access_logfile_alone_turns_on_the_combined_line() -> None:
    assert Config(access_logfile="-").access_format == "combined"
    assert Config(access_logformat="%(h)s").access_format == "%(h)s"
    assert Config().access_format is None
    with pytest.raises(ConfigError, match="access_logfile"):
        Config(access_logfile="/no/such/dir/access.log")


def test_an_access_line_escapes_what_would_break_its_quotes() -> None:
    lines: list[str] = []
    log = AccessLog("combined", logging.getLogger("test.escape"))
    log.logger.setLevel(logging.INFO)
    log.logger.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: lines.append(r.getMessage())})())
    log({"REMOTE_ADDR": "1.2.3.4", "REQUEST_METHOD": "GET", "RAW_URI": "/", "SERVER_PROTOCOL": "HTTP/1.1",
         "HTTP_USER_AGENT": 'a"b\\c\x1bd\xe9'}, 200, 0, 0.0)
    assert lines[0].endswith('"-" "a\\"b\\\\c\\x1bd\\xe9"')


def test_probes_are_not_logged_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    for probes in (False, True):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gracehttp.access"), \
                running(access_log="common", access_log_probes=probes) as server:
            get(server.port, "/livez")
            get(server.port, "/")
        lines = [r.getMessage() for r in caplog.records if r.name == "gracehttp.access"]
        assert [("/livez" in line) for line in lines] == ([True, False] if probes else [False])
        if probes:
            assert '"GET /livez HTTP/1.1" 200 2' in lines[0]


# -- health paths out of the app's way -----------------------------------------------------


def app_says(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = b"app: " + environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_health_prefix_moves_the_probes_and_gives_the_paths_back_to_the_app(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gracehttp"), \
            running(app_says, health_prefix="/_gracehttp", admin_addr="127.0.0.1:0") as server:
        for path in ("/health", "/livez", "/readyz", "/ready"):
            assert get(server.port, path).body == f"app: {path}".encode()
        assert get(server.port, "/_gracehttp/livez").body == b"ok"
        assert get(server.port, "/_gracehttp/health").body == b'{"status":"healthy"}'
        assert get(server.port, "/_gracehttp/readyz").status == 200
        assert get(admin_port(server), "/readyz").body == b"ok"  # the private listener keeps the plain paths
        server.drain()
        assert get(server.port, "/_gracehttp/readyz").status == 503
    assert any("/_gracehttp/health, /_gracehttp/livez" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("prefix", ["health", "/h/", "/a b", "/%2F"])
def test_a_bad_health_prefix_is_named(prefix: str) -> None:
    with pytest.raises(ConfigError, match="health_prefix"):
        Config(health_prefix=prefix)


# -- the admin listener says who drained ----------------------------------------------------


def test_drain_and_undrain_are_logged_with_the_client(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gracehttp"), running(admin_addr="127.0.0.1:0") as server:
        get(admin_port(server), "/drain", method="POST")
        get(admin_port(server), "/undrain", method="POST")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("POST /")]
    assert said == ["POST /drain from 127.0.0.1: readiness is now 503 (drained)",
                    "POST /undrain from 127.0.0.1: readiness is now 200 unless shutting down"]


# -- metrics operators need -------------------------------------------------------------------


def test_the_pool_and_the_bytes_sent_are_in_the_metrics() -> None:
    app = GatedApp()
    with running(app, threads=3, admin_addr="127.0.0.1:0") as server:
        admin = admin_port(server)
        assert metric(admin, "gracehttp_request_threads") == 3
        assert metric(admin, "gracehttp_request_threads_busy") == 0
        assert metric(admin, "gracehttp_requests_queued") == 0
        before = metric(admin, "gracehttp_response_bytes_total")
        for _ in range(4):
            get(server.port, "/")
        assert metric(admin, "gracehttp_response_bytes_total") == before + 4 * 2
        t = hung_request(app, server.port)
        assert metric(admin, "gracehttp_request_threads_busy") == 1
        app.release.set()
        t.join(5)
        assert metric(admin, "gracehttp_upgrades_total{result=\"succeeded\"}") == 0
        assert metric(admin, "gracehttp_upgrades_total{result=\"failed\"}") == 0


def test_requests_wait_in_the_queue_when_every_thread_is_busy() -> None:
    app = GatedApp()
    with running(app, threads=1, admin_addr="127.0.0.1:0") as server:
        admin = admin_port(server)
        t = hung_request(app, server.port)
        waiting = threading.Thread(target=lambda: get(server.port, "/", timeout=10), daemon=True)
        waiting.start()
        assert wait_until(lambda: metric(admin, "gracehttp_requests_queued") == 1)
        app.release.set()
        t.join(5)
        waiting.join(5)
        assert wait_until(lambda: metric(admin, "gracehttp_requests_queued") == 0)


# -- edges a review found ---------------------------------------------------------------------


def test_two_servers_in_one_process_keep_their_own_access_log_files(tmp_path: Any) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    with running(access_logfile=str(a)) as first, running(access_logfile=str(b)) as second:
        get(first.port, "/first")
        get(second.port, "/second")
    assert '"GET /first HTTP/1.1"' in a.read_text()
    assert "/second" not in a.read_text()
    assert '"GET /second HTTP/1.1"' in b.read_text()
    assert "/first" not in b.read_text()
    assert logging.getLogger("gracehttp.access").propagate  # the application's logging untouched


def test_an_odd_environ_value_costs_the_access_line_not_the_response(caplog: pytest.LogCaptureFixture) -> None:
    def sets_user(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["REMOTE_USER"] = 42  # not a str: a middleware's mistake
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with caplog.at_level(logging.INFO, logger="gracehttp"), running(sets_user, access_log="common") as server:
        assert get(server.port, "/").body == b"ok"
        assert get(server.port, "/").body == b"ok"
    line = next(r.getMessage() for r in caplog.records if r.name == "gracehttp.access")
    assert line.startswith("127.0.0.1 - 42 [")


def test_response_bytes_count_what_was_sent_not_what_was_declared() -> None:
    def short(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "1000000")])
        return [b"abc"]

    with running(short, admin_addr="127.0.0.1:0") as server:
        admin = admin_port(server)
        before = metric(admin, "gracehttp_response_bytes_total")
        with pytest.raises(Exception):  # noqa: B017,PT011 - the client sees a short body, however it says so
            get(server.port, "/")
        assert wait_until(lambda: metric(admin, "gracehttp_response_bytes_total") == before + 3)


def test_the_servers_own_500_carries_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="gracehttp"), running(broken, request_id=True) as server:
        resp = get(server.port, "/")
    assert resp.status == 500
    rid = resp.headers["x-request-id"]
    assert any(f"(request id {rid})" in r.getMessage() for r in caplog.records)


def test_a_forwarded_for_that_is_no_address_changes_nothing_and_cannot_forge_a_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    def client(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = environ["REMOTE_ADDR"].encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    forged = '6.6.6.6 - - [01/Jan/2026:00:00:00 +0000] "GET /admin HTTP/1.1" 200 1'
    with caplog.at_level(logging.INFO, logger="gracehttp.access"), \
            running(client, access_log="common", forwarded_allow_ips=("*",)) as server:
        assert get(server.port, "/", headers={"X-Forwarded-For": forged}).body == b"127.0.0.1"
        assert get(server.port, "/", headers={"X-Forwarded-For": "unknown"}).body == b"127.0.0.1"
        assert get(server.port, "/", headers={"X-Forwarded-For": "9.9.9.9"}).body == b"9.9.9.9"
    lines = [r.getMessage() for r in caplog.records if r.name == "gracehttp.access"]
    assert all(line.count('"') == 2 for line in lines), lines


def test_a_bare_percent_in_an_access_logformat_is_named() -> None:
    with pytest.raises(ConfigError, match="a % must start an atom"):
        Config(access_logformat="%s")
    assert Config(access_logformat="%(h)s 100%%").access_format == "%(h)s 100%%"


@pytest.mark.parametrize("path", ["", "dir", "missing/x.log"])
def test_an_access_logfile_that_cannot_be_written_is_named(tmp_path: Any, path: str) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(ConfigError, match="access_logfile"):
        Config(access_logfile=str(tmp_path / path) if path else str(tmp_path))


def test_the_supervisors_counts_stay_whole_under_concurrent_events(tmp_path: Any) -> None:
    from gracehttp.workermetrics import WorkerEvents

    events = WorkerEvents()
    events.directory = str(tmp_path)
    stop = threading.Event()
    bad: list[str] = []

    def read() -> None:
        while not stop.is_set():
            try:
                json.loads((tmp_path / WorkerEvents.FILE).read_text())
            except FileNotFoundError:
                continue
            except ValueError as exc:
                bad.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=lambda: [events.count("starts", "restart") for _ in range(300)])
               for _ in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join()
    assert not bad
    assert json.loads((tmp_path / WorkerEvents.FILE).read_text())["starts"]["restart"] == 900


def test_chunked_bodies_count_their_bytes_not_their_framing(caplog: pytest.LogCaptureFixture) -> None:
    def chunked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [])
        yield b"hello"
        yield b"world"

    with caplog.at_level(logging.INFO, logger="gracehttp.access"), \
            running(chunked, access_log="common", admin_addr="127.0.0.1:0") as server:
        admin = admin_port(server)
        before = metric(admin, "gracehttp_response_bytes_total")
        assert get(server.port, "/").body == b"helloworld"
        assert wait_until(lambda: metric(admin, "gracehttp_response_bytes_total") == before + 10)
    line = next(r.getMessage() for r in caplog.records if r.name == "gracehttp.access")
    assert line.endswith('" 200 10')


@pytest.mark.parametrize(("fmt", "ok"), [
    ("%%(zz)s %(h)s", True),  # a literal, then an atom
    ("%({a(b}i)s)s", False),  # Python reads the nested parentheses: an unknown atom
    ("%({remote_addr}e)s %({REMOTE_ADDR}e)s", True),
])
def test_atoms_are_read_as_python_reads_them(fmt: str, ok: bool) -> None:
    if ok:
        assert compile_format(fmt) == fmt
    else:
        with pytest.raises(ValueError, match="unknown atom"):
            compile_format(fmt)


def test_an_environ_atom_is_found_in_either_case() -> None:
    lines: list[str] = []
    log = AccessLog("%({remote_addr}e)s|%({REMOTE_ADDR}e)s", logging.getLogger("test.case"))
    log.logger.setLevel(logging.INFO)
    log.logger.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: lines.append(r.getMessage())})())
    log({"REMOTE_ADDR": "1.2.3.4"}, 200, 0, 0.0)
    assert lines == ["1.2.3.4|1.2.3.4"]
