"""The /debug/* endpoints' work: thread dumps, a sampling profiler, heap tops, vars.

Middle layer: standard library only. Pure functions over the interpreter's
state, so the admin app stays a thin dispatcher.
"""

from __future__ import annotations

import collections
import os
import platform
import resource
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

from gracehttp.watchdog import Running, current_frames

#: The longest profile one request may ask for, and the sampling rates allowed.
MAX_PROFILE_SECONDS = 60.0
MAX_HZ = 1000


def thread_dump(active: Mapping[int, Running]) -> str:
    """Every thread's name and stack; request threads also name their request and its age.

    `active` maps a thread ident to the request it serves now.
    """
    frames = current_frames()
    now = time.monotonic()
    out = []
    for thread in sorted(threading.enumerate(), key=lambda t: t.name):
        ident = thread.ident or 0
        header = f"Thread {thread.name} (ident {ident}{', daemon' if thread.daemon else ''})"
        run = active.get(ident)
        if run is not None:
            header += f" serving {run.describe()} for {now - run.started:.3f}s"
        out.append(header)
        frame = frames.get(ident)
        if frame is not None:
            out.extend(line.rstrip("\n") for line in traceback.format_stack(frame))
        out.append("")
    return "\n".join(out)


class Profiler:
    """A sampling profiler over all threads, in pure Python; one profile at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def run(self, seconds: float, hz: float) -> str | None:
        """Folded stacks (``thread;frame;frame count`` lines), or None if one is running."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._sample(min(seconds, MAX_PROFILE_SECONDS), min(max(hz, 1.0), MAX_HZ))
        finally:
            self._lock.release()

    @staticmethod
    def _sample(seconds: float, hz: float) -> str:
        me = threading.get_ident()
        names = {t.ident: t.name for t in threading.enumerate()}
        counts: collections.Counter[str] = collections.Counter()
        interval = 1.0 / hz
        deadline = time.monotonic() + seconds
        next_at = time.monotonic()
        while next_at < deadline:
            for ident, frame in current_frames().items():
                if ident == me:
                    continue
                stack = []
                f: Any = frame
                while f is not None:
                    code = f.f_code
                    stack.append(f"{code.co_name} ({os.path.basename(code.co_filename)}:{f.f_lineno})")
                    f = f.f_back
                name = names.get(ident) or f"thread-{ident}"
                counts[";".join([name.replace(";", ":"), *reversed(stack)])] += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the sampling period itself, not a wait for a condition
        return "".join(f"{stack} {n}\n" for stack, n in counts.most_common())


def heap_top(limit: int) -> str:
    """The top allocation sites by line; starts tracemalloc if it was not tracing."""
    import tracemalloc  # here: 0.4 MiB of every process otherwise

    if not tracemalloc.is_tracing():
        tracemalloc.start(1)
        return ("tracemalloc was not tracing: it is started now. Ask again once the server has "
                "run a while to see where memory goes.\n")
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")))
    stats = snapshot.statistics("lineno")
    total = sum(stat.size for stat in stats)
    lines = [f"traced: {total / 2**20:.1f} MiB in {len(stats)} lines; top {limit}:"]
    for stat in stats[:limit]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size / 1024:10.1f} KiB {stat.count:8d} blocks  {frame.filename}:{frame.lineno}")
    return "\n".join(lines) + "\n"


def process_facts(started: float) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "uptime_seconds": round(time.monotonic() - started, 3),
        "cpu_user_seconds": usage.ru_utime,
        "cpu_system_seconds": usage.ru_stime,
        "max_rss_kib": usage.ru_maxrss,
        "threads": threading.active_count(),
    }
