"""gunicorn's and uvicorn's flag spellings: rewritten when they mean the same, named when
they do not; the migration tables of docs/migration.rst list every one."""

from __future__ import annotations

import pathlib

import pytest

from gracehttp.cli import build_parser
from gracehttp.foreign_flags import FOREIGN, SAME, ForeignFlagError, migration_table_rst, translate

MIGRATION = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "migration.rst").read_text()


@pytest.mark.parametrize(("argv", "expected"), [
    (["app:app", "-w", "4"], ["app:app", "--workers", "4"]),
    (["app:app", "-w4"], ["app:app", "--workers", "4"]),
    (["app:app", "--keep-alive", "0"], ["app:app", "--no-keep-alive"]),  # gunicorn's 0: off
    (["app:app", "--graceful-timeout=20"], ["app:app", "--drain-timeout", "20"]),
    (["--keep-alive", "5", "app:app"], ["--idle-timeout", "5", "app:app"]),  # gunicorn's seconds
    (["app:app", "--timeout", "30"], ["app:app", "--request-timeout", "30"]),
    (["app:app", "-t", "0"], ["app:app", "--request-timeout", "none"]),  # gunicorn's 0: never
    (["app:app", "--keep-alive"], ["app:app", "--keep-alive"]),  # ours: on/off, takes nothing
    (["--keep-alive", "app:app"], ["--keep-alive", "app:app"]),  # the app is not swallowed
    (["app:app", "--host", "0.0.0.0", "--port", "9000"], ["app:app", "--bind", "0.0.0.0:9000"]),
    (["app:app", "--port", "9000"], ["app:app", "--bind", "127.0.0.1:9000"]),  # uvicorn's default host
    (["app:app", "--host", "::"], ["app:app", "--bind", "[::]:8000"]),
    (["app:app", "--uds", "/run/app.sock"], ["app:app", "--bind", "unix:/run/app.sock"]),
    (["app:app", "--fd", "3"], ["app:app", "--bind", "fd://3"]),
    (["app:app", "--preload", "--threads", "8"], ["app:app", "--threads", "8"]),
    (["app:app", "-p", "/run/x.pid"], ["app:app", "--pid-file", "/run/x.pid"]),
    (["app:app", "--ssl-certfile", "c.pem"], ["app:app", "--certfile", "c.pem"]),
    (["app:app", "-t30", "-p/run/x.pid"], ["app:app", "--request-timeout", "30", "--pid-file", "/run/x.pid"]),
    (["app:app", "--timeout-keep-alive", "5"], ["app:app", "--idle-timeout", "5"]),
    (["app:app", "--timeout-graceful-shutdown", "9"], ["app:app", "--drain-timeout", "9"]),
    (["app:app", "--limit-max-requests", "100"], ["app:app", "--max-requests", "100"]),
])
def test_same_meaning_is_rewritten(argv: list[str], expected: list[str]) -> None:
    assert translate(argv) == expected
    build_parser().parse_args(expected)  # and gracehttp's parser takes the result


@pytest.mark.parametrize(("argv", "named"), [
    (["app:app", "-k", "gevent"], "one engine"),
    (["app:app", "--limit-request-field_size", "100"], "--max-header-bytes"),
    (["app:app", "-c", "gunicorn.conf.py"], "--config FILE.toml"),
    (["app:app", "-c/etc/gunicorn.conf.py"], "--config FILE.toml"),
    (["app:app", "-kgevent"], "one engine"),
    (["app:app", "--timeout", "abc"], "--timeout takes seconds"),
    (["app:app", "-w"], "needs a value"),
])
def test_no_equivalent_is_named(argv: list[str], named: str) -> None:
    with pytest.raises(ForeignFlagError, match=named.replace(".", r"\.")):
        translate(argv)


def test_every_flag_of_theirs_has_a_row_in_the_table() -> None:
    listed = set()
    for row in migration_table_rst().splitlines()[3:-1]:
        cell = row.split("``")[1]  # their flag(s), the first code cell
        listed.update(cell.split(", "))
    for foreign in FOREIGN:
        assert set(foreign.flags) <= listed, foreign.flags
    for _, flags in SAME:
        assert set(flags.split(", ")) <= listed, flags
    assert {"--host", "--port", "--keep-alive N"} <= listed


def test_their_flags_with_our_spelling_are_ours() -> None:
    ours = {opt for action in build_parser()._actions for opt in action.option_strings}
    for _, flags in SAME:
        for flag in flags.split(", "):
            assert flag in ours, flag


def test_the_flag_table_of_the_migration_page_is_generated() -> None:
    start = MIGRATION.index(".. flags-start") + len(".. flags-start")
    assert MIGRATION[start:MIGRATION.index(".. flags-end")].strip() == migration_table_rst()


@pytest.mark.parametrize(("given", "level"), [("DEBUG", "debug"), ("Info", "info"), ("trace", "debug")])
def test_log_levels_as_gunicorn_and_uvicorn_spell_them(given: str, level: str) -> None:
    assert build_parser().parse_args(["app:app", "--log-level", given]).log_level == level
