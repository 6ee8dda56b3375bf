"""The process's word to its manager: the pid file and systemd's ``sd_notify``
(docs/architecture.rst, "Process manager integration").

Bottom layer: standard library only. Both are best-effort and never raise into
the server: a manager that is not listening must not stop requests being served.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading


def notify(message: str) -> bool:
    """Send `message` (``READY=1``, ``STOPPING=1``...) to ``$NOTIFY_SOCKET``; False if unset or failed."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path  # '@' names the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of systemd's ``WatchdogSec=``), or None
    when the manager asked for none, or asked another process (``WATCHDOG_PID``)."""
    usec, pid = os.environ.get("WATCHDOG_USEC", ""), os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


def start_watchdog(stop: threading.Event) -> bool:
    """Ping the watchdog from a thread until `stop` is set; False when none was asked for.

    The pings come from the server's process as long as it runs Python code; a
    process wedged in a C call that holds the GIL stops pinging and systemd restarts it.
    """
    interval = watchdog_interval()
    if interval is None:
        return False

    def ping() -> None:
        while not stop.wait(interval):
            notify("WATCHDOG=1")

    threading.Thread(target=ping, name="gracehttp-watchdog", daemon=True).start()
    return True


def write_pid_file(path: str, pid: int | None = None) -> None:
    """Write the pid atomically (temp file, then rename), so a reader never sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gracehttp-pid-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{pid if pid is not None else os.getpid()}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_pid_file(path: str, pid: int | None = None) -> None:
    """Remove the pid file if it still names this process (a newer generation may own it)."""
    try:
        with open(path) as f:
            owner = f.read().strip()
        if owner == str(pid if pid is not None else os.getpid()):
            os.unlink(path)
    except (OSError, ValueError):
        pass
