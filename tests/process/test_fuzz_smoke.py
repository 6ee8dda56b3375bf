"""The atheris harness runs from a clean clone (a bounded number of runs; the documented
command runs 60 s)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_fuzz_harness_runs_clean(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("atheris")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz" / "fuzz_parser.py"), "-runs=20000",
                           f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # libFuzzer counts its seed inputs too, so the total may pass the -runs bound slightly.
    done = re.search(r"^Done (\d+) runs", proc.stderr, re.MULTILINE)
    assert done is not None, proc.stderr[-3000:]
    assert int(done.group(1)) >= 20000
    assert not list(tmp_path.glob("crash-*"))
