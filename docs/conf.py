"""Sphinx configuration for gracehttp's documentation site.

Built by ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors);
``tests/unit/test_docs_site.py`` runs the same build in the test suite. Nothing is
fetched over the network: no intersphinx, no remote images.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # autodoc imports gracehttp from this checkout

import gracehttp  # noqa: E402

project = "gracehttp"
author = "the gracehttp authors"
copyright = "the gracehttp authors"
release = version = gracehttp.__version__

extensions = ["sphinx.ext.autodoc"]

# The docstrings write names in single backticks (`Config`, `ConfigError`): a Python
# cross-reference, a link where Sphinx knows the name and plain code where it does not.
default_role = "py:obj"

autodoc_member_order = "bysource"

exclude_patterns = ["_build"]
root_doc = "index"
html_theme = "alabaster"
html_static_path: list[str] = []
