"""``--reload`` for development: restart the server when a source file changes.

Top layer, standard library only. Never on by default: a restart drops the
listeners (a ``:0`` port changes), which is fine on a laptop and wrong in
production, where SIGUSR2 upgrades without dropping anything.

The command line runs in a parent process that starts the real server as a child
(the same arguments, without ``--reload``) and polls the modification times of
the ``.py`` files under the current directory twice a second, as werkzeug's
stat reloader does: no inotify dependency, and it works on every file system.
On a change it stops the child with SIGTERM (so it drains), waits, and starts a
new one. SIGTERM/SIGINT to the parent are passed on to the child, and the parent
exits with the child's status.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

POLL_SECONDS = 0.5
#: Directories never watched: caches, virtual environments, version control.
SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "venv", ".venv", "build", "dist"})
MAX_FILES = 20_000


def source_mtimes(root: str) -> dict[str, float]:
    """``{path: mtime}`` of the Python files under `root` (at most MAX_FILES)."""
    found: dict[str, float] = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                try:
                    found[path] = os.stat(path).st_mtime
                except OSError:
                    continue
                if len(found) >= MAX_FILES:
                    return found
    return found


def run_with_reload(argv: Sequence[str], stop_timeout: float, logger: logging.Logger) -> int:
    """Run ``python -m gracehttp argv`` in a child, restarting it on source changes."""
    root = os.getcwd()
    stop = threading.Event()
    status: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            seen = source_mtimes(root)
            child = subprocess.Popen([sys.executable, "-m", "gracehttp", *argv])
            logger.info("reload: watching %d files under %s (server pid %d)", len(seen), root, child.pid)
            changed = ""
            while not stop.wait(POLL_SECONDS):
                now = source_mtimes(root)
                if now != seen:
                    changed = next((p for p in now if now[p] != seen.get(p)), "") or "a file was removed"
                    break
                if child.returncode is None and child.poll() is not None:  # a mistake: wait for the fix
                    logger.error("reload: the server exited with %d; save a change to restart it", child.returncode)
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(stop_timeout + 5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            status.append(child.returncode)
            if stop.is_set():
                return status[-1] if status[-1] >= 0 else 1
            logger.info("reload: %s changed; restarting", os.path.relpath(changed, root))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
