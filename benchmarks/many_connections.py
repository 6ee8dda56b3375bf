"""Fairness under many keep-alive connections: wrk's latency percentiles and maximum
for gracehttp beside granian (and waitress), at 200 and 1,000 connections.

    python benchmarks/many_connections.py [--duration 10] [--servers gracehttp,granian-1,waitress-8]

A server that serves whoever is ready next, in arrival order, keeps p99 within a
small multiple of p50 and no request waits for seconds; one that lets a busy
connection go again and again shows a long tail. Hello world, one process each,
the servers taking turns.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import ensure_tool
from servers import BY_NAME, start, stop

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def measure(port: int, connections: int, duration: float) -> dict[str, float]:
    cmd = [ensure_tool("wrk"), "-t2", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "10s",
           f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    found = {p: re.search(rf"^\s+{p}%\s+(\S+)", out, re.M) for p in ("50", "90", "99")}
    latency = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            **{f"p{p}": ms(m.group(1)) for p, m in found.items() if m},
            "max": ms(latency.group(1)) if latency else float("nan"), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--servers", default="gracehttp,granian-1,waitress-8")
    parser.add_argument("--connections", default="200,1000")
    args = parser.parse_args()
    print(f"{'server':24} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'p99/p50':>7} {'errors':>6}")
    for connections in (int(c) for c in args.connections.split(",")):
        for name in args.servers.split(","):
            proc, port, _ = start(BY_NAME[name], "hello")
            try:
                r = measure(port, connections, args.duration)
            finally:
                stop(proc)
            print(f"{BY_NAME[name].label:24} {connections:>5} {r['rps']:>8.0f} {r['p50']:>8.2f} {r['p90']:>8.2f} "
                  f"{r['p99']:>8.2f} {r['max']:>8.2f} {r['p99'] / r['p50']:>7.1f} {r['errors']:>6}", flush=True)


if __name__ == "__main__":
    main()
