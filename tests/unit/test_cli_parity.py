"""One declaration per setting: the flags, environment names, TOML keys and the table of
docs/configuration.rst all come from the `Config` fields, and this fails when any of them disagree."""

from __future__ import annotations

import pathlib
from dataclasses import fields
from typing import Any

import pytest

from gracehttp.cli import UsageError, build_parser, file_values, flag_values
from gracehttp.config import Config, env_values, flags_of

CONFIG_PAGE = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "configuration.rst").read_text()
SETTABLE = [f for f in fields(Config) if f.metadata.get("parse") is not None]
SPEC_FLAGS = ["--bind", "-b", "--threads", "--workers", "--admin-bind", "--debug", "--drain-delay", "--drain-timeout",
              "--shutdown-timeout", "--read-header-timeout", "--idle-timeout", "--max-body-bytes", "--certfile",
              "--keyfile", "--access-log", "--log-level", "--pid-file", "--config", "--version", "--help"]


def option_strings() -> set[str]:
    return {opt for action in build_parser()._actions for opt in action.option_strings}


def test_every_flag_of_the_spec_exists() -> None:
    assert set(SPEC_FLAGS) <= option_strings()


@pytest.mark.parametrize("f", SETTABLE, ids=lambda f: f.name)
def test_field_has_flag_env_toml_key_and_docs_row(f: object) -> None:
    name = f.name  # type: ignore[attr-defined]
    flags = flags_of(f)  # type: ignore[arg-type]
    assert flags or name == "addrs"  # addrs: every --bind after the first
    assert set(flags) <= option_strings()
    assert file_values({name: getattr(Config(), name)}, "test") == {name: getattr(Config(), name)}
    row = next(line for line in CONFIG_PAGE.splitlines() if line.startswith(f"``{name}``"))
    assert f"``GRACEHTTP_{name.upper()}``" in row
    for flag in flags:
        assert f"``{flag}``" in row


@pytest.mark.parametrize("f", SETTABLE, ids=lambda f: f.name)
def test_flag_and_env_parse_the_same_text(f: object) -> None:
    name = f.name  # type: ignore[attr-defined]
    default = getattr(Config(), name)
    text = ",".join(default) if isinstance(default, tuple) else "none" if default is None else str(default)
    from_env = env_values("GRACEHTTP_", {f"GRACEHTTP_{name.upper()}": text})
    assert from_env == {name: default}
    flags = flags_of(f)  # type: ignore[arg-type]
    if not flags:
        return
    argv = ["app:app", *([flags[0]] if isinstance(default, bool) else [flags[0], text])]
    if isinstance(default, bool) and not default:
        argv[1] = flags[0]
    elif isinstance(default, bool):
        argv[1] = "--no-" + flags[0][2:]
    values = flag_values(build_parser().parse_args(argv))
    expected = not default if isinstance(default, bool) else default
    assert values[name] == expected


def test_unknown_toml_keys_are_refused() -> None:
    with pytest.raises(UsageError, match="unknown setting 'app'"):
        file_values({"app": "x"}, "f.toml")  # Python only: not settable from text


def test_a_pyproject_without_gracehttp_settings_is_not_parsed(tmp_path: Any) -> None:
    """Not even on Python 3.10 without a TOML parser: it holds nothing for us."""
    from gracehttp.cli import pyproject_values

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n[tool.ruff]\nline-length = 120\n")
    assert pyproject_values(str(tmp_path)) == {}


def test_gracehttp_settings_in_pyproject_are_read_or_the_missing_parser_named(tmp_path: Any) -> None:
    import sys

    from gracehttp.cli import pyproject_values

    (tmp_path / "pyproject.toml").write_text("[tool.gracehttp]\nthreads = 3\n")
    try:
        import tomllib  # noqa: F401
    except ModuleNotFoundError:
        try:
            import tomli  # noqa: F401
        except ModuleNotFoundError:
            assert sys.version_info < (3, 11)
            with pytest.raises(UsageError, match="needs tomli"):
                pyproject_values(str(tmp_path))
            return
    assert pyproject_values(str(tmp_path)) == {"threads": 3}
