"""The overload drill, scaled down: a server whose threads are all busy and whose connection
limit is exceeded, under slow-client attacks, still answers its probe and an ordinary client,
and gives back every descriptor and thread (benchmarks/drills/overload.py)."""

from __future__ import annotations

import json
import pathlib
import resource
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1024,
                    reason="the scaled-down attack needs about 650 descriptors (ulimit -Hn)")
def test_overload_drill_keeps_probe_and_client_served(tmp_path: pathlib.Path) -> None:
    """A tenth of the attack for 4 s, then 2 s of the CPU phase (64 connections of 1 ms of
    Python each, threads=32): the probe is answered in both."""
    out = tmp_path / "overload.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "drills" / "overload.py"), "--scale", "10", "--seconds", "4",
         "--cpu-seconds", "2", "--json", str(out), "--no-fail"],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    p1, p2 = result["phase1"], result["phase2"]
    probe, normal, idle, after = p1["probe"], p1["normal"], p1["idle"], p1["after"]
    # Every goal is checked before failing, so the message names all that are missed.
    missed = []
    if probe["failures"]:
        missed.append(f"{probe['failures']} of {probe['sent']} probes failed: {probe['failure_kinds']}")
    # The drill's goal is 50 ms; twice that here, where the suite shares the machine with other tests.
    if probe["p99"] is None or probe["p99"] >= 100:
        missed.append(f"probe p99 {probe['p99']} ms")
    if normal["sent"] == 0 or normal["answered"] != normal["sent"]:
        missed.append(f"normal requests answered {normal['answered']} of {normal['sent']}: {normal['failure_kinds']}")
    if after["fds"] > idle["fds"]:
        missed.append(f"descriptors {idle['fds']} idle, {after['fds']} after")
    if after["threads"] > idle["threads"]:
        missed.append(f"threads {idle['threads']} idle, {after['threads']} after")
    cpu_probe = p2["probe"]
    if cpu_probe["failures"] or cpu_probe["max"] is None or cpu_probe["max"] >= 250:
        missed.append(f"CPU phase: probe max {cpu_probe['max']} ms, {cpu_probe['failures']} failed")
    assert not missed, "; ".join(missed) + "\n" + proc.stdout
