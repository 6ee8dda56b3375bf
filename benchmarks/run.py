"""gracehttp against the pure-Python WSGI servers and granian (Rust, the compiled reference).

    python benchmarks/run.py            # the standard set: every server, 3 rounds of 5 s
    python benchmarks/run.py --quick    # under two minutes: gracehttp, granian, waitress, gunicorn
    python benchmarks/run.py --servers gracehttp,granian-1 --apps hello,curve --rounds 5

Every server serves the same apps (benchmarks/apps.py) in its own process; wrk
(installed with apt-get if missing) drives it, and the servers take turns within
each round so they are measured under the same machine load. The loads:

- hello, json, flask: wrk -c50, keep-alive and ``Connection: close``, every server;
- heavy: wrk -c16 keep-alive on gracehttp, granian and waitress (one process each) and
  gunicorn gthread 2x4: a 1 MiB upload read whole, 1 MiB from memory, 1 MiB through
  ``wsgi.file_wrapper``, 1 ms of Python per request;
- curve: hello keep-alive at 1, 10, 50, 200 and 1,000 connections (gracehttp and granian).

Results: tables on stdout (with gracehttp/granian ratios),
``benchmarks/results/latest.json``, ``latest.png`` and ``latest-curve.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import WrkResult, hold_idle, rss_mib, syscalls_per_request, wrk
from servers import BY_NAME, SERVERS, Server, start, stop

QUICK = ["gracehttp", "granian-1", "waitress-8", "gunicorn-sync-1"]
#: Setups run only when named: the metrics overhead comparison, the before-and-after.
OPTIONAL = {"gracehttp-nometrics", "gracehttp-baseline"}
STRACED = ["gracehttp", "waitress-8", "gunicorn-sync-1", "gunicorn-gthread"]
#: The heavier requests: gracehttp, granian and waitress in one process each, and gunicorn
#: gthread 2x4 (the issue's reference for the upload).
HEAVY = frozenset({"gracehttp", "gracehttp-baseline", "gracehttp-nometrics", "granian-1", "waitress-8",
                   "gunicorn-gthread"})
#: The concurrency curve: gracehttp and granian (waitress refuses past 100 connections).
CURVE = frozenset({"gracehttp", "gracehttp-baseline", "gracehttp-w2", "granian-1", "granian-2"})
CURVE_LEVELS = (1, 10, 50, 200, 1000)
#: The pairs the ratio table compares: (gracehttp setup, granian setup).
PAIRS = (("gracehttp", "granian-1"), ("gracehttp-w2", "granian-2"))


def run_order(servers: list[Server]) -> list[Server]:
    """`servers` with each granian setup of `PAIRS` moved to just after its gracehttp
    setup, when both take part. On a shared machine whose speed drifts by the minute,
    the two runs a ratio is made of are then seconds apart within a round, not the
    length of every other server's run; the rounds alternate the order, so neither
    side always runs first."""
    names = {s.name for s in servers}
    moved = [s for s in servers if any(theirs == s.name and ours in names for ours, theirs in PAIRS)]
    order = [s for s in servers if s not in moved]
    for ours, theirs in PAIRS:
        if ours in names and theirs in names:
            order.insert([s.name for s in order].index(ours) + 1, BY_NAME[theirs])
    return order


@dataclass(frozen=True)
class Load:
    """One wrk run: `key` names it in the tables and the JSON."""

    key: str
    group: str  # what --apps selects
    app: str  # the app the server serves (servers.APPS)
    path: str = "/"
    close: bool = False
    connections: int | None = None  # None: --connections
    script: str = "fairness.lua"
    servers: frozenset[str] | None = None  # None: every server


LOADS = [
    Load("hello keep-alive", "hello", "hello"),
    Load("hello close", "hello", "hello", close=True),
    Load("json keep-alive", "json", "json"),
    Load("json close", "json", "json", close=True),
    Load("flask keep-alive", "flask", "flask"),
    Load("flask close", "flask", "flask", close=True),
    Load("upload 1 MiB", "heavy", "heavy", "/upload", connections=16, script="upload.lua", servers=HEAVY),
    Load("1 MiB from memory", "heavy", "heavy", "/big", connections=16, servers=HEAVY),
    Load("1 MiB file_wrapper", "heavy", "heavy", "/file", connections=16, servers=HEAVY),
    Load("1 ms of Python", "heavy", "heavy", "/work", connections=16, servers=HEAVY),
    # gracehttp keeps heads it has parsed (wrk sends one head over and over): this one
    # never repeats a head, so it shows the parsing a cache cannot save.
    Load("hello, heads all new", "heavy", "heavy", "/", script="unique.lua", servers=HEAVY),
    *[Load(f"c={c}", "curve", "hello", connections=c, servers=CURVE) for c in CURVE_LEVELS],
]
#: The columns of the main table and the bars of the chart.
MAIN_KEYS = ["hello keep-alive", "hello close", "json keep-alive", "json close", "flask keep-alive", "flask close"]
HEAVY_KEYS = [ld.key for ld in LOADS if ld.group == "heavy"]
CURVE_KEYS = [ld.key for ld in LOADS if ld.group == "curve"]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure_app(app: str, loads: list[Load], servers: list[Server], args: argparse.Namespace,
                results: dict[str, dict[str, Any]]) -> None:
    """Start every server that takes part in one of `loads` (all on `app`), run the
    rounds, and for hello world also the idle, start-up and syscall measurements."""
    servers = run_order([s for s in servers if any(ld.servers is None or s.name in ld.servers for ld in loads)])
    procs = {}
    try:
        for server in servers:
            proc, port, startup = start(server, app)
            procs[server.name] = (proc, port)
            entry = results.setdefault(server.name, {"label": server.label, "runs": {}})
            if app == "hello":
                entry["startup_ms"] = round(startup * 1000, 1)
                entry["idle_rss_mib"] = round(rss_mib(proc.pid), 1)
        for r in range(args.rounds):
            for load in loads:
                order = servers if r % 2 == 0 else list(reversed(servers))
                for server in order:
                    if load.servers is not None and server.name not in load.servers:
                        continue
                    proc, port = procs[server.name]
                    res = wrk(port, proc.pid, duration=args.duration, connections=load.connections or args.connections,
                              close=load.close, path=load.path, script=load.script)
                    results[server.name]["runs"].setdefault(load.key, []).append(res.as_dict())
                    log(f"round {r + 1} {load.key:18} {server.name:18} {res.rps:9.0f} req/s  p99 {res.p99_ms:7.2f} ms"
                        f"  errors {res.errors}  served {res.served_connections}")
        if app == "hello" and not args.no_idle and any(ld.group == "hello" for ld in loads):
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
        "p99_ms": statistics.median(r.p99_ms for r in runs), "p99_max_ms": max(r.p99_ms for r in runs),
        "errors": sum(r.errors for r in runs), "served_min": min(served) if served else None,
        "cpu_ms_per_1k": round(1e6 * sum(r.cpu_s for r in runs) / total_requests, 1) if total_requests else None,
    }


def table(results: dict[str, dict[str, Any]], connections: int) -> str:
    head = (f"{'server':26} {'hello k-a':>9} {'(min-max)':>13} {'p50':>6} {'p99':>7} {'served':>7} "
            f"{'close':>7} {'json k-a':>8} {'json cl':>7} {'flask':>6} {'fl cl':>6} {'err':>4} {'cpu/1k':>7} "
            f"{'RSS':>6} {'+idle':>8} {'k-a@idle':>8} {'start':>6} {'sys/req':>7}")
    lines = [head, "-" * len(head)]
    for entry in results.values():
        s = {k: summarize(entry, k) or {} for k in MAIN_KEYS}
        ka = s["hello keep-alive"]
        if not any(s.values()):
            continue
        idle = entry.get("idle", {})
        extra = f"{idle['rss_after_mib'] - idle['rss_before_mib']:+.1f}" if idle else "-"
        held = f"{100 * idle['rps_while_held'] / ka['rps']:.0f}%" if idle and ka.get("rps") else "-"
        served = f"{ka.get('served_min')}/{connections}" if ka.get("served_min") is not None else "n/a"
        errors = sum(v.get("errors", 0) for v in s.values())
        rng = f"{ka.get('rps_min', 0):.0f}-{ka.get('rps_max', 0):.0f}"
        lines.append(
            f"{entry['label']:26} {ka.get('rps', 0):9.0f} {rng:>13} "
            f"{ka.get('p50_ms', float('nan')):6.2f} {ka.get('p99_ms', float('nan')):7.2f} {served:>7} "
            f"{s['hello close'].get('rps', 0):7.0f} {s['json keep-alive'].get('rps', 0):8.0f} "
            f"{s['json close'].get('rps', 0):7.0f} {s['flask keep-alive'].get('rps', 0):6.0f} "
            f"{s['flask close'].get('rps', 0):6.0f} {errors:4d} "
            f"{ka.get('cpu_ms_per_1k') or 0:7.1f} {idle.get('rss_before_mib', entry.get('idle_rss_mib', 0)):6.1f} "
            f"{extra:>8} {held:>8} "
            f"{entry.get('startup_ms', 0):6.0f} {entry.get('syscalls_per_request') or '-':>7}")
    return "\n".join(lines)


def keyed_table(results: dict[str, dict[str, Any]], keys: list[str], title: str) -> str:
    """Requests/s and p99 per server for `keys` (the heavier requests, the curve)."""
    rows = [(e["label"], [summarize(e, k) for k in keys]) for e in results.values()]
    rows = [(label, s) for label, s in rows if any(s)]
    if not rows:
        return ""
    width = 19
    head = f"{title:26} " + " ".join(f"{k:>{width}}" for k in keys)
    lines = [head, f"{'':26} " + " ".join(f"{'req/s   p99 ms':>{width}}" for _ in keys), "-" * len(head)]
    for label, sums in rows:
        cells = [f"{v['rps']:9.0f} {v['p99_ms']:9.2f}" if v else f"{'-':>{width}}" for v in sums]
        lines.append(f"{label:26} " + " ".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def ratios(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """gracehttp against granian for every load both ran: the throughput ratio of the
    medians with each side's range over rounds, and both p99s."""
    out = []
    for ours, theirs in PAIRS:
        if ours not in results or theirs not in results:
            continue
        for key in MAIN_KEYS + HEAVY_KEYS + CURVE_KEYS:
            a, b = summarize(results[ours], key), summarize(results[theirs], key)
            if not a or not b or not b["rps"]:
                continue
            out.append({"ours": ours, "theirs": theirs, "key": key, "ratio": round(a["rps"] / b["rps"], 2),
                        "ours_rps": [a["rps_min"], a["rps"], a["rps_max"]],
                        "theirs_rps": [b["rps_min"], b["rps"], b["rps_max"]],
                        "ours_p99_ms": a["p99_ms"], "theirs_p99_ms": b["p99_ms"]})
    return out


def ratio_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = (f"{'gracehttp / granian':34} {'ratio':>6} {'gracehttp req/s (min-max)':>27} "
            f"{'granian req/s (min-max)':>27} {'p99 ms ours/theirs':>19}")
    lines = [head, "-" * len(head)]
    for r in rows:
        a, b = r["ours_rps"], r["theirs_rps"]
        ours = f"{a[1]:.0f} ({a[0]:.0f}-{a[2]:.0f})"
        theirs = f"{b[1]:.0f} ({b[0]:.0f}-{b[2]:.0f})"
        p99 = f"{r['ours_p99_ms']:.2f} / {r['theirs_p99_ms']:.2f}"
        lines.append(f"{r['ours'] + ' ' + r['key']:34} {r['ratio']:5.2f}x {ours:>27} {theirs:>27} {p99:>19}")
    return "\n".join(lines)


def chart(results: dict[str, dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in results if any(k in results[n]["runs"] for k in MAIN_KEYS)]
    keys = [k for k in MAIN_KEYS if any(k in results[n]["runs"] for n in names)]
    if not names or not keys:
        return
    fig, ax = plt.subplots(figsize=(12, 0.5 * len(names) * max(len(keys), 2) / 2 + 2))
    height = 0.8 / len(keys)
    colors = ["#1b6ca8", "#7fb3d5", "#c0392b", "#f1948a", "#1e8449", "#82e0aa"]
    for k, key in enumerate(keys):
        values = [(summarize(results[n], key) or {}).get("rps", 0) for n in names]
        ys = [i + k * height for i in range(len(names))]
        bars = ax.barh(ys, values, height=height, label=key, color=colors[k % len(colors)])
        for bar, value in zip(bars, values, strict=True):
            if value:
                ax.text(bar.get_width(), bar.get_y() + height / 2, f" {value:,.0f}", va="center", fontsize=6)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))])
    ax.set_yticklabels([results[n]["label"] for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("requests per second (median of rounds; higher is better)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curve_chart(results: dict[str, dict[str, Any]], path: str, title: str) -> bool:
    """p99 and requests/s against concurrency, one line per server; False if no curve ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in results if any(k in results[n]["runs"] for k in CURVE_KEYS)]
    if not names:
        return False
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in names:
        points = [(c, summarize(results[name], f"c={c}")) for c in CURVE_LEVELS]
        points = [(c, s) for c, s in points if s]
        xs = [c for c, _ in points]
        lat.plot(xs, [s["p99_ms"] for _, s in points], marker="o", label=results[name]["label"])
        thr.plot(xs, [s["rps"] for _, s in points], marker="o", label=results[name]["label"])
    for ax, label in ((lat, "p99 latency, ms (median of rounds; lower is better)"),
                      (thr, "requests per second (higher is better)")):
        ax.set_xscale("log")
        ax.set_xlabel("keep-alive connections (wrk -t1)")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    lat.set_yscale("log")
    lat.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", help="comma-separated: " + ", ".join(s.name for s in SERVERS))
    parser.add_argument("--duration", type=float, help="seconds per wrk run (5; 2 with --quick)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--idle", type=int, default=1000, help="idle keep-alive connections to hold")
    parser.add_argument("--idle-deadline", type=float, default=15.0, help="seconds to open them")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-connections test")
    parser.add_argument("--no-strace", action="store_true", help="skip counting syscalls per request")
    parser.add_argument("--apps", default="hello,json,flask,heavy,curve",
                        help="load groups: hello, json, flask, heavy, curve")
    parser.add_argument("--quick", action="store_true", help="a short run of every load group, four servers")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    if args.quick:
        args.servers = args.servers or ",".join(QUICK)
        args.duration, args.rounds, args.no_strace = args.duration or 2.0, 1, True
        args.idle, args.idle_deadline = min(args.idle, 300), 4.0
    args.duration = args.duration or 5.0
    names = args.servers.split(",") if args.servers else [s.name for s in SERVERS if s.name not in OPTIONAL]
    servers = []
    for name in names:
        if name not in BY_NAME:
            sys.exit(f"unknown server {name!r}; choose from {', '.join(BY_NAME)}")
        servers.append(BY_NAME[name])
    groups = args.apps.split(",")
    unknown = set(groups) - {ld.group for ld in LOADS}
    if unknown:
        sys.exit(f"unknown load group {', '.join(sorted(unknown))}; choose from hello, json, flask, heavy, curve")
    results: dict[str, dict[str, Any]] = {s.name: {"label": s.label, "runs": {}} for s in servers}
    started = time.time()
    by_app: dict[str, list[Load]] = {}
    for load in LOADS:
        if load.group in groups:
            by_app.setdefault(load.app, []).append(load)
    for app, loads in by_app.items():
        measure_app(app, loads, servers, args, results)
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"
    when = time.strftime("%Y-%m-%d", time.gmtime(started))
    title = f"WSGI servers, wrk -t1, {args.rounds} x {args.duration:g} s, {machine}, {when}"
    rows = ratios(results)
    report = [f"\n{title}", table(results, args.connections),
              keyed_table(results, HEAVY_KEYS, "heavier (wrk -c16 k-a)"),
              keyed_table(results, CURVE_KEYS, "hello k-a by connections"), ratio_table(rows)]
    print("\n\n".join(part for part in report if part))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"title": title, "machine": machine, "date": when, "args": vars(args),
                   "results": results, "ratios": rows,
                   "summary": {n: {k: summarize(e, k) for k in e["runs"]} for n, e in results.items()}},
                  f, indent=1)
    chart(results, os.path.join(args.out, "latest.png"), title)
    curve_chart(results, os.path.join(args.out, "latest-curve.png"), title)
    log(f"wrote {args.out}/latest.json, latest.png and latest-curve.png in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
