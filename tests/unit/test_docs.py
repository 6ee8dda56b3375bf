"""The README's derived parts agree with the code they are derived from."""

import pathlib

from gracehttp.config import config_table_rst
from gracehttp.state import transitions_rst

README = (pathlib.Path(__file__).resolve().parents[2] / "README.rst").read_text()


def _section(name: str) -> str:
    start = README.index(f".. {name}-start") + len(f".. {name}-start")
    return README[start:README.index(f".. {name}-end")].strip()


def test_config_table_matches_the_fields() -> None:
    assert _section("config") == config_table_rst()


def test_lifecycle_list_matches_the_state_table() -> None:
    assert _section("transitions") == transitions_rst()


def test_readme_opens_with_the_two_commands() -> None:
    head = README[:600]
    assert "pip install -e . && python examples/hello.py" in head
    assert "pip install -e '.[test]' && python -m pytest" in head


ARCHITECTURE = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "architecture.rst").read_text()


def test_architecture_state_table_matches_connstate() -> None:
    from gracehttp.connstate import table_rst

    start = ARCHITECTURE.index(".. connstate-start") + len(".. connstate-start")
    assert ARCHITECTURE[start:ARCHITECTURE.index(".. connstate-end")].strip() == table_rst()


def test_the_code_points_to_the_docs_not_to_an_outside_spec() -> None:
    package = pathlib.Path(__file__).resolve().parents[2] / "gracehttp"
    for path in package.rglob("*.py"):
        assert "SPEC section" not in path.read_text(), path
