"""gunicorn's and uvicorn's flag spellings: rewritten when they mean the same, named when
they do not; the README's migration tables list every one."""

from __future__ import annotations

import pathlib

import pytest

from gracehttp.cli import build_parser
from gracehttp.foreign_flags import FOREIGN, ForeignFlagError, translate

README = (pathlib.Path(__file__).resolve().parents[2] / "README.rst").read_text()


@pytest.mark.parametrize(("argv", "expected"), [
    (["app:app", "-w", "4"], ["app:app", "--workers", "4"]),
    (["app:app", "-w4"], ["app:app", "--workers", "4"]),
    (["app:app", "--keep-alive", "0"], ["app:app", "--no-keep-alive"]),  # gunicorn's 0: off
    (["app:app", "--graceful-timeout=20"], ["app:app", "--drain-timeout", "20"]),
    (["--keep-alive", "5", "app:app"], ["--idle-timeout", "5", "app:app"]),  # gunicorn's seconds
    (["app:app", "--keep-alive"], ["app:app", "--keep-alive"]),  # ours: on/off, takes nothing
    (["--keep-alive", "app:app"], ["--keep-alive", "app:app"]),  # the app is not swallowed
    (["app:app", "--host", "0.0.0.0", "--port", "9000"], ["app:app", "--bind", "0.0.0.0:9000"]),
    (["app:app", "--port", "9000"], ["app:app", "--bind", "127.0.0.1:9000"]),  # uvicorn's default host
    (["app:app", "--host", "::"], ["app:app", "--bind", "[::]:8000"]),
    (["app:app", "--uds", "/run/app.sock"], ["app:app", "--bind", "unix:/run/app.sock"]),
    (["app:app", "--fd", "3"], ["app:app", "--bind", "fd://3"]),
    (["app:app", "--preload", "--threads", "8"], ["app:app", "--threads", "8"]),
    (["app:app", "-p", "/run/x.pid"], ["app:app", "--pid-file", "/run/x.pid"]),
])
def test_same_meaning_is_rewritten(argv: list[str], expected: list[str]) -> None:
    assert translate(argv) == expected
    build_parser().parse_args(expected)  # and gracehttp's parser takes the result


@pytest.mark.parametrize(("argv", "named"), [
    (["app:app", "--timeout", "30"], "--read-timeout"),
    (["app:app", "--access-logfile", "-"], "--access-log"),
    (["app:app", "-k", "gevent"], "one engine"),
    (["app:app", "--limit-request-field_size", "100"], "--max-header-bytes"),
    (["app:app", "-c", "gunicorn.conf.py"], "--config FILE.toml"),
    (["app:app", "-w"], "needs a value"),
])
def test_no_equivalent_is_named(argv: list[str], named: str) -> None:
    with pytest.raises(ForeignFlagError, match=named.replace(".", r"\.")):
        translate(argv)


def test_every_foreign_flag_is_in_the_readme() -> None:
    migration = README[README.index("Migrating from gunicorn"):README.index("Migrating from waitress")]
    for foreign in FOREIGN:
        for flag in foreign.flags:
            assert f"``{flag}" in migration or f"/{flag}" in migration, flag
    for flag in ("--host", "--port", "--keep-alive"):
        assert flag in migration, flag
