"""The tables of docs/drills.rst ("Performance"), in reStructuredText, from a run's JSON.

    python benchmarks/rst_tables.py benchmarks/results/latest.json

Prints the main table (every server), the heavier requests, the concurrency curve
and the gracehttp/granian ratios; docs/drills.rst quotes them between its
``.. bench-start`` and ``.. bench-end`` markers (a test keeps them equal to the
JSON kept beside them, docs/benchmark.json).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import CURVE_KEYS, HEAVY_KEYS


def grid(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    rule = "  ".join("=" * w for w in widths)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([rule, fmt.format(*head).rstrip(), rule, *(fmt.format(*r).rstrip() for r in rows), rule])


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def main_table(data: dict[str, Any]) -> str:
    rows = []
    for name, entry in data["results"].items():
        s = data["summary"].get(name, {})
        ka = s.get("hello keep-alive") or {}
        if not ka:
            continue
        idle = entry.get("idle") or {}
        extra = f"{idle['rss_after_mib'] - idle['rss_before_mib']:+.1f}" if idle else "-"
        served = f"{ka['served_min']}/50" if ka.get("served_min") is not None else "n/a"
        rows.append([entry["label"], num(ka.get("rps")), num(ka.get("p99_ms"), 2), served,
                     num((s.get("hello close") or {}).get("rps")), num((s.get("json keep-alive") or {}).get("rps")),
                     num((s.get("flask keep-alive") or {}).get("rps")), num((s.get("flask close") or {}).get("rps")),
                     num(idle.get("rss_before_mib", entry.get("idle_rss_mib")), 1), extra,
                     f"{entry.get('startup_ms', 0):.0f} ms", num(entry.get("syscalls_per_request"), 1)
                     if entry.get("syscalls_per_request") else ""])
    return grid(["server", "hello k-a", "p99 ms", "served", "close", "json", "flask", "flask cl", "RSS",
                 "+1k idle", "start", "sys/req"], rows)


def keyed_table(data: dict[str, Any], keys: list[str], first: str) -> str:
    # Only the loads this run measured: a run made before a load was added has no column for it.
    keys = [k for k in keys if any(k in s for s in data["summary"].values())]
    rows = []
    for name, entry in data["results"].items():
        s = data["summary"].get(name, {})
        if not any(k in s for k in keys):
            continue
        cells = []
        for k in keys:
            v = s.get(k)
            cells.append(f"{num(v['rps'])} / {num(v['p99_ms'], 1)}" if v else "-")
        rows.append([entry["label"], *cells])
    return grid([first, *keys], rows) if rows else ""


def ratio_table(data: dict[str, Any]) -> str:
    rows = []
    for r in data.get("ratios", []):
        a, b = r["ours_rps"], r["theirs_rps"]
        rows.append([f"{r['ours']} / {r['theirs']}", r["key"], f"{r['ratio']:.2f}x",
                     f"{num(a[1])} ({num(a[0])}-{num(a[2])})", f"{num(b[1])} ({num(b[0])}-{num(b[2])})",
                     f"{r['ours_p99_ms']:.2f} / {r['theirs_p99_ms']:.2f}"])
    return grid(["pair", "load", "ratio", "gracehttp req/s (range)", "granian req/s (range)", "p99 ms"], rows)


def render(data: dict[str, Any]) -> str:
    parts = [main_table(data), keyed_table(data, HEAVY_KEYS, "heavier: req/s / p99 ms"),
             keyed_table(data, CURVE_KEYS, "connections: req/s / p99 ms"), ratio_table(data)]
    return "\n\n".join(p for p in parts if p) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(render(json.load(f)), end="")
