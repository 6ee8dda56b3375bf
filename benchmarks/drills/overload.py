"""Drill: overload. Does a server whose every thread is busy, whose connection limit is
exceeded and which is under every kind of slow-client attack still answer its readiness
probe, serve an ordinary client, and give back every descriptor and thread afterwards?

    python benchmarks/drills/overload.py [--seconds 10] [--scale 1] [--json PATH] [--no-fail]

Phase 1 (overload): one gracehttp process, ``threads=4``, ``max_connections`` 1,024 (the
default; divided by --scale like the counts). For --seconds, all at once, every client
bounded in count and ending with the phase:

- 4 requests to ``/slow``, which sleeps until a second after the phase: every thread busy;
- 1,000 slow heads: half a request head, then one byte every --trickle seconds (1);
- 200 slow bodies: a head with ``Content-Length: 1000000``, then one body byte per second;
- 100 ``Expect: 100-continue`` uploads to ``/upload`` (which reads the body) that dribble
  the body without waiting for the 100;
- 100 malformed requests (a space in a header name: 400), then one byte per second;
- 100 requests for ``/big`` (4 MiB) whose answer is never read;
- 2,000 connections held open on top, sending nothing;
- a probe: ``GET /readyz`` every 100 ms, each on a fresh connection with a 1 s timeout
  (the kubelet's default), one at a time (the next at the next tick after an answer);
- a normal client: ``GET /``, one at a time on fresh connections, every 200 ms, each
  with a timeout of the phase's length.

The slow kinds connect in a shuffled order, so each gets its share of what the server
accepts, the held connections after them. An attacker ignores the server's FIN (it keeps
dribbling into a lingering close) and closes only when the phase ends. ``--busy 0`` leaves
the threads free, to see what the other attackers do on their own. The attack runs in its
own process (``overload.py attack``), so its Python work does not delay the probe's clock;
the server is ``overload.py serve``. The server's RSS, descriptors and threads are sampled
idle, every 200 ms during the phase, and after the attack, polling until they are back at
their idle counts (--settle seconds, 10).

Phase 2 (CPU): a second server with ``threads=32``; 64 keep-alive connections each ask for
``/cpu`` (1 ms of pure-Python work) in a loop for --cpu-seconds (5), while the probe goes on.

Goals, each printed PASS or FAIL; exit status 1 if any fails (--no-fail: always 0):
no probe failures and probe p99 under 50 ms in phase 1 (a failed probe counts as 1 s, its
timeout), every normal request answered (200), descriptors and threads back to their idle
counts, and the phase-2 probe's maximum under 250 ms (no failures). JSON in
benchmarks/results/drill-overload.json, or --json PATH.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import heapq
import itertools
import json
import math
import os
import random
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(os.path.dirname(HERE), "results")
HOST = "127.0.0.1"

#: Phase 1's attackers at --scale 1 (the --busy requests, 4, are not scaled: they match the threads).
ATTACK = {"slow_head": 1000, "slow_body": 200, "expect": 100, "malformed": 100, "big": 100, "hold": 2000}
LABELS = {"slow_head": "slow heads", "slow_body": "slow bodies", "expect": "Expect dribblers",
          "malformed": "400 + trickle", "big": "unread /big", "hold": "held"}
#: The busy requests end this long after the phase (see `phase_overload`).
BUSY_AFTER = 1.0
THREADS_OVERLOAD, THREADS_CPU, CPU_CONNECTIONS = 4, 32, 64
MAX_CONNECTIONS = 1024  # gracehttp's default
PROBE_EVERY, PROBE_TIMEOUT, NORMAL_EVERY = 0.1, 1.0, 0.2


def normal_timeout(seconds: float) -> float:
    """A normal request waits for a free thread: the phase, the busy requests' overrun, and 5 s."""
    return seconds + BUSY_AFTER + 5.0
GOAL_P99_MS, GOAL_CPU_MAX_MS = 50.0, 250.0
#: A file-descriptor margin for everything that is not an attacker's socket.
FD_MARGIN = 256

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)")


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the server (``overload.py serve THREADS MAX_CONNECTIONS``) ------------------------------

def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """``/slow?until=T`` sleeps until ``time.monotonic()`` reaches T (one clock for the whole
    machine, so the drill can end the sleep with its phase); ``/cpu?ms=N`` spins N ms in
    pure Python; ``/big?mib=N`` answers N MiB; ``/upload`` reads its body; anything else: hello."""
    from apps import hello  # benchmarks/apps.py, the app every benchmark serves

    path = environ["PATH_INFO"]
    query = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    chunks: list[bytes]
    if path == "/slow":
        time.sleep(min(120.0, max(0.0, float(query.get("until", "0")) - time.monotonic())))
        chunks = [b"slept\n"]
    elif path == "/cpu":
        end = time.perf_counter() + float(query.get("ms", "1")) / 1000
        n = 0
        while time.perf_counter() < end:
            n += sum(range(64))
        chunks = [b"spun %d\n" % n]
    elif path == "/big":
        chunks = [b"x" * 65536] * (int(query.get("mib", "4")) * 16)
    elif path == "/upload":
        chunks = [b"read %d\n" % len(environ["wsgi.input"].read())]
    else:
        return hello(environ, start_response)  # type: ignore[no-any-return]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(sum(map(len, chunks))))])
    return chunks


def serve(threads: int, max_connections: int, backlog: int) -> None:
    import logging

    sys.path.insert(0, os.path.dirname(HERE))
    import gracehttp
    from gracehttp import Config, GracefulServer

    raise_fd_limit()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    logging.info("overload drill server: gracehttp from %s", os.path.dirname(gracehttp.__file__))
    # Short drain and shutdown so that stopping a server that is stuck does not hold up the drill.
    GracefulServer(Config(addr=f"{HOST}:0", app=app, threads=threads, max_connections=max_connections, backlog=backlog,
                          drain_timeout=2.0, shutdown_timeout=4.0)).serve_forever()


class Server:
    """``overload.py serve`` as a real process; its port comes from its first log line."""

    def __init__(self, threads: int, max_connections: int, backlog: int) -> None:
        self.log_path = tempfile.mkstemp(prefix="gracehttp-overload-", suffix=".log")[1]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, __file__, "serve", str(threads), str(max_connections),
                                          str(backlog)],
                                         stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": ROOT})
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        found = None
        while found is None and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.02)
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log())
        if found is None:
            self.proc.kill()
            raise SystemExit("the server did not start:\n" + self.log())
        self.port = int(found.group(1))
        source = re.search(r"gracehttp from (\S+)", self.log())
        self.source = source.group(1) if source else "?"

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def log_counts(self) -> dict[str, int]:
        text = self.log()
        return {"warnings": text.count(" WARNING "), "errors": text.count(" ERROR "),
                "tracebacks": text.count("Traceback"), "path": self.log_path}

    def stop(self) -> int | None:
        """SIGTERM; SIGKILL if it has not exited 15 s later. Returns its exit status."""
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None


def sample(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    kib = {k: int(v) for k, v in re.findall(r"(VmRSS|VmHWM):\s+(\d+)", status)}
    return {"rss_mib": round(kib["VmRSS"] / 1024, 1), "hwm_mib": round(kib["VmHWM"] / 1024, 1),
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": len(os.listdir(f"/proc/{pid}/task"))}


def settle(pid: int, target: dict[str, float] | None, seconds: float) -> tuple[dict[str, float], float | None]:
    """Poll every 100 ms until the descriptor and thread counts are back at `target` (or, without
    one, the same three readings in a row: start-up adds a thread or two after the first log
    line); returns the last sample and how long it took (None: not within `seconds`)."""
    started = time.monotonic()
    readings = [sample(pid)]
    while True:
        time.sleep(0.1)
        now = sample(pid)
        readings.append(now)
        if target is not None:
            done = now["fds"] <= target["fds"] and now["threads"] <= target["threads"]
        else:
            done = len({(r["fds"], r["threads"]) for r in readings[-3:]}) == 1 and len(readings) >= 3
        if done:
            return now, round(time.monotonic() - started, 2)
        if time.monotonic() - started > seconds:
            return now, None


class Sampler(threading.Thread):
    """The server's RSS, descriptors and threads every 200 ms until stopped."""

    def __init__(self, pid: int, t0: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.t0 = pid, t0
        self.samples: list[dict[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            with contextlib.suppress(OSError, KeyError):
                self.samples.append({"t": round(time.monotonic() - self.t0, 1), **sample(self.pid)})


# -- HTTP on non-blocking sockets ----------------------------------------------------------

def parse_response(buf: bytes, eof: bool = False) -> tuple[int, int] | None:
    """(status, length) of the first complete response in `buf`, or None if it is not all here.
    Interim 1xx answers are skipped (their length included)."""
    skipped = 0
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        found = _STATUS.match(buf)
        status = int(found.group(1)) if found else 0
        if 100 <= status < 200:
            skipped += end + 4
            buf = buf[end + 4:]
            continue
        length = _LENGTH.search(buf[:end])
        if length is None:
            return (status, skipped + len(buf)) if eof else None
        total = end + 4 + int(length.group(1))
        return (status, skipped + total) if len(buf) >= total else None


class Fetch:
    """One request on a fresh non-blocking connection, timed from before ``connect``."""

    __slots__ = ("buf", "connected", "deadline", "error", "ms", "out", "sock", "started", "status")

    def __init__(self, port: int, request: bytes, timeout: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.out, self.buf, self.connected = request, b"", False
        self.status: int | None = None
        self.error: str | None = None
        self.ms = 0.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        err = self.sock.connect_ex((HOST, port))
        if err not in (0, errno.EINPROGRESS):
            self.finish(f"connect: {errno.errorcode.get(err, err)}")

    def wants(self) -> int:
        return selectors.EVENT_WRITE if not self.connected or self.out else selectors.EVENT_READ

    def handle(self) -> bool:
        """Progress on an event; True when done (answered or failed)."""
        if not self.connected:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return self.finish(f"connect: {errno.errorcode.get(err, err)}")
            self.connected = True
        try:
            if self.out:
                self.out = self.out[self.sock.send(self.out):]
                return False
            data = self.sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError as exc:
            return self.finish(f"{type(exc).__name__} {'awaiting answer' if not self.out else 'sending'}")
        self.buf += data
        done = parse_response(self.buf, eof=not data)
        if done is not None:
            self.status = done[0]
            return self.finish(None if done[0] == 200 else f"status {done[0]}")
        return self.finish("closed before the answer") if not data else False

    def expire(self) -> bool:
        return self.finish("timeout connecting" if not self.connected else
                           "timeout sending" if self.out else "timeout awaiting answer")

    def finish(self, error: str | None) -> bool:
        self.error = error
        self.ms = (time.monotonic() - self.started) * 1000
        with contextlib.suppress(OSError):
            self.sock.close()
        return True


class Pinger(threading.Thread):
    """GET `path` on fresh connections, one at a time, on a ticker of `every` seconds from
    `start_at` until `end_at`: a request goes out at a tick; ticks that pass while it is out are
    skipped (the kubelet's prober works so: one probe at a time, on a Go ticker, which drops
    the ticks its reader misses)."""

    def __init__(self, port: int, path: str, every: float, timeout: float, start_at: float, end_at: float) -> None:
        super().__init__(daemon=True)
        self.port, self.every, self.timeout = port, every, timeout
        self.start_at, self.end_at = start_at, end_at
        self.request = f"GET {path} HTTP/1.1\r\nHost: overload\r\nConnection: close\r\n\r\n".encode()
        self.samples: list[dict[str, Any]] = []
        self.next_at = start_at

    def record(self, f: Fetch) -> None:
        self.samples.append({"at": round(f.started - self.start_at, 3), "ms": round(f.ms, 2), "status": f.status,
                             "error": f.error})
        ticks = math.ceil((time.monotonic() - self.start_at) / self.every)
        self.next_at = max(self.next_at, self.start_at + ticks * self.every)

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        while True:
            time.sleep(max(0.0, self.next_at - time.monotonic()))
            if time.monotonic() >= self.end_at:
                break
            f = Fetch(self.port, self.request, self.timeout)
            self.next_at += self.every
            if f.error is not None:
                self.record(f)
                continue
            wants = f.wants()
            sel.register(f.sock, wants, f)
            while True:
                events = sel.select(max(0.0, f.deadline - time.monotonic()))
                sock = f.sock
                if not events:
                    sel.unregister(sock)
                    f.expire()
                    break
                if f.handle():
                    sel.unregister(sock)
                    break
                if f.wants() != wants:
                    wants = f.wants()
                    sel.modify(sock, wants, f)
            self.record(f)
        sel.close()


def get_once(port: int, path: str, timeout: float) -> tuple[int, bytes] | None:
    """A blocking GET on a fresh connection: (status, whole answer), or None on timeout or error."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: overload\r\nConnection: close\r\n\r\n".encode())
            buf = b""
            while (done := parse_response(buf)) is None:
                data = s.recv(65536)
                if not data:
                    done = parse_response(buf, eof=True)
                    break
                buf += data
            return (done[0], buf) if done else None
    except OSError:
        return None


def percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50, p99 and the maximum, in ms."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 2)

    return {"p50": rank(0.50), "p99": rank(0.99), "max": round(ordered[-1], 2)}


def probe_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A failed probe counts as its timeout: that is what the kubelet waited."""
    failed = [s for s in samples if s["error"] is not None]
    timed = [PROBE_TIMEOUT * 1000 if s["error"] else s["ms"] for s in samples]
    return {"sent": len(samples), "failures": len(failed),
            "failure_kinds": dict(collections.Counter(s["error"] for s in failed)), **percentiles(timed),
            "answered": percentiles([s["ms"] for s in samples if s["error"] is None])}


def timeline(samples: list[dict[str, Any]], bound_ms: float) -> str:
    """One character per probe: '.' answered under the bound, 's' slower, 'x' failed."""
    return "".join("x" if s["error"] else "." if s["ms"] < bound_ms else "s" for s in samples)


# -- the attack (``overload.py attack JSON``, in its own process) ---------------------------

#: What each kind sends first, and what it dribbles after (None: nothing).
OPENING = {
    "slow_head": (b"GET /slowloris HTTP/1.1\r\nHost: overload\r\n", b"X-Dribble: a-byte-at-a-time\r\n"),
    "slow_body": (b"POST /upload HTTP/1.1\r\nHost: overload\r\nContent-Length: 1000000\r\n\r\n", b"x"),
    "expect": (b"POST /upload HTTP/1.1\r\nHost: overload\r\nContent-Length: 1000000\r\n"
               b"Expect: 100-continue\r\n\r\n", b"x"),
    "malformed": (b"GET / HTTP/1.1\r\nHost: overload\r\nBad Header: x\r\n\r\n", b"x"),
    "big": (b"GET /big?mib=%d HTTP/1.1\r\nHost: overload\r\n\r\n", None),
    "hold": (b"", None),
}


class Attacker:
    __slots__ = ("connected", "dead", "drip", "error", "fin", "kind", "out", "reading", "reset_at", "seen", "sock")

    def __init__(self, kind: str, port: int, big_mib: int) -> None:
        self.kind = kind
        opening, drip = OPENING[kind]
        self.out = opening % big_mib if kind == "big" else opening
        self.drip = itertools.cycle(drip) if drip else None
        self.connected = self.fin = self.dead = self.reading = False
        self.error: str | None = None
        self.reset_at: float | None = None  # when a send or read failed: the server had closed for good
        self.seen = b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        err = self.sock.connect_ex((HOST, port))
        if err not in (0, errno.EINPROGRESS):
            self.error = f"connect: {errno.errorcode.get(err, err)}"
            self.dead = True


def run_attackers(attackers: list[Attacker], end_at: float, trickle: float, seed: int) -> None:
    """One selector loop for a group: finish connecting, send the openings, read what the
    server says (never for /big), dribble one byte per `trickle` seconds, until `end_at`."""
    rng = random.Random(seed)
    sel = selectors.DefaultSelector()
    drips: list[tuple[float, int]] = []
    for i, a in enumerate(attackers):
        if not a.dead:
            sel.register(a.sock, selectors.EVENT_WRITE, i)

    def kill(i: int, a: Attacker, error: str) -> None:
        a.dead, a.error = True, a.error or error
        if a.connected and a.reset_at is None:
            a.reset_at = time.monotonic()
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(a.sock)
        a.sock.close()

    def send_opening(i: int, a: Attacker) -> None:
        try:
            a.out = a.out[a.sock.send(a.out):] if a.out else b""
        except BlockingIOError:
            return
        except OSError as exc:
            kill(i, a, type(exc).__name__)
            return
        if a.out:
            return  # the rest when writable again
        if a.kind == "big":
            sel.unregister(a.sock)  # never read the answer
        else:
            a.reading = True
            sel.modify(a.sock, selectors.EVENT_READ, i)
        if a.drip is not None:
            heapq.heappush(drips, (time.monotonic() + rng.uniform(0, trickle), i))

    while (now := time.monotonic()) < end_at:
        timeout = min(drips[0][0] if drips else end_at, end_at) - now
        for key, mask in sel.select(max(0.0, timeout)):
            i = key.data
            a = attackers[i]
            if not a.connected:
                err = a.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    kill(i, a, f"connect: {errno.errorcode.get(err, err)}")
                    continue
                a.connected = True
                send_opening(i, a)
            elif mask & selectors.EVENT_WRITE:
                send_opening(i, a)
            elif mask & selectors.EVENT_READ:
                try:
                    data = a.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    kill(i, a, type(exc).__name__)
                    continue
                if data:
                    a.seen = (a.seen + data)[:4096]
                else:  # the server closed its side: a hostile client goes on dribbling
                    a.fin, a.reading = True, False
                    sel.unregister(a.sock)
        now = time.monotonic()
        while drips and drips[0][0] <= now:
            _, i = heapq.heappop(drips)
            a = attackers[i]
            if a.dead:
                continue
            assert a.drip is not None
            try:
                a.sock.send(bytes((next(a.drip),)))
            except BlockingIOError:
                pass  # its buffer is full: the server is not reading; try again next beat
            except OSError as exc:  # the server closed for good (a reset, or a write after its close)
                kill(i, a, type(exc).__name__)
                continue
            heapq.heappush(drips, (now + trickle, i))
    for a in attackers:
        with contextlib.suppress(OSError):
            a.sock.close()
    sel.close()


def attack(plan: dict[str, Any]) -> dict[str, Any]:
    """Open every attacker at plan['start_at'], hold them until plan['end_at'], report per kind.

    The slow kinds connect in a shuffled order (so each gets its share of what the server
    accepts before max_connections), the held connections after them; three threads."""
    raise_fd_limit()
    counts = plan["counts"]
    order = [kind for kind in ATTACK if kind != "hold" for _ in range(counts[kind])]
    random.Random(0).shuffle(order)
    order += ["hold"] * counts["hold"]
    time.sleep(max(0.0, plan["start_at"] - time.monotonic()))
    late = time.monotonic() - plan["start_at"]
    made = [Attacker(kind, plan["port"], plan["big_mib"]) for kind in order]
    opened = time.monotonic() - plan["start_at"]
    threads = [threading.Thread(target=run_attackers, args=(made[n::3], plan["end_at"], plan["trickle"], n),
                                daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report: dict[str, Any] = {"late_s": round(late, 3), "opened_in_s": round(opened, 3), "kinds": {}}
    for kind in ATTACK:
        mine = [a for a in made if a.kind == kind]
        statuses = collections.Counter(int(s) for a in mine for s in _STATUS.findall(a.seen))
        report["kinds"][kind] = {
            "opened": len(mine), "connected": sum(a.connected for a in mine),
            "answered": sum(bool(_STATUS.search(a.seen)) for a in mine),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "fin": sum(a.fin for a in mine), "reset": sum(a.reset_at is not None for a in mine),
            # When a send or read first failed (the server had closed for good), in s from the start.
            "reset_at_s": percentiles([a.reset_at - plan["start_at"] for a in mine if a.reset_at is not None]),
            "errors": dict(collections.Counter(a.error for a in mine if a.error))}
    return report


# -- phase 2's load (``overload.py load JSON``, in its own process) --------------------------

def load(plan: dict[str, Any]) -> dict[str, Any]:
    """`connections` keep-alive connections, each asking for plan['path'] in a loop until end_at."""
    raise_fd_limit()
    time.sleep(max(0.0, plan["start_at"] - time.monotonic()))
    request = f"GET {plan['path']} HTTP/1.1\r\nHost: overload\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    state: dict[socket.socket, list[Any]] = {}  # sock -> [buffer, sent at]
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()

    def open_one() -> None:
        try:
            s = socket.create_connection((HOST, plan["port"]), timeout=5)
            s.sendall(request)
        except OSError as exc:
            errors[f"connect: {type(exc).__name__}"] += 1
            return
        s.setblocking(False)
        state[s] = [b"", time.monotonic()]
        sel.register(s, selectors.EVENT_READ)

    for _ in range(plan["connections"]):
        open_one()
    while time.monotonic() < plan["end_at"]:
        for key, _ in sel.select(max(0.0, plan["end_at"] - time.monotonic())):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                data, errors[type(exc).__name__] = b"", errors[type(exc).__name__] + 1
            entry = state[s]
            entry[0] += data
            done = parse_response(entry[0])
            if done is not None:
                latencies.append((time.monotonic() - entry[1]) * 1000)
                if done[0] != 200:
                    errors[f"status {done[0]}"] += 1
                entry[0] = entry[0][done[1]:]
                entry[1] = time.monotonic()
                try:
                    s.send(request)  # a few bytes into an empty send buffer
                except OSError as exc:
                    errors[type(exc).__name__] += 1
                    data = b""
            if not data:
                errors["closed, reconnected"] += 1
                sel.unregister(s)
                s.close()
                del state[s]
                open_one()
    for s in state:
        s.close()
    seconds = plan["end_at"] - plan["start_at"]
    return {"requests": len(latencies), "rps": round(len(latencies) / seconds), "errors": dict(errors),
            **percentiles(latencies)}


def run_child(mode: str, plan: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, mode, json.dumps(plan)], stdout=subprocess.PIPE, text=True)


def child_result(proc: subprocess.Popen[str], mode: str, timeout: float) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SystemExit(f"the {mode} process did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise SystemExit(f"the {mode} process failed ({proc.returncode})")
    return json.loads(out)  # type: ignore[no-any-return]


# -- the phases ------------------------------------------------------------------------------

def phase_overload(args: argparse.Namespace, counts: dict[str, int], max_connections: int) -> dict[str, Any]:
    server = Server(THREADS_OVERLOAD, max_connections, args.backlog)
    port = server.port
    attacker = None
    try:
        for path in ("/", "/readyz", "/cpu?ms=1", "/upload"):  # warm up whatever loads lazily
            get_once(port, path, 5)
        idle, _ = settle(server.pid, None, 5)
        start_at = time.monotonic() + 1.0  # time for the attack process to start, and for the busy ones
        end_at = start_at + args.seconds
        attacker = run_child("attack", {"port": port, "counts": counts, "start_at": start_at, "end_at": end_at,
                                        "trickle": args.trickle, "big_mib": args.big_mib})
        # Every thread busy in the app first; /ready says how many requests are in flight.
        # They outlast the phase by BUSY_AFTER, so every normal request sent during the
        # phase waits for a thread to free; its timeout covers that (`normal_timeout`), and
        # its latency says how long it waited.
        busy = [socket.create_connection((HOST, port), timeout=2) for _ in range(args.busy)]
        for s in busy:
            s.sendall(f"GET /slow?until={end_at + BUSY_AFTER:.3f} HTTP/1.1\r\nHost: overload\r\n\r\n".encode())
        busy_seen = "not confirmed: /ready did not answer"
        while busy and time.monotonic() < start_at - 0.3:
            got = get_once(port, "/ready", 0.25)
            if got is not None:
                found = re.search(rb'"in_flight_requests":(\d+)', got[1])
                busy_seen = f"/ready answered {got[0]}, in flight {found.group(1).decode() if found else '?'}"
                if found and int(found.group(1)) >= args.busy:
                    break
            time.sleep(0.02)
        probe = Pinger(port, "/readyz", PROBE_EVERY, PROBE_TIMEOUT, start_at, end_at)
        normal = Pinger(port, "/", NORMAL_EVERY, normal_timeout(args.seconds), start_at, end_at)
        sampler = Sampler(server.pid, start_at)
        for t in (probe, normal, sampler):
            t.start()
        attack_report = child_result(attacker, "attack", args.seconds + 60)
        probe.join()
        normal.join()
        busy_answers = []
        for s in busy:
            s.settimeout(max(0.1, end_at + BUSY_AFTER + 5 - time.monotonic()))
            buf = b""
            with contextlib.suppress(OSError):
                while parse_response(buf) is None and (data := s.recv(65536)):
                    buf += data
            done = parse_response(buf, eof=True)
            busy_answers.append(done[0] if done else None)
            s.close()
        after, settled_in = settle(server.pid, idle, args.settle)
        sampler.stop.set()
        sampler.join()
        hwm = sample(server.pid)["hwm_mib"]
    finally:
        if attacker is not None and attacker.poll() is None:  # an error in the drill itself
            attacker.kill()
        exit_status = server.stop()
    normal_samples = normal.samples
    answered = [s for s in normal_samples if s["error"] is None]
    peak = {"rss_mib": hwm, "fds": max([s["fds"] for s in sampler.samples] or [idle["fds"]]),
            "threads": max([s["threads"] for s in sampler.samples] or [idle["threads"]])}
    return {"port": port, "gracehttp": server.source, "max_connections": max_connections,
            "threads": THREADS_OVERLOAD, "busy": args.busy,
            "busy_seen": busy_seen, "busy_answers": busy_answers, "attack": attack_report,
            "probe": probe_summary(probe.samples), "probe_samples": probe.samples,
            "normal": {"sent": len(normal_samples), "answered": len(answered),
                       **percentiles([s["ms"] for s in answered]),
                       "failure_kinds": dict(collections.Counter(s["error"] for s in normal_samples if s["error"]))},
            "normal_samples": normal_samples, "idle": idle, "peak": peak, "after": after,
            "settled_in_s": settled_in, "samples": sampler.samples, "server_log": server.log_counts(),
            "server_exit_status": exit_status}


def phase_cpu(args: argparse.Namespace) -> dict[str, Any]:
    server = Server(THREADS_CPU, MAX_CONNECTIONS, args.backlog)
    loader = None
    try:
        for path in ("/", "/readyz", "/cpu?ms=1"):
            get_once(server.port, path, 5)
        start_at = time.monotonic() + 1.0
        end_at = start_at + args.cpu_seconds
        loader = run_child("load", {"port": server.port, "connections": CPU_CONNECTIONS, "path": "/cpu?ms=1",
                                    "start_at": start_at, "end_at": end_at})
        probe = Pinger(server.port, "/readyz", PROBE_EVERY, PROBE_TIMEOUT, start_at, end_at)
        probe.start()
        load_report = child_result(loader, "load", args.cpu_seconds + 60)
        probe.join()
    finally:
        if loader is not None and loader.poll() is None:
            loader.kill()
        exit_status = server.stop()
    return {"threads": THREADS_CPU, "connections": CPU_CONNECTIONS, "seconds": args.cpu_seconds,
            "load": load_report, "probe": probe_summary(probe.samples), "probe_samples": probe.samples,
            "server_exit_status": exit_status}


# -- the report ------------------------------------------------------------------------------

def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def goals_of(p1: dict[str, Any], p2: dict[str, Any] | None) -> list[dict[str, Any]]:
    probe, normal, idle, after = p1["probe"], p1["normal"], p1["idle"], p1["after"]
    goals = [
        ("phase 1: no probe failures", probe["failures"] == 0, f"{probe['failures']} of {probe['sent']} failed"),
        (f"phase 1: probe p99 < {GOAL_P99_MS:g} ms", probe["p99"] is not None and probe["p99"] < GOAL_P99_MS,
         f"p99 {ms(probe['p99'])} ms"),
        ("phase 1: every normal request answered", normal["sent"] > 0 and normal["answered"] == normal["sent"],
         f"{normal['answered']} of {normal['sent']}"),
        ("descriptors back to idle", after["fds"] <= idle["fds"], f"{idle['fds']} idle, {after['fds']} after"),
        ("threads back to idle", after["threads"] <= idle["threads"],
         f"{idle['threads']} idle, {after['threads']} after"),
    ]
    if p2 is not None:
        cpu = p2["probe"]
        goals.append((f"phase 2: probe max < {GOAL_CPU_MAX_MS:g} ms",
                      cpu["failures"] == 0 and cpu["max"] is not None and cpu["max"] < GOAL_CPU_MAX_MS,
                      f"max {ms(cpu['max'])} ms, {cpu['failures']} failed"))
    return [{"goal": g, "ok": ok, "value": v} for g, ok, v in goals]


def print_report(args: argparse.Namespace, p1: dict[str, Any], p2: dict[str, Any] | None,
                 goals: list[dict[str, Any]]) -> None:
    kinds = p1["attack"]["kinds"]
    total = p1["busy"] + sum(k["opened"] for k in kinds.values())
    print(f"gracehttp overload drill: phase 1 {args.seconds:g} s at scale {args.scale}, threads={p1['threads']}, "
          f"max_connections={p1['max_connections']}, backlog={args.backlog}; {total} attacking connections "
          f"({total - p1['max_connections']} past the limit)")
    print(f"gracehttp from {p1['gracehttp']}")
    print(f"busy: {p1['busy']} x /slow until {BUSY_AFTER:g} s after the phase ({p1['busy_seen']}); "
          f"their answers: {p1['busy_answers']}")
    print(f"attack opened {p1['attack']['opened_in_s']:.2f} s after the start ({p1['attack']['late_s']:.3f} s late)")
    print(f"  {'attacker':<17} {'opened':>6} {'connected':>9} {'answered':>8} {'FIN':>5} {'reset':>5} "
          f"{'reset at p50/max s':>18}  statuses, errors")
    for kind, k in kinds.items():
        at = k["reset_at_s"]
        when = f"{at['p50']:.1f}/{at['max']:.1f}" if at["max"] is not None else "-"
        print(f"  {LABELS[kind]:<17} {k['opened']:>6} {k['connected']:>9} {k['answered']:>8} {k['fin']:>5} "
              f"{k['reset']:>5} {when:>18}  {k['statuses'] or '-'} {k['errors'] or ''}")
    print("  (connected: the client's handshake completed, which the backlog does without an accept; FIN: the "
          "server closed its side; reset: a later send or read failed, the server had closed for good)")
    rows = [("1 overload", p1["probe"])] + ([("2 cpu", p2["probe"])] if p2 else [])
    print(f"probe GET /readyz on a {PROBE_EVERY * 1000:.0f} ms ticker, one at a time, fresh connections, "
          f"{PROBE_TIMEOUT:g} s timeout "
          "(a failure counts as 1 s):")
    print(f"  {'phase':<11} {'sent':>5} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  failures")
    for name, pr in rows:
        print(f"  {name:<11} {pr['sent']:>5} {pr['failures']:>6} {ms(pr['p50']):>8} {ms(pr['p99']):>8} "
              f"{ms(pr['max']):>8}  {pr['failure_kinds'] or '-'}")
    line = timeline(p1["probe_samples"], GOAL_P99_MS)
    print(f"  phase 1 probes, one character each ('.' < {GOAL_P99_MS:g} ms, 's' slower, 'x' failed):")
    for i in range(0, len(line), 100):
        print("    " + line[i:i + 100])
    n = p1["normal"]
    print(f"normal GET / (one at a time, every {NORMAL_EVERY * 1000:.0f} ms, "
          f"timeout {normal_timeout(args.seconds):g} s): "
          f"answered {n['answered']} of {n['sent']}; p50 {ms(n['p50'])} ms, p99 {ms(n['p99'])} ms, "
          f"max {ms(n['max'])} ms {n['failure_kinds'] or ''}")
    settled = p1["settled_in_s"]
    print(f"  {'server':<22} {'RSS MiB':>8} {'fds':>6} {'threads':>8}")
    print(f"  {'idle':<22} {p1['idle']['rss_mib']:>8} {p1['idle']['fds']:>6} {p1['idle']['threads']:>8}")
    print(f"  {'peak (RSS: VmHWM)':<22} {p1['peak']['rss_mib']:>8} {p1['peak']['fds']:>6} {p1['peak']['threads']:>8}")
    label = f"after ({settled:g} s)" if settled is not None else f"after ({args.settle:g} s, unsettled)"
    print(f"  {label:<22} {p1['after']['rss_mib']:>8} {p1['after']['fds']:>6} {p1['after']['threads']:>8}")
    log = p1["server_log"]
    print(f"server log: {log['warnings']} warnings, {log['errors']} errors, {log['tracebacks']} tracebacks "
          f"({log['path']}); exit status {p1['server_exit_status']}")
    if p2 is not None:
        ld = p2["load"]
        print(f"phase 2: threads={p2['threads']}, {p2['connections']} keep-alive connections asking for /cpu "
              f"(1 ms) for {p2['seconds']:g} s: {ld['requests']} requests ({ld['rps']}/s), p50 {ms(ld['p50'])} ms, "
              f"p99 {ms(ld['p99'])} ms, errors {ld['errors'] or 0}")
    print("goals:")
    for g in goals:
        print(f"  {'PASS' if g['ok'] else 'FAIL'}  {g['goal']}: {g['value']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of phase 1")
    parser.add_argument("--scale", type=int, default=1, help="divide phase 1's counts and max_connections by this")
    parser.add_argument("--cpu-seconds", type=float, default=5.0, help="length of phase 2 (0: skip it)")
    parser.add_argument("--busy", type=int, default=THREADS_OVERLOAD,
                        help="requests to /slow that hold a thread for the whole phase (0: see the rest alone)")
    parser.add_argument("--trickle", type=float, default=1.0, help="seconds between an attacker's bytes")
    # The attack opens its 3,504 connections in about 70 ms; the kernel drops the SYNs that
    # find its accept queue full before any server sees them (a dropped probe is retried
    # after 1 s). 4096 is the kernel's somaxconn here, what Go's net package listens with.
    parser.add_argument("--backlog", type=int, default=4096, help="the server's listen backlog")
    parser.add_argument("--big-mib", type=int, default=4, help="size of the unread /big answers")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait for fds and threads to settle")
    parser.add_argument("--json", default=os.path.join(RESULTS, "drill-overload.json"), help="where to write JSON")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a goal fails")
    args = parser.parse_args()
    if args.scale < 1 or args.seconds <= 0:
        parser.error("--scale must be at least 1 and --seconds positive")
    counts = {kind: max(1, n // args.scale) for kind, n in ATTACK.items()}
    max_connections = max(16, MAX_CONNECTIONS // args.scale)
    needed = args.busy + sum(counts.values()) + FD_MARGIN
    limit = raise_fd_limit()
    if limit < needed:
        raise SystemExit(f"the descriptor limit is {limit} (ulimit -Hn), the attack needs about {needed}: "
                         "raise it or use --scale")
    p1 = phase_overload(args, counts, max_connections)
    p2 = phase_cpu(args) if args.cpu_seconds > 0 else None
    goals = goals_of(p1, p2)
    ok = all(g["ok"] for g in goals)
    print_report(args, p1, p2, goals)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"args": vars(args), "counts": counts, "phase1": p1, "phase2": p2, "goals": goals, "ok": ok}, f,
                  indent=1)
    print(f"{'all goals met' if ok else 'FAILED'}; JSON in {args.json}")
    return 0 if ok or args.no_fail else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] in (["attack"], ["load"]):
        plan = json.loads(sys.argv[2])
        print(json.dumps(attack(plan) if sys.argv[1] == "attack" else load(plan)))
    else:
        sys.exit(main())
