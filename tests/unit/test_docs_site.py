"""The documentation site builds with warnings as errors: a broken reference, a page
outside the table of contents, a docstring that is not valid reStructuredText or an
``.. include::`` of a file that is gone fails here, as it fails ``sphinx-build -W``.

Skipped where Sphinx is not installed (it comes with the ``test`` extra; the other
Pythons' CI environments do without it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_site_builds_without_a_warning(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"),
         str(ROOT / "docs"), str(tmp_path / "html")],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "html" / "index.html").exists()
    for page in (ROOT / "docs").glob("*.rst"):
        assert (tmp_path / "html" / f"{page.stem}.html").exists(), page.name
