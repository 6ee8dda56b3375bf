"""workers > 1 under load: SIGHUP, max_requests, SIGTTIN/SIGTTOU and a supervisor upgrade
replace processes without a failed request (SPEC section 8)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.process.conftest import alive
from tests.process.load import Load
from tests.process.test_upgrade import pid_in, upgrade


def started_workers(srv: Any) -> list[int]:
    return [int(m.group(1)) for line in list(srv.stderr) if (m := re.search(r"worker \d+ started \(pid (\d+)\)", line))]


def count(srv: Any, text: str) -> int:
    return sum(text in line for line in list(srv.stderr))


def ready_supervisor(srv: Any, workers: int) -> None:
    assert wait_until(lambda: count(srv, f"all {workers} workers ready") == 1, 10), "".join(srv.stderr)[-2000:]


def no_failures(srv: Any, load: Load) -> None:
    if load.failures and os.environ.get("GRACEHTTP_TEST_LOG"):  # debugging aid: keep the whole log
        Path(os.environ["GRACEHTTP_TEST_LOG"]).write_text("".join(srv.stderr) + "\n".join(load.failures))
    assert load.failures == [], (load.failures[:5], "".join(srv.stderr)[-3000:])


def finish(srv: Any, load: Load) -> None:
    """Stop the load, check nothing failed, then stop the supervisor cleanly."""
    load.stop()
    no_failures(srv, load)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait_exit(20)[0] == 0, "".join(srv.stderr)[-3000:]


def test_sighup_replaces_every_worker_under_load(start_server: Any) -> None:
    srv = start_server(workers=2, threads=8)
    ready_supervisor(srv, 2)
    first = set(started_workers(srv))
    with Load(srv.port, clients=8, max_seconds=30) as load:
        assert wait_until(lambda: load.ok > 200, 10)
        srv.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: count(srv, "replaced: pid") == 2, 15), "".join(srv.stderr)[-3000:]
        new = set(started_workers(srv)) - first
        assert len(new) == 2
        assert wait_until(lambda: all(load.answered_by(pid) for pid in new), 10)
        assert wait_until(lambda: not any(alive(pid) for pid in first), 15)
        ok = load.ok
        assert wait_until(lambda: load.ok > ok + 200, 10)
    assert set(load.pids) == first | new
    finish(srv, load)


def test_max_requests_recycles_workers_under_load(start_server: Any) -> None:
    srv = start_server(workers=2, threads=8, max_requests=50, max_requests_jitter=10)
    ready_supervisor(srv, 2)
    with Load(srv.port, clients=8, max_seconds=30) as load:
        assert wait_until(lambda: count(srv, "replaced: pid") >= 6, 20), "".join(srv.stderr)[-3000:]
    assert count(srv, "reached max_requests") >= 6
    assert len(load.pids) >= 6
    # No worker answered many more than max_requests + jitter before its replacement took over
    # (it serves on until then, so allow the requests of one replacement's start-up).
    assert load.ok >= 6 * 50
    finish(srv, load)


def test_ttin_adds_and_ttou_removes_a_worker_under_load(start_server: Any) -> None:
    srv = start_server(workers=2, threads=8)
    ready_supervisor(srv, 2)
    with Load(srv.port, clients=8, max_seconds=30) as load:
        assert wait_until(lambda: load.ok > 100, 10)
        srv.proc.send_signal(signal.SIGTTIN)
        assert wait_until(lambda: len(started_workers(srv)) == 3, 10)
        third = started_workers(srv)[2]
        assert wait_until(lambda: load.answered_by(third), 10)
        for n in (1, 2):  # one at a time: a signal sent while the same one is pending merges with it
            srv.proc.send_signal(signal.SIGTTOU)
            assert wait_until(lambda n=n: count(srv, "SIGTTOU: worker") == n, 10)
        srv.proc.send_signal(signal.SIGTTOU)  # one worker left: ignored
        assert wait_until(lambda: count(srv, "ignored (at least one serves)") == 1, 10)
        survivors = [pid for pid in started_workers(srv) if alive(pid)]
        assert wait_until(lambda: len([p for p in started_workers(srv) if alive(p)]) == 1, 15), survivors
        ok = load.ok
        assert wait_until(lambda: load.ok > ok + 100, 10)
    assert len(load.pids) == 3
    finish(srv, load)


def test_sigusr2_upgrades_the_supervisor_under_load(start_server: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    srv = start_server(workers=2, threads=8, pid_file=str(pid_file))
    ready_supervisor(srv, 2)
    assert pid_in(pid_file) == srv.proc.pid
    old_workers = set(started_workers(srv))
    with Load(srv.port, clients=8, max_seconds=30) as load:
        assert wait_until(lambda: load.ok > 200, 10)
        new = upgrade(srv.proc.pid, pid_file)
        new_workers = set(started_workers(srv)) - old_workers
        assert len(new_workers) == 2
        assert not any(alive(pid) for pid in old_workers)
        ok = load.ok
        assert wait_until(lambda: load.ok > ok + 200, 10)
    no_failures(srv, load)
    assert set(load.pids) == old_workers | new_workers
    assert srv.proc.wait(10) == 0
    assert count(srv, "handing over to the new generation: 2 workers drain") == 1
    os.kill(new, signal.SIGTERM)
    assert wait_until(lambda: not alive(new) and not any(alive(p) for p in new_workers), 20)
    assert not pid_file.exists()


@pytest.mark.parametrize(("fault", "why"), [
    ("exit", "exited with 3 before it was ready"),
    ("hang", "not ready within 1.5s (upgrade_timeout): killed"),
])
def test_a_replacement_that_fails_leaves_the_old_worker_serving(start_server: Any, tmp_path: Path,
                                                                fault: str, why: str) -> None:
    flag = tmp_path / "fault"
    srv = start_server(env={"APP_WORKER_FAULT": f"{fault}:{flag}"}, workers=2, threads=8, upgrade_timeout=1.5)
    ready_supervisor(srv, 2)
    first = set(started_workers(srv))
    with Load(srv.port, clients=8, max_seconds=30) as load:
        assert wait_until(lambda: load.ok > 100, 10)
        flag.touch()
        srv.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: count(srv, why) == 1, 10), "".join(srv.stderr)[-3000:]
        failed = (set(started_workers(srv)) - first).pop()
        assert wait_until(lambda: not alive(failed), 10)
        assert all(alive(pid) for pid in first)
        assert count(srv, "replaced: pid") == 0  # the roll stopped at the failure
        ok = load.ok
        assert wait_until(lambda: load.ok > ok + 100, 10)
        flag.unlink()
        srv.proc.send_signal(signal.SIGHUP)  # and a later roll works
        assert wait_until(lambda: count(srv, "replaced: pid") == 2, 15), "".join(srv.stderr)[-3000:]
    assert failed not in load.pids
    finish(srv, load)
