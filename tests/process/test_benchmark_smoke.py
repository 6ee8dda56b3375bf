"""The benchmark suite runs from a clean clone: a one-second version against two servers."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (.ci/run installs it)")
@pytest.mark.timeout(300)
def test_quick_benchmark_every_server_answers_every_load(tmp_path: pathlib.Path) -> None:
    """``run.py --quick`` (one-second runs): every server in it answers every load it takes
    part in, without an error, and the ratio table, the JSON and both charts come out."""
    for module in ("waitress", "gunicorn", "granian", "flask", "matplotlib"):
        pytest.importorskip(module)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from run import CURVE_KEYS, LOADS, QUICK
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--duration", "1", "--idle", "50",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr
    assert "gracehttp (1 process)" in proc.stdout
    assert "gracehttp / granian" in proc.stdout
    data = json.loads((tmp_path / "latest.json").read_text())
    for name in QUICK:
        expected = {ld.key for ld in LOADS if ld.servers is None or name in ld.servers}
        assert set(data["summary"][name]) == expected, name
        for key in expected:
            summary = data["summary"][name][key]
            assert summary["rps"] > 0, (name, key)
            assert summary["errors"] == 0, (name, key)
        assert "idle" in data["results"][name], name
        if name != "gunicorn-sync-1":  # its sync worker closes each connection after one answer
            assert data["results"][name]["idle"]["held"] == 50, name
    assert data["summary"]["gracehttp"]["hello keep-alive"]["served_min"] == 50
    compared = {r["key"] for r in data["ratios"] if r["ours"] == "gracehttp" and r["theirs"] == "granian-1"}
    assert compared == {ld.key for ld in LOADS if ld.servers is None or "granian-1" in ld.servers}
    assert set(CURVE_KEYS) <= compared
    assert (tmp_path / "latest.png").stat().st_size > 10_000
    assert (tmp_path / "latest-curve.png").stat().st_size > 10_000


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (.ci/run installs it)")
@pytest.mark.parametrize("extra", [[], ["--workers", "2", "--signal", "HUP"]])
def test_upgrade_drill_loses_nothing(extra: list[str]) -> None:
    """A 6-second version of the upgrade drill (two upgrades under wrk); it exits 1 on any error."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "drills" / "upgrade_under_load.py"), "--duration", "6",
         "--every", "2", *extra], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "errors: 0" in proc.stdout
    # The upgrades' times come from the drill's JSON: the table prints when each signal went out,
    # which a busy machine can delay by a few milliseconds past its 2 s pacing.
    done = json.loads((ROOT / "benchmarks" / "results" / "drill-upgrade.json").read_text())
    assert [round(u["at"]) for u in done["upgrades"]] == [2, 4], proc.stdout
    assert all(u["done"] for u in done["upgrades"]), proc.stdout


def test_soak_drill_runs_short() -> None:
    """A 10,000-request version of the soak (every kind of request, aborted clients): no wrong
    answer, descriptors and threads back to their idle counts."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "drills" / "soak.py"), "--requests", "10000",
                           "--rss-slack", "50"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "10000 requests" in proc.stdout
    assert "0 wrong answers" in proc.stdout


@pytest.mark.skipif(shutil.which("wrk") is None or shutil.which("haproxy") is None,
                    reason="wrk and haproxy are needed (.ci/run installs them)")
def test_rolling_restart_drill_behind_haproxy_loses_nothing() -> None:
    """A 10-second version of the rolling-restart drill: HAProxy in front of three gracehttp
    instances, one restarted with SIGTERM, one upgraded with SIGUSR2, one drained and undrained
    through its admin listener, under wrk; it exits 1 on any failed request."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "drills" / "rolling_restart.py"), "--duration", "10", "--quick",
         "--servers", "gracehttp", "--no-plot"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("gracehttp"))
    requests, non2xx, socket_errors, probe_errors = (int(x) for x in row[1:5])
    assert requests > 1000
    assert (non2xx, socket_errors, probe_errors) == (0, 0, 0)
    done = json.loads((ROOT / "benchmarks" / "results" / "drill-rolling.json").read_text())
    assert [a["phase"] for a in done[0]["actions"]] == ["restart", "upgrade", "drain"]
    assert all(a["back_in_rotation"] for a in done[0]["actions"])


def test_each_granian_setup_runs_right_after_the_gracehttp_setup_it_is_compared_with() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from run import PAIRS, run_order
        from servers import SERVERS
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    order = [s.name for s in run_order(list(SERVERS))]
    assert sorted(order) == sorted(s.name for s in SERVERS)
    for ours, theirs in PAIRS:
        assert order.index(theirs) == order.index(ours) + 1
    # Alone (its gracehttp setup not in the run), a granian setup keeps its place.
    alone = [s for s in SERVERS if s.name in ("gracehttp", "waitress", "granian-2")]
    assert [s.name for s in run_order(alone)] == ["gracehttp", "waitress", "granian-2"]
