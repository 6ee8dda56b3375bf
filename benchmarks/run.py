"""gracehttp against the pure-Python WSGI servers (and granian, the compiled reference).

    python benchmarks/run.py            # full run: every server, 3 rounds of 5 s
    python benchmarks/run.py --quick    # under a minute: gracehttp, waitress, gunicorn
    python benchmarks/run.py --servers gracehttp,waitress-8 --duration 10 --rounds 5

Every server serves the same apps (benchmarks/apps.py) in its own process; wrk
(installed with apt-get if missing) drives it with 50 connections, keep-alive
and ``Connection: close``, and the servers take turns within each round so they
are measured under the same machine load. Results: a table on stdout,
``benchmarks/results/latest.json`` and ``latest.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import WrkResult, hold_idle, rss_mib, syscalls_per_request, wrk
from servers import BY_NAME, SERVERS, Server, start, stop

QUICK = ["gracehttp", "waitress-8", "gunicorn-sync-1"]
#: Setups run only when named: the metrics overhead comparison.
OPTIONAL = {"gracehttp-nometrics"}
MODES = [("hello", False), ("hello", True), ("json", False), ("json", True)]
STRACED = ["gracehttp", "waitress-8", "gunicorn-sync-1", "gunicorn-gthread"]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure_app(app: str, servers: list[Server], args: argparse.Namespace,
                results: dict[str, dict[str, Any]]) -> None:
    procs = {}
    for server in servers:
        proc, port, startup = start(server, app)
        procs[server.name] = (proc, port)
        entry = results.setdefault(server.name, {"label": server.label, "runs": {}})
        if app == "hello":
            entry["startup_ms"] = round(startup * 1000, 1)
            entry["idle_rss_mib"] = round(rss_mib(proc.pid), 1)
    try:
        for r in range(args.rounds):
            for mode_app, close in MODES:
                if mode_app != app:
                    continue
                order = servers if r % 2 == 0 else list(reversed(servers))
                for server in order:
                    proc, port = procs[server.name]
                    res = wrk(port, proc.pid, duration=args.duration, connections=args.connections, close=close)
                    key = f"{app} {'close' if close else 'keep-alive'}"
                    results[server.name]["runs"].setdefault(key, []).append(res.as_dict())
                    log(f"round {r + 1} {key:16} {server.name:18} {res.rps:9.0f} req/s  p99 {res.p99_ms:6.2f} ms"
                        f"  errors {res.errors}  served {res.served_connections}")
        if app == "hello" and not args.no_idle:
            for server in servers:
                proc, port = procs[server.name]
                before = rss_mib(proc.pid)
                held = hold_idle(port, args.idle, args.idle_deadline)
                after = rss_mib(proc.pid)
                res = wrk(port, proc.pid, duration=args.duration, connections=args.connections, close=False)
                for s in held:
                    s.close()
                results[server.name]["idle"] = {"held": len(held), "rss_before_mib": round(before, 1),
                                                "rss_after_mib": round(after, 1), "rps_while_held": res.rps}
                log(f"idle {server.name:18} held {len(held)}  RSS {before:.1f} -> {after:.1f} MiB  "
                    f"{res.rps:.0f} req/s while held")
        if app == "hello" and not args.no_strace:
            for server in servers:
                if server.name in STRACED:
                    proc, port = procs[server.name]
                    per = syscalls_per_request(port, proc.pid)
                    results[server.name]["syscalls_per_request"] = round(per, 1) if per else None
                    log(f"strace {server.name:18} {per} syscalls/request")
    finally:
        for proc, _ in procs.values():
            stop(proc)


def summarize(entry: dict[str, Any], key: str) -> dict[str, Any] | None:
    runs = [WrkResult(**r) for r in entry["runs"].get(key, [])]
    if not runs:
        return None
    served = [r.served_connections for r in runs if r.served_connections is not None]
    total_requests = sum(r.requests for r in runs)
    return {
        "rps": statistics.median(r.rps for r in runs), "rps_min": min(r.rps for r in runs),
        "rps_max": max(r.rps for r in runs), "p50_ms": statistics.median(r.p50_ms for r in runs),
        "p99_ms": statistics.median(r.p99_ms for r in runs), "errors": sum(r.errors for r in runs),
        "served_min": min(served) if served else None,
        "cpu_ms_per_1k": round(1e6 * sum(r.cpu_s for r in runs) / total_requests, 1) if total_requests else None,
    }


def table(results: dict[str, dict[str, Any]], connections: int) -> str:
    head = (f"{'server':26} {'hello k-a':>9} {'(min-max)':>13} {'p50':>6} {'p99':>7} {'served':>7} "
            f"{'close':>7} {'json k-a':>8} {'json cl':>7} {'err':>4} {'cpu/1k':>7} {'RSS':>6} "
            f"{'+idle':>8} {'k-a@idle':>8} {'start':>6} {'sys/req':>7}")
    lines = [head, "-" * len(head)]
    for entry in results.values():
        ka = summarize(entry, "hello keep-alive") or {}
        cl = summarize(entry, "hello close") or {}
        jka = summarize(entry, "json keep-alive") or {}
        jcl = summarize(entry, "json close") or {}
        idle = entry.get("idle", {})
        extra = f"+{idle['rss_after_mib'] - idle['rss_before_mib']:.1f}" if idle else "-"
        held = f"{100 * idle['rps_while_held'] / ka['rps']:.0f}%" if idle and ka.get("rps") else "-"
        served = f"{ka.get('served_min')}/{connections}" if ka.get("served_min") is not None else "n/a"
        errors = sum(s.get("errors", 0) for s in (ka, cl, jka, jcl))
        rng = f"{ka.get('rps_min', 0):.0f}-{ka.get('rps_max', 0):.0f}"
        lines.append(
            f"{entry['label']:26} {ka.get('rps', 0):9.0f} "
            f"{rng:>13} "
            f"{ka.get('p50_ms', float('nan')):6.2f} {ka.get('p99_ms', float('nan')):7.2f} {served:>7} "
            f"{cl.get('rps', 0):7.0f} {jka.get('rps', 0):8.0f} {jcl.get('rps', 0):7.0f} {errors:4d} "
            f"{ka.get('cpu_ms_per_1k') or 0:7.1f} {idle.get('rss_before_mib', entry.get('idle_rss_mib', 0)):6.1f} "
            f"{extra:>8} {held:>8} "
            f"{entry.get('startup_ms', 0):6.0f} {entry.get('syscalls_per_request') or '-':>7}")
    return "\n".join(lines)


def chart(results: dict[str, dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    keys = [k for k in ("hello keep-alive", "hello close", "json keep-alive", "json close")
            if any(k in results[n]["runs"] for n in names)]
    fig, ax = plt.subplots(figsize=(12, 0.55 * len(names) * len(keys) / 2 + 2))
    height = 0.8 / len(keys)
    colors = ["#1b6ca8", "#7fb3d5", "#c0392b", "#f1948a"]
    for k, key in enumerate(keys):
        values = [(summarize(results[n], key) or {}).get("rps", 0) for n in names]
        ys = [i + k * height for i in range(len(names))]
        bars = ax.barh(ys, values, height=height, label=key, color=colors[k])
        for bar, value in zip(bars, values, strict=True):
            if value:
                ax.text(bar.get_width(), bar.get_y() + height / 2, f" {value:,.0f}", va="center", fontsize=7)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))])
    ax.set_yticklabels([results[n]["label"] for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("requests per second (median of rounds; higher is better)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", help="comma-separated: " + ", ".join(s.name for s in SERVERS))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--idle", type=int, default=1000, help="idle keep-alive connections to hold")
    parser.add_argument("--idle-deadline", type=float, default=15.0, help="seconds to open them")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-connections test")
    parser.add_argument("--no-strace", action="store_true", help="skip counting syscalls per request")
    parser.add_argument("--apps", default="hello,json")
    parser.add_argument("--quick", action="store_true", help="a run under a minute")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    if args.quick:
        args.servers = args.servers or ",".join(QUICK)
        args.duration, args.rounds, args.apps, args.no_strace = 3.0, 1, "hello", True
        args.idle, args.idle_deadline = min(args.idle, 300), 4.0
    names = args.servers.split(",") if args.servers else [s.name for s in SERVERS if s.name not in OPTIONAL]
    servers = []
    for name in names:
        if name not in BY_NAME:
            sys.exit(f"unknown server {name!r}; choose from {', '.join(BY_NAME)}")
        servers.append(BY_NAME[name])
    results: dict[str, dict[str, Any]] = {}
    started = time.time()
    for app in args.apps.split(","):
        measure_app(app, servers, args, results)
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"
    when = time.strftime("%Y-%m-%d", time.gmtime(started))
    title = (f"WSGI servers, wrk -t1 -c{args.connections}, {args.rounds} x {args.duration:g} s, "
             f"{machine}, {when}")
    text = table(results, args.connections)
    print(f"\n{title}\n{text}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"title": title, "machine": machine, "date": when, "args": vars(args),
                   "results": results,
                   "summary": {n: {k: summarize(e, k) for k in e["runs"]} for n, e in results.items()}},
                  f, indent=1)
    chart(results, os.path.join(args.out, "latest.png"), title)
    log(f"wrote {args.out}/latest.json and latest.png in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
