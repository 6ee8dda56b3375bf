"""gunicorn's request corpus (tests/data/gunicorn-requests.json), every case over a real socket.

A valid case must reach the app with the same method, target, path, query,
headers and body; an invalid one must get a 4xx/5xx or a clean close, never a
2xx. Where SPEC.md decides differently from gunicorn, the case is listed in
CONTRACT below, by name, with the answer the contract requires and why. No case
is skipped.
"""

from __future__ import annotations

import base64
import json
import pathlib
import threading
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest

from tests.helpers import exchange, running, statuses

CORPUS = json.loads((pathlib.Path(__file__).parents[1] / "data" / "gunicorn-requests.json").read_text())
CASES = {case["name"]: case for case in CORPUS["cases"]}

NO_HOST = "HTTP/1.1 request without exactly one Host is 400 here (SPEC 10, RFC 9112 section 3.2)"
TE_501 = "a Transfer-Encoding other than a single 'chunked' is 501 here (SPEC 10)"
TE_CL = "Content-Length together with Transfer-Encoding is 400 here (SPEC 10, RFC 9112 section 6.1)"
PROXY = "PROXY protocol is not supported (SPEC 12): the PROXY line is a malformed request line"
FOLD = "obsolete line folding is not supported (SPEC 12): 400"
SPACE = "a space before ':' is 400 here whatever gunicorn's strip_header_spaces says (SPEC 10)"
LOWER = "gunicorn's casefold_http_method is not offered: the method reaches the app as sent"
MAP = "gunicorn's header_map=dangerous is not offered: names with '_' are dropped (SPEC 12)"

#: name -> (the statuses this contract requires, why it differs from gunicorn)
CONTRACT: dict[str, tuple[list[int], str]] = {
    **{name: ([400], NO_HOST) for name in [
        "valid/004", "valid/005", "valid/006", "valid/007", "valid/010",
        "valid/011", "valid/012", "valid/013", "valid/014", "valid/021", "valid/028",
        "valid/031", "valid/031compat2", "valid/100", "valid/099"]},
    "valid/009": ([400], TE_CL),
    "valid/018": ([400], NO_HOST),
    "valid/019": ([200], "an HTTP/1.0 request without keep-alive ends the connection (RFC 9112 section 9.3): "
                         "the pipelined second request is never read"),
    "valid/022": ([200, 400], NO_HOST + " (the HTTP/1.0 first request is served)"),
    "valid/023": ([400], NO_HOST),
    "valid/025": ([400], NO_HOST + "; also " + TE_501),
    "valid/025_line": ([400], NO_HOST + "; also " + TE_501),
    "valid/029": ([400], NO_HOST + "; also " + TE_501),
    "valid/030": ([400], NO_HOST + "; also " + TE_501),
    "valid/031compat": ([400], LOWER + "; and " + NO_HOST),
    "valid/040_compat": ([200], MAP),
    "invalid/040": ([200], "gunicorn's header_map=refuse is not offered: names with '_' are dropped before "
                           "the app sees them (gunicorn's default), so the request is safe to serve"),
    "valid/compat_obs_fold": ([400], FOLD),
    "valid/compat_obs_fold_huge": ([400], FOLD),
    "valid/pp_01": ([400], PROXY),
    "valid/pp_02": ([400], PROXY),
    "valid/pp_04": ([400], PROXY),
    "valid/pp_05": ([400], PROXY),
    "valid/rfc9112_smuggle_gzip_chunked_01": ([501], TE_501),
    "valid/rfc9112_smuggle_te_identity_chunked_01": ([501], TE_501),
    "valid/rfc9112_target_authority_connect_01": ([200], "CONNECT reaches the app with an empty PATH_INFO, "
                                                         "not gunicorn's path '443'"),
    "valid/rfc9112_target_authority_ipv6_01": ([200], "CONNECT reaches the app with an empty PATH_INFO"),
}

# gunicorn options that have a gracehttp equivalent, and gunicorn's defaults for them: the
# corpus was written against those defaults (a 4,116-byte request line is "too long" there).
# gracehttp limits the whole header section where gunicorn limits each field, which is at
# least as strict for the same number. A value of 0 means "the default" in these cases.
SETTING_MAP = {"limit_request_line": "max_request_line", "limit_request_fields": "max_header_count",
               "limit_request_field_size": "max_header_bytes"}
GUNICORN_DEFAULTS = {"limit_request_line": 4094, "limit_request_fields": 100, "limit_request_field_size": 8190}


def config_for(settings: dict[str, Any]) -> dict[str, Any]:
    merged = {**GUNICORN_DEFAULTS, **{k: v for k, v in settings.items() if v}}
    return {SETTING_MAP[key]: merged[key] for key in SETTING_MAP}


def expected_environ(headers: list[list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, value in headers:
        if "_" in name:
            continue
        key = {"CONTENT-TYPE": "CONTENT_TYPE", "CONTENT-LENGTH": "CONTENT_LENGTH"}.get(
            name, "HTTP_" + name.replace("-", "_"))
        env[key] = env[key] + "," + value if key in env else value
    return env


class Recorder:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        record = {
            "method": environ["REQUEST_METHOD"], "raw": environ["RAW_URI"], "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"], "body": body,
            "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_") or
                        k in ("CONTENT_TYPE", "CONTENT_LENGTH")},
        }
        with self.lock:
            self.seen.append(record)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_case(name: str) -> None:
    case = CASES[name]
    raw = base64.b64decode(case["raw_b64"])
    recorder = Recorder()
    with running(recorder, threads=2, read_header_timeout=2, **config_for(case["settings"])) as server:
        got = statuses(exchange(server.port, raw))
    if name in CONTRACT:
        want, _why = CONTRACT[name]
        assert got == want, f"{name}: contract says {want}, got {got}"
        return
    if not case["valid"]:
        assert all(s >= 400 for s in got), f"{name} ({case['error']}) answered {got}"
        assert not recorder.seen or all(s >= 400 for s in got)
        return
    requests = case["requests"]
    assert got == [200] * len(requests), f"{name}: {got}"
    assert len(recorder.seen) == len(requests)
    for want, seen in zip(requests, recorder.seen, strict=False):
        uri = want["uri"]
        assert seen["method"] == want["method"]
        assert seen["raw"] == uri["raw"]
        if want["method"] != "CONNECT" and uri["raw"] != "*":
            assert seen["path"] == unquote_to_bytes(uri["path"].encode("latin-1")).decode("latin-1")
        assert seen["query"] == uri["query"]
        assert seen["headers"] == expected_environ(want["headers"])
        assert seen["body"] == base64.b64decode(want["body"])


def test_every_listed_difference_is_a_real_case() -> None:
    assert set(CONTRACT) <= set(CASES)
    assert len(CASES) == len(CORPUS["cases"]) == 137
