"""Drill: a soak (issue 7). Many requests of every kind against one server process, then:
is its memory flat after warm-up, and are its descriptors and threads back where they were?

    python benchmarks/drills/soak.py [--requests 200000] [--clients 8] [--max-seconds 600]

Each client loops over a fixed mix, per ten requests: six GETs on a keep-alive
connection, one GET on a fresh connection, one 256 KiB upload, one chunked upload
(4 x 16 KiB), one malformed request (must get 400); and every 50th request, a client
that sends half a request and disconnects. The server's RSS, open descriptors and
threads are sampled at each tenth of the run. Exit status 1 if any answer was wrong,
descriptors or threads grew, or RSS grew more than --rss-slack MiB after the first tenth.
JSON in benchmarks/results/drill-soak.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(os.path.dirname(HERE), "results")
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from drill_server import THREADS as DRILL_THREADS  # noqa: E402  (its folder is the script's)

from gracehttp.engine import INITIAL_THREADS  # noqa: E402

UPLOAD = b"u" * (256 << 10)
CHUNKED = b"".join(b"%x\r\n%s\r\n" % (16 << 10, b"c" * (16 << 10)) for _ in range(4)) + b"0\r\n\r\n"


def sample(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status") as f:
        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]
    return {"rss_mib": round(rss_kib / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": len(os.listdir(f"/proc/{pid}/task"))}


class Client(threading.Thread):
    def __init__(self, port: int, budget: int, counter: list[int], lock: threading.Lock, deadline: float) -> None:
        super().__init__(daemon=True)
        self.port, self.budget, self.counter, self.lock, self.deadline = port, budget, counter, lock, deadline
        self.failures: list[str] = []
        self.done = 0

    def fresh(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def run(self) -> None:
        keep = self.fresh()
        while self.done < self.budget and time.monotonic() < self.deadline:
            i = self.done
            try:
                kind = i % 10
                if kind < 6:
                    keep.request("GET", "/")
                    self.expect(keep.getresponse(), 200, b"Hello")
                elif kind == 6:
                    conn = self.fresh()
                    conn.request("GET", "/", headers={"Connection": "close"})
                    self.expect(conn.getresponse(), 200, b"Hello")
                    conn.close()
                elif kind == 7:
                    keep.request("POST", "/upload", body=UPLOAD)
                    self.expect(keep.getresponse(), 200, b"read %d" % len(UPLOAD))
                elif kind == 8:
                    keep.request("POST", "/upload", body=CHUNKED, headers={"Transfer-Encoding": "chunked"})
                    self.expect(keep.getresponse(), 200, b"read %d" % (64 << 10))
                else:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=30) as raw:
                        raw.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")
                        answer = raw.recv(64)
                        if not answer.startswith(b"HTTP/1.1 400 "):
                            self.failures.append(f"malformed request got {answer[:40]!r}")
                if i % 50 == 49:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=30) as raw:
                        raw.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nhalf")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"request {i} (kind {i % 10}): {exc!r}")
                keep.close()
                keep = self.fresh()
            self.done += 1
            with self.lock:
                self.counter[0] += 1
        keep.close()

    def expect(self, resp: http.client.HTTPResponse, status: int, start: bytes) -> None:
        body = resp.read()
        if resp.status != status or not body.startswith(start):
            self.failures.append(f"got {resp.status} {body[:40]!r}, expected {status} {start!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--rss-slack", type=float, default=5.0, help="MiB of RSS growth allowed after warm-up")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="gracehttp-soak-")
    log_path, pid_file = os.path.join(tmp, "server.log"), os.path.join(tmp, "server.pid")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(HERE))}
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, os.path.join(HERE, "drill_server.py"), "0", pid_file, "1", "soak"],
                                  stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(pid_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(log_path) as f:
            port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", f.read()).group(1))  # type: ignore[union-attr]
        time.sleep(0.5)  # let start-up settle before the baseline (pacing, not synchronisation)
        baseline = sample(server.pid)
        counter, lock = [0], threading.Lock()
        started = time.monotonic()
        clients = [Client(port, args.requests // args.clients, counter, lock, started + args.max_seconds)
                   for _ in range(args.clients)]
        for c in clients:
            c.start()
        samples = []
        step = args.requests // 10
        while any(c.is_alive() for c in clients):
            time.sleep(0.2)
            if counter[0] >= step * (len(samples) + 1):
                samples.append({"requests": counter[0], "seconds": round(time.monotonic() - started, 1),
                                **sample(server.pid)})
        for c in clients:
            c.join()
        elapsed = time.monotonic() - started
        time.sleep(3.0)  # the aborted clients' read_timeout is not involved: they closed; let closes land
        after = sample(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    failures = [f for c in clients for f in c.failures]
    warm = samples[0]["rss_mib"] if samples else baseline["rss_mib"]
    peak = max([s["rss_mib"] for s in samples] + [after["rss_mib"]])
    growth = round(peak - warm, 1)
    print(f"gracehttp soak: {counter[0]} requests by {args.clients} clients in {elapsed:.1f}s "
          f"({counter[0] / elapsed:.0f} req/s), {len(failures)} wrong answers")
    print(f"{'requests':>9} {'s':>6} {'RSS MiB':>8} {'fds':>5} {'threads':>8}")
    print(f"{'idle':>9} {'':>6} {baseline['rss_mib']:>8} {baseline['fds']:>5} {baseline['threads']:>8}")
    for s in samples:
        print(f"{s['requests']:>9} {s['seconds']:>6} {s['rss_mib']:>8} {s['fds']:>5} {s['threads']:>8}")
    print(f"{'after':>9} {'':>6} {after['rss_mib']:>8} {after['fds']:>5} {after['threads']:>8}")
    # The request pool starts a few threads and grows, as requests wait in the app, up to the
    # drill server's 8: those may stay; any thread past them is a leak.
    pool_growth = max(0, DRILL_THREADS - INITIAL_THREADS)
    ok = (not failures and after["fds"] <= baseline["fds"]
          and after["threads"] <= baseline["threads"] + pool_growth and growth <= args.rss_slack)
    print(f"RSS growth after the first tenth: {growth} MiB (allowed {args.rss_slack}); "
          f"fds {baseline['fds']} -> {after['fds']}; threads {baseline['threads']} -> {after['threads']} "
          f"(the pool may grow by {pool_growth}): "
          + ("OK" if ok else "FAILED") + (f"  e.g. {failures[:3]}" if failures else ""))
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "drill-soak.json"), "w") as f:
        json.dump({"args": vars(args), "requests": counter[0], "seconds": round(elapsed, 1), "failures": failures[:20],
                   "baseline": baseline, "samples": samples, "after": after, "rss_growth_mib": growth, "ok": ok}, f,
                  indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
