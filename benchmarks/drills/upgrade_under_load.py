"""Drill: zero-downtime upgrades under load (SPEC section 8).

wrk drives a gracehttp server for ``--duration`` seconds while it is upgraded
every ``--every`` seconds (SIGUSR2, or SIGHUP: with ``--workers`` > 1 that replaces
the workers instead). Two probe clients, one keep-alive and one opening a
connection per request, time every request they make, to show the latency
around each upgrade. Prints requests served, errors (wrk's socket errors and
non-2xx, and the probes' failures: all must be 0) and the latency spike.

    python benchmarks/drills/upgrade_under_load.py [--duration 20] [--every 4] [--workers 1] [--signal USR2]

Exit status 1 when any request failed. JSON in benchmarks/results/drill-upgrade.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from measure import ensure_tool, wrk_counts  # noqa: E402

RESULTS = os.path.join(os.path.dirname(HERE), "results")


def read_pid(path: str) -> int:
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return 0
    return int(text) if text.endswith("\n") else 0


def log_count(path: str, text: str) -> int:
    with open(path) as f:
        return f.read().count(text)


def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


class Probe(threading.Thread):
    """One client timing each request: (seconds since t0, latency ms, error or None)."""

    def __init__(self, port: int, keep_alive: bool, t0: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.keep_alive, self.t0, self.stop = port, keep_alive, t0, stop
        self.samples: list[tuple[float, float, str | None]] = []

    def run(self) -> None:
        conn = None
        while not self.stop.is_set() and len(self.samples) < 2_000_000:
            start = time.monotonic()
            error = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    error = f"status {resp.status}"
            except (OSError, http.client.HTTPException) as exc:
                kind = "keep-alive" if self.keep_alive else "fresh"
                stage = "connect" if conn is None or conn.sock is None else "exchange"
                error = f"{kind} {stage} at {start - self.t0:.2f}s: {exc!r}"
                conn.close()  # type: ignore[union-attr]
                conn = None
            self.samples.append((start - self.t0, (time.monotonic() - start) * 1000, error))
            if conn is not None and not self.keep_alive:
                conn.close()
                conn = None


def start_load(wrk_path: str, port: int, connections: int, seconds: float, t0: float,
               stop: threading.Event) -> tuple[subprocess.Popen[str], list[Probe]]:
    """wrk for `seconds`, and two probes (keep-alive, fresh) until `stop`."""
    wrk = subprocess.Popen([wrk_path, "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                            f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
    probes = [Probe(port, keep_alive, t0, stop) for keep_alive in (True, False)]
    for p in probes:
        p.start()
    return wrk, probes


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--signal", choices=["USR2", "HUP"], default="USR2")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    wrk_path = ensure_tool("wrk")
    sig = signal.Signals["SIG" + args.signal]
    tmp = tempfile.mkdtemp(prefix="gracehttp-drill-")
    pid_file = os.path.join(tmp, "server.pid")
    log_path = os.path.join(tmp, "server.log")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(HERE))}
    with open(log_path, "w") as log:
        first = subprocess.Popen([sys.executable, os.path.join(HERE, "drill_server.py"), "0", pid_file,
                                  str(args.workers)], stdout=log, stderr=log, env=env)
    upgrades: list[dict[str, float | int]] = []
    stop = threading.Event()
    try:
        if not wait_for(lambda: read_pid(pid_file) != 0, 15):
            sys.exit(f"the server did not start: see {log_path}")
        with open(log_path) as f:  # port 0: the first log line names the real one
            port = int(re.search(r"listening on (?:http://)?127\.0\.0\.1:(\d+)", f.read()).group(1))  # type: ignore[union-attr]
        t0 = time.monotonic()
        wrk, probes = start_load(wrk_path, port, args.connections, args.duration, t0, stop)
        k = 1
        while k * args.every < args.duration - 1:
            time.sleep(max(0.0, t0 + k * args.every - time.monotonic()))  # pacing, not synchronisation
            old = read_pid(pid_file)
            target = log_count(log_path, "replaced: pid") + args.workers
            sent = time.monotonic()
            os.kill(old, sig)
            if args.workers > 1 and sig == signal.SIGHUP:
                done = wait_for(lambda t=target: log_count(log_path, "replaced: pid") >= t, 30)
            else:
                done = wait_for(lambda o=old: read_pid(pid_file) not in (0, o), 30)
            upgrades.append({"at": round(sent - t0, 3), "ready_after_s": round(time.monotonic() - sent, 3),
                             "old_pid": old, "new_pid": read_pid(pid_file), "done": int(done)})
            k += 1
        out, _ = wrk.communicate(timeout=args.duration + 60)
        stop.set()
        for p in probes:
            p.join(15)
    finally:
        stop.set()
        final = read_pid(pid_file)
        if final:
            os.kill(final, signal.SIGTERM)
            wait_for(lambda: read_pid(pid_file) == 0, 30)
        first.wait(30)

    requests, socket_errors, non2xx = wrk_counts(out)
    samples = [s for p in probes for s in p.samples]
    probe_errors = [s for s in samples if s[2] is not None]
    windows = [(float(u["at"]), float(u["at"]) + float(u["ready_after_s"]) + 1.0) for u in upgrades]

    def in_window(t: float) -> bool:
        return any(lo <= t <= hi for lo, hi in windows)

    baseline = [lat for t, lat, err in samples if err is None and not in_window(t)]
    print(f"gracehttp upgrade drill: {args.duration:g}s of wrk -t2 -c{args.connections}, SIG{args.signal} every "
          f"{args.every:g}s, workers={args.workers}")
    rps = re.search(r"Requests/sec:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    print(f"wrk: {requests} requests, {rps} req/s, socket errors {socket_errors or 0}, non-2xx {non2xx}")
    print(f"probes: {len(samples)} requests, {len(probe_errors)} errors; latency outside upgrades "
          f"p50 {statistics.median(baseline):.2f} ms, p99 {percentile(baseline, 0.99):.2f} ms, "
          f"max {max(baseline):.2f} ms")
    print(f"{'upgrade at':>10} {'ready after':>12} {'old pid':>8} {'new pid':>8} {'probe p99':>10} {'probe max':>10}")
    for u, (lo, hi) in zip(upgrades, windows, strict=True):
        lat = [lat for t, lat, err in samples if err is None and lo <= t <= hi]
        print(f"{u['at']:>9.2f}s {u['ready_after_s']:>11.3f}s {u['old_pid']:>8} {u['new_pid']:>8} "
              f"{percentile(lat, 0.99):>8.2f}ms {max(lat, default=float('nan')):>8.2f}ms")
    errors = sum(socket_errors.values()) + non2xx + len(probe_errors) + sum(1 - int(u["done"]) for u in upgrades)
    print(f"errors: {errors}" + ("" if errors == 0 else f"  e.g. {[e[2] for e in probe_errors[:3]]}; log: {log_path}"))
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "drill-upgrade.json"), "w") as f:
        json.dump({"args": vars(args), "wrk_requests": requests, "socket_errors": socket_errors,
                   "non2xx": non2xx, "probe_requests": len(samples), "probe_errors": len(probe_errors),
                   "upgrades": upgrades, "errors": errors}, f, indent=2)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
