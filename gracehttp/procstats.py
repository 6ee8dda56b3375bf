"""The standard metrics of a Python process (``process_*``, ``python_info``,
``python_gc_*``), with the names, help and meaning of prometheus-client's default
collectors, so dashboards built for any Python exporter work unchanged.

Bottom layer: imports `exposition` only. Read from /proc at each scrape, which
is what prometheus-client does too; where /proc is missing (not Linux) the
``process_*`` families are left out, as there.
"""

from __future__ import annotations

import gc
import os
import platform

from gracehttp.exposition import Family, Sample, gauge

_TICKS = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


_BOOT = _boot_time()


def process_families() -> list[Family]:
    """Memory, CPU, start time and descriptors of this process."""
    if _BOOT is None:
        return []
    families = []
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        fields = []
    if fields:
        cpu = float(fields[11]) / _TICKS + float(fields[12]) / _TICKS
        families += [
            gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", float(fields[20])),
            gauge("process_resident_memory_bytes", "Resident memory size in bytes.", float(fields[21]) * _PAGE),
            gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
                  float(fields[19]) / _TICKS + _BOOT),
            Family("process_cpu_seconds", "counter", "Total user and system CPU time spent in seconds.",
                   [Sample("process_cpu_seconds_total", {}, cpu)]),
        ]
    try:
        with open("/proc/self/limits", "rb") as f:
            limit = next(float(line.split()[3]) for line in f if line.startswith(b"Max open file"))
        families += [gauge("process_open_fds", "Number of open file descriptors.", len(os.listdir("/proc/self/fd"))),
                     gauge("process_max_fds", "Maximum number of open file descriptors.", limit)]
    except (OSError, StopIteration, ValueError):
        pass
    return families


#: The collector's counts per generation: gc.get_stats() key, family name, help.
_GC = (("collected", "python_gc_objects_collected", "Objects collected during gc"),
       ("uncollectable", "python_gc_objects_uncollectable", "Uncollectable objects found during GC"),
       ("collections", "python_gc_collections", "Number of times this generation was collected"))


def python_families() -> list[Family]:
    """Which Python this is, and (CPython) what its garbage collector has done."""
    major, minor, patch = platform.python_version_tuple()
    info = {"implementation": platform.python_implementation(), "major": major, "minor": minor,
            "patchlevel": patch, "version": platform.python_version()}
    families = [Family("python_info", "gauge", "Python platform information", [Sample("python_info", info, 1.0)])]
    if info["implementation"] == "CPython":
        stats = gc.get_stats()
        for key, name, doc in _GC:
            samples = [Sample(f"{name}_total", {"generation": str(gen)}, float(stat[key]))
                       for gen, stat in enumerate(stats)]
            families.append(Family(name, "counter", doc, samples))
    return families
