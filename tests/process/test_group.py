"""ServiceGroup (SPEC section 7) in a real process: two servers and a worker, ended by the
worker's exception, by SIGTERM, and with a worker that overruns the deadline."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers import get, wait_until

SCRIPT = Path(__file__).with_name("group_app.py")
ROOT = Path(__file__).resolve().parents[2]


class Group:
    def __init__(self, **opts: object) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SCRIPT), json.dumps(opts)],
                                     env={**os.environ, "PYTHONPATH": str(ROOT)},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")), daemon=True).start()
        assert wait_until(lambda: len(self.ports()) == 2 and any("worker started" in x for x in self.out), 15), \
            "".join(self.err)

    def ports(self) -> list[int]:
        found = (re.search(r"listening on http://127\.0\.0\.1:(\d+)", line) for line in list(self.err))
        return [int(m[1]) for m in found if m]

    def result(self) -> str:
        assert self.proc.wait(30) == 0, "".join(self.err)
        return next(line.split(" ", 1)[1].strip() for line in self.out if " result " in line)


def test_a_worker_that_raises_ends_the_group_and_both_servers_drain(tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    group = Group(worker="raise", flag=str(flag))
    assert [get(port, "/").body for port in group.ports()] == [b"group", b"group"]
    flag.touch()
    assert group.result() == "result ValueError('the worker failed')"
    log = "".join(group.err)
    assert "group: poller raised ValueError: the worker failed; stopping 3 members" in log
    assert log.count("drained=True") == 2


def test_sigterm_ends_the_group_with_none_and_the_worker_sees_stop(tmp_path: Path) -> None:
    group = Group(worker="loop", flag=str(tmp_path / "unused"))
    group.proc.send_signal(signal.SIGUSR2)  # no upgrades for groups: logged, and nothing killed
    assert wait_until(lambda: any("not supported for a ServiceGroup" in line for line in group.err), 5)
    assert [get(port, "/").body for port in group.ports()] == [b"group", b"group"]
    group.proc.send_signal(signal.SIGTERM)
    assert group.result() == "result None"
    assert any("worker saw stop" in line for line in group.out)
    log = "".join(group.err)
    assert "group: SIGTERM received; stopping 3 members" in log
    assert log.count("drained=True") == 2
    assert "abandoned" not in log


def test_a_member_that_hangs_is_abandoned_at_the_deadline_and_named(tmp_path: Path) -> None:
    group = Group(worker="hang", flag=str(tmp_path / "unused"), shutdown_timeout=1.0)
    began = time.monotonic()
    group.proc.send_signal(signal.SIGTERM)
    assert group.result() == "result None"
    assert time.monotonic() - began < 10
    log = "".join(group.err)
    assert "group: poller did not stop within shutdown_timeout (1s): abandoned" in log
    assert log.count("drained=True") == 2  # the servers were not held up by the worker
