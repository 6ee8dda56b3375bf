"""Fetch waitress's source at a pinned version and run its functional tests against gracehttp.

The source package is fetched with pip (``pip download --no-binary``) into a cache
outside the repository, checked against its pinned SHA-256, and unpacked there. Its
``tests/test_functional.py`` then runs in a pytest process of its own, in waitress's
source tree (so ``tests`` is waitress's package), with `gracehttp_peer_plugin`
swapping the fixture servers for gracehttp. The outcome of every test comes back
through pytest's JUnit XML.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

VERSION = "3.0.2"
SDIST = f"waitress-{VERSION}.tar.gz"
SHA256 = "682aaaf2af0c44ada4abfb70ded36393f0e307f4ab9456a215ce0020baefc31f"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


class Unavailable(Exception):
    """waitress's source could not be fetched here (no network, no index): the reason."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gracehttp-peers"


def fetch() -> Path:
    """waitress's unpacked source tree, fetched once; raises `Unavailable`."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / SDIST
    if not sdist.exists():
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                 "--disable-pip-version-check", f"waitress=={VERSION}", "-d", str(cache)],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0 or not sdist.exists():
            tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-2:])
            raise Unavailable(f"pip could not fetch waitress=={VERSION} source: {tail}")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SHA256:
        sdist.unlink()  # fetched again next time
        raise AssertionError(f"{sdist} has SHA-256 {digest}, not the pinned {SHA256}")
    tree = cache / f"waitress-{VERSION}"
    if not (tree / "tests" / "test_functional.py").exists():
        with tarfile.open(sdist) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(cache, filter="data")
            else:  # Pythons without extraction filters: refuse any path leaving the cache
                for member in tar.getmembers():
                    if member.name.startswith("/") or ".." in Path(member.name).parts:
                        raise AssertionError(f"unsafe path in {sdist}: {member.name}")
                tar.extractall(cache)
    return tree


@dataclass(frozen=True)
class Outcome:
    test: str  # "EchoTests::test_date_and_server": the mixin, the same for TCP and Unix
    transport: str  # "Tcp" or "Unix"
    message: str  # "" when it passed; else the first line of the failure or error


def run(tree: Path, xml_path: Path) -> list[Outcome]:
    """Run waitress's functional tests against gracehttp; every test's outcome."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "src"), str(HERE), str(ROOT)])}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider",
                             "-p", "gracehttp_peer_plugin", "tests/test_functional.py", "--junitxml", str(xml_path)],
                            cwd=tree, env=env, capture_output=True, text=True, timeout=540)
    if not xml_path.exists():
        raise AssertionError(f"waitress's suite did not run:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    outcomes = []
    for case in ET.parse(xml_path).iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        found = re.match(r"(Tcp|Unix)?(\w+)", cls)
        assert found is not None
        failed = case.find("failure")
        if failed is None:
            failed = case.find("error")
        if case.find("skipped") is not None:
            message = "skipped"
        elif failed is None:
            message = ""
        else:
            message = (failed.get("message") or "failed").strip().splitlines()[0]
        outcomes.append(Outcome(f"{found.group(2)}::{case.get('name')}", found.group(1) or "", message))
    return outcomes
