"""Where a hello-world request's microseconds go in gracehttp: CPU time per request,
user and kernel, and the system calls per request by name, keep-alive and
``Connection: close``; against another checkout in the same run for a before-and-after.

    python benchmarks/per_request.py                          # this checkout
    python benchmarks/per_request.py --baseline /tmp/base     # and another, interleaved

Each setup runs as ``servers.py gracehttp`` (metrics on, one process) under
``wrk -t1 -c50``; the CPU times are the server's whole process tree from /proc
(user and system ticks), so they include every thread (the metrics flusher, the
watchdogs). The system calls come from ``strace -c -f`` in a separate, shorter
run (strace slows the server; the counts per request are what matter). Rounds
alternate the setups; the table gives medians. benchmarks/README.rst explains
the numbers of the latest run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import cpu_split, strace_counts, wrk
from servers import BY_NAME, start, stop


def syscalls(port: int, pid: int, close: bool) -> dict[str, float]:
    """System calls per request by name."""
    counts, requests = strace_counts(port, pid, close=close)
    return {name: n / max(requests, 1) for name, n in counts.items() if name != "total"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="another checkout to compare with (its directory)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    setups = ["gracehttp"] + (["gracehttp-baseline"] if args.baseline else [])
    if args.baseline:
        os.environ["GRACEHTTP_BASELINE"] = os.path.abspath(args.baseline)
    results: dict[tuple[str, bool], dict[str, list[float]]] = {}
    counts: dict[tuple[str, bool], dict[str, float]] = {}
    procs = {name: start(BY_NAME[name], "hello")[:2] for name in setups}
    try:
        for proc, port in procs.values():
            wrk(port, proc.pid, duration=1, connections=50, close=False)  # warm up
        for r in range(args.rounds):
            for close in (False, True):
                for name in setups if r % 2 == 0 else list(reversed(setups)):
                    proc, port = procs[name]
                    user0, sys0 = cpu_split(proc.pid)
                    res = wrk(port, proc.pid, duration=args.duration, connections=50, close=close)
                    user1, sys1 = cpu_split(proc.pid)
                    n = max(res.requests, 1)
                    entry = results.setdefault((name, close), {"rps": [], "user": [], "sys": []})
                    entry["rps"].append(res.rps)
                    entry["user"].append(1e6 * (user1 - user0) / n)
                    entry["sys"].append(1e6 * (sys1 - sys0) / n)
                    print(f"round {r + 1} {name:20} {'close' if close else 'keep-alive':10} {res.rps:8.0f} req/s "
                          f"user {entry['user'][-1]:5.1f} us  sys {entry['sys'][-1]:5.1f} us", file=sys.stderr)
        for name in setups:
            for close in (False, True):
                proc, port = procs[name]
                counts[(name, close)] = syscalls(port, proc.pid, close)
    finally:
        for proc, _ in procs.values():
            stop(proc)
    print(f"\nhello world, wrk -t1 -c50, {args.rounds} rounds of {args.duration:g} s (medians), "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"{'setup':20} {'mode':10} {'req/s':>8} {'user us':>8} {'sys us':>7} {'cpu us':>7}  syscalls per request")
    for (name, close), entry in results.items():
        user, system = statistics.median(entry["user"]), statistics.median(entry["sys"])
        calls = counts.get((name, close), {})
        text = ", ".join(f"{k} {v:.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v >= 0.01)
        print(f"{name:20} {'close' if close else 'keep-alive':10} {statistics.median(entry['rps']):8.0f} "
              f"{user:8.1f} {system:7.1f} {user + system:7.1f}  {text}")


if __name__ == "__main__":
    main()
