"""gracehttp against waitress on hello-world with wrk, in one run: requests/s and the ratio.

    python benchmarks/quick.py [--duration 5] [--rounds 3]

A thin front for the full suite's pieces (servers.py, measure.py): both servers
run in their own processes and take turns within each round. For every server,
latency, fairness, memory and syscalls, use ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import wrk
from servers import BY_NAME, start, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    names = ["gracehttp", "waitress-8"]
    procs = {name: start(BY_NAME[name], "hello")[:2] for name in names}
    rps: dict[tuple[str, bool], list[float]] = {(n, c): [] for n in names for c in (False, True)}
    try:
        for r in range(args.rounds):
            for close in (False, True):
                for name in names if r % 2 == 0 else reversed(names):
                    proc, port = procs[name]
                    result = wrk(port, proc.pid, duration=args.duration, connections=args.connections, close=close)
                    rps[(name, close)].append(result.rps)
                    print(f"round {r + 1} {name:10} {'close' if close else 'keep-alive':10} {result.rps:10.0f}",
                          file=sys.stderr)
    finally:
        for proc, _ in procs.values():
            stop(proc)
    print(f"\nhello-world, wrk -t1 -c{args.connections} -d{args.duration:g}s, median of {args.rounds} rounds, "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"{'mode':12} {'gracehttp':>12} {'waitress 8t':>12} {'ratio':>8}")
    for close in (False, True):
        g = statistics.median(rps[("gracehttp", close)])
        w = statistics.median(rps[("waitress-8", close)])
        print(f"{'close' if close else 'keep-alive':12} {g:12.0f} {w:12.0f} {g / w if w else 0:8.2f}x")


if __name__ == "__main__":
    main()
