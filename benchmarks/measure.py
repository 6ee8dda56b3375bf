"""Measurements: wrk runs, a server's process tree (CPU seconds, RSS), idle connections,
and syscalls per request (strace). Linux only: it reads /proc."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def ensure_tool(name: str, package: str | None = None) -> str:
    """The path of `name`, installed with apt-get when missing."""
    path = shutil.which(name)
    if path:
        return path
    print(f"installing {package or name} with apt-get ...", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", package or name], check=True, capture_output=True)
    path = shutil.which(name)
    if not path:
        sys.exit(f"{name} is not available")
    return path


def wrk_counts(out: str) -> tuple[int, dict[str, int], int]:
    """From wrk's report: requests, socket errors by kind, non-2xx/3xx responses."""
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    socket_errors = {kind: int(n) for kind, n in re.findall(r"(connect|read|write|timeout) (\d+)", out)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return requests, socket_errors, int(non2xx.group(1)) if non2xx else 0


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    out = [pid]
    i = 0
    while i < len(out):
        try:
            for task in os.listdir(f"/proc/{out[i]}/task"):
                with open(f"/proc/{out[i]}/task/{task}/children") as f:
                    out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
        i += 1
    return out


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of `pid`'s whole process tree."""
    user = system = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except OSError:
            pass
    return user / TICK, system / TICK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total / 2**20


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    served_connections: int | None
    cpu_s: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(port: int, pid: int, *, duration: float, connections: int, close: bool,
        path: str = "/", script: str = "fairness.lua") -> WrkResult:
    # A 10 s timeout, not wrk's 2 s: a slow answer must count in the latencies (wrk leaves
    # timed-out requests out of them), not vanish from a tail it would flatter.
    cmd = [ensure_tool("wrk"), "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "10s",
           "-s", os.path.join(HERE, script), f"http://127.0.0.1:{port}{path}"]
    if close:
        cmd[1:1] = ["-H", "Connection: close"]
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    cpu = cpu_seconds(pid) - cpu0
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    reqs = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    fair = re.search(r"FAIRNESS (\d+)", out)
    served = int(fair.group(1)) if fair else 0
    return WrkResult(
        rps=float(rps.group(1)) if rps else 0.0,
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
        errors=errors + (int(non2xx.group(1)) if non2xx else 0),
        requests=int(reqs.group(1)) if reqs else 0,
        # A server that closes after each response (gunicorn sync) is reconnected to and
        # shows more ports than connections: it served them all.
        served_connections=None if close or served == 0 else min(served, connections),
        cpu_s=round(cpu, 2),
    )


def hold_idle(port: int, count: int, deadline_s: float = 15.0) -> list[socket.socket]:
    """Open `count` keep-alive connections at once, have each served one request, and
    return those that were (the others are closed): the server now holds them idle."""
    sel = selectors.DefaultSelector()
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_WRITE)
    held: list[socket.socket] = []
    deadline = time.monotonic() + deadline_s
    while sel.get_map() and time.monotonic() < deadline:
        for key, events in sel.select(timeout=0.5):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                if events & selectors.EVENT_WRITE:
                    s.send(request)
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                data = s.recv(4096)
            except OSError:
                data = b""
            sel.unregister(s)
            if data.startswith(b"HTTP/1.1 200"):
                held.append(s)
            else:
                s.close()
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]
    return held


def strace_counts(port: int, pid: int, *, close: bool = False, duration: float = 3.0) -> tuple[dict[str, int], int]:
    """System calls of the server tree by name (``strace -c -f``) during a wrk run, and the
    requests that run made. strace slows the server; the counts per request are what matter."""
    strace = ensure_tool("strace")
    args = [strace, "-c", "-f", "-o", "/dev/stderr"]
    for p in tree(pid):
        args += ["-p", str(p)]
    tracer = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # let strace attach before the load starts
    result = wrk(port, pid, duration=duration, connections=50, close=close)
    tracer.terminate()
    _, err = tracer.communicate(timeout=30)
    rows = re.findall(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", err, re.M)
    return {name: int(calls) for calls, name in rows}, result.requests


def syscalls_per_request(port: int, pid: int, duration: float = 3.0) -> float | None:
    """All system calls per request of a keep-alive wrk run (`strace_counts`)."""
    counts, requests = strace_counts(port, pid, duration=duration)
    if "total" not in counts or not requests:
        return None
    return counts["total"] / requests
