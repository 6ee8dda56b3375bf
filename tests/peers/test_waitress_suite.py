"""A peer's test suite in CI: waitress's own functional tests, unmodified, against gracehttp
(TCP and Unix socket). Every test passes or shows exactly its listed difference
(`tests/peers/differences.py`); the conformance section of docs/http.rst has the table."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

from tests.peers import waitress_suite
from tests.peers.differences import DIFFERENCES, Difference
from tests.peers.waitress_suite import Outcome

#: Tests in waitress 3.0.2's test_functional.py (68 mixin tests, most over TCP and Unix).
TOTAL = 137


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    try:
        tree = waitress_suite.fetch()
    except waitress_suite.Unavailable as exc:
        pytest.skip(str(exc))
    return waitress_suite.run(tree, Path(tmp_path_factory.mktemp("waitress")) / "junit.xml")


@pytest.mark.timeout(600)
def test_every_waitress_test_passes_or_shows_its_listed_difference(outcomes: list[Outcome]) -> None:
    assert len(outcomes) == TOTAL, "the suite's test count changed: read it again"
    wrong = []
    for outcome in outcomes:
        listed = DIFFERENCES.get(outcome.test)
        if listed is None and outcome.message:
            wrong.append(f"{outcome.transport}{outcome.test}: fails, not listed: {outcome.message}")
        elif listed is not None and not outcome.message:
            wrong.append(f"{outcome.transport}{outcome.test}: passes now: take it off the list")
        elif listed is not None and not re.search(listed.shows, outcome.message):
            wrong.append(f"{outcome.transport}{outcome.test}: fails another way than listed: {outcome.message}")
    assert not wrong, "\n".join(wrong)


def test_every_listed_difference_is_a_test_of_the_suite(outcomes: list[Outcome]) -> None:
    assert set(DIFFERENCES) <= {o.test for o in outcomes}


def test_the_docs_table_counts_every_difference() -> None:
    """The conformance list of docs/http.rst: one row per difference, with how many tests show it."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "http.rst").read_text()
    counts: collections.Counter[Difference] = collections.Counter(DIFFERENCES.values())
    for difference, n in counts.items():
        row = re.search(re.escape(difference.title) + r"\*\* \((\d+) tests?\b", page)
        assert row is not None, f"no row in docs/http.rst for {difference.title!r}"
        assert int(row.group(1)) == n, difference.title
