"""The docs' derived parts agree with the code they are derived from, and the README,
the front page, opens with the two commands and links to pages that exist."""

import pathlib
import re

from gracehttp.config import config_table_rst
from gracehttp.state import transitions_rst

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.rst").read_text()


def _section(text: str, name: str) -> str:
    start = text.index(f".. {name}-start") + len(f".. {name}-start")
    return text[start:text.index(f".. {name}-end")].strip()


def test_config_table_matches_the_fields() -> None:
    """Regenerate with `python -c "from gracehttp.config import config_table_rst as t; print(t())"`."""
    assert _section((DOCS / "configuration.rst").read_text(), "config") == config_table_rst()


def test_lifecycle_list_matches_the_state_table() -> None:
    assert _section((DOCS / "lifecycle.rst").read_text(), "transitions") == transitions_rst()


def test_readme_opens_with_the_two_commands() -> None:
    head = README[:600]
    assert "pip install -e . && python examples/hello.py" in head
    assert "pip install -e '.[test]' && python -m pytest" in head


def test_readme_links_every_page_and_only_pages_that_exist() -> None:
    linked = set(re.findall(r"<(docs/[\w.-]+\.rst)>`_", README))
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.rst")} - {"docs/index.rst"}
    assert linked == pages


def test_every_page_is_in_the_table_of_contents() -> None:
    index = (DOCS / "index.rst").read_text()
    toctree = index[index.index(".. toctree::"):]
    listed = {line.strip() for line in toctree.splitlines()[1:] if line.strip() and not line.strip().startswith(":")}
    assert listed == {p.stem for p in DOCS.glob("*.rst")} - {"index"}


ARCHITECTURE = (DOCS / "architecture.rst").read_text()


def test_architecture_state_table_matches_connstate() -> None:
    from gracehttp.connstate import table_rst

    start = ARCHITECTURE.index(".. connstate-start") + len(".. connstate-start")
    assert ARCHITECTURE[start:ARCHITECTURE.index(".. connstate-end")].strip() == table_rst()


def test_the_code_points_to_the_docs_not_to_an_outside_spec() -> None:
    package = ROOT / "gracehttp"
    for path in package.rglob("*.py"):
        assert "SPEC section" not in path.read_text(), path


def test_benchmark_tables_match_the_run_kept_beside_them() -> None:
    """docs/drills.rst quotes the latest full benchmark run: its tables are those
    ``benchmarks/rst_tables.py`` renders from docs/benchmark.json, both charts are kept,
    and the ratios quoted are those of the run."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from rst_tables import render
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    data = json.loads((DOCS / "benchmark.json").read_text())
    assert _section((DOCS / "drills.rst").read_text(), "bench") == render(data).strip()
    assert (DOCS / "benchmark.png").stat().st_size > 10_000
    assert (DOCS / "benchmark-curve.png").stat().st_size > 10_000
    assert {r["key"] for r in data["ratios"] if r["ours"] == "gracehttp"} >= {"hello keep-alive", "c=1000"}
