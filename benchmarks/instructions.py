"""Instructions per hello-world request, counted by valgrind's callgrind: a measure of the
CPU a request costs in user space that does not move with the machine's load, for a
before-and-after on a machine whose speed does (``per_request.py`` gives seconds).

    python benchmarks/instructions.py                          # this checkout
    python benchmarks/instructions.py --baseline /tmp/base     # and another

Each setup runs as ``servers.py gracehttp`` (metrics on, one process) under
``valgrind --tool=callgrind --separate-threads=yes``, with counting off until a
client has warmed it up; then a client sends `--requests` requests, each answered
before the next, over 10 keep-alive connections in turn (or a new connection each
with ``--close``), and the count is stopped. Under valgrind a request takes about
fifty times as long, so threads that wake on a timer (the watchdog, the metrics
flusher) count for fifty times their share: the number that matters is the
request threads' (every thread started after the engine's housekeeper), and the
whole process's is shown beside it. Same binary, same requests: repeated runs
agree within about 1 %. Linux only; installs valgrind with apt-get when missing.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import HERE, ensure_tool
from servers import free_port

#: Threads a one-process server with metrics on starts before its request threads, in
#: order: the main thread, the metrics flusher, the reserve poller, the watchdog and the
#: housekeeper (`gracehttp.engine.Engine.start`).
THREADS_BEFORE_REQUESTS = 5


def client(port: int, count: int, close: bool) -> None:
    """`count` requests, each answered (read to its Content-Length) before the next."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n%s\r\n" % (b"Connection: close\r\n" if close else b"")
    socks = [] if close else [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port)) if close else socks[i % 10]
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += sock.recv(65536)
        if close:
            sock.close()
    for sock in socks:
        sock.close()


def count(checkout: str | None, requests: int, close: bool) -> tuple[int, int]:
    """(instructions per request in the request threads, in the whole process)."""
    port = free_port()
    out = tempfile.mkdtemp(prefix="gracehttp-callgrind-")
    env = dict(os.environ, GRACEHTTP_BASELINE=checkout or "")
    name = "gracehttp-baseline" if checkout else "gracehttp"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--separate-threads=yes", "--instr-atstart=no",
                             f"--callgrind-out-file={out}/cg.out", sys.executable,
                             os.path.join(HERE, "servers.py"), name, "hello", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("the server under valgrind did not start")
                time.sleep(0.5)
        client(port, 200, close)  # warm up: caches filled, threads started
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        client(port, requests, close)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(60)
    per_thread: dict[int, int] = {}
    for path in glob.glob(f"{out}/cg.out*"):
        found = re.search(r"-(\d+)$", path)
        with open(path) as f:
            totals = [int(line.split()[1]) for line in f if line.startswith("totals:")]
        if found and totals:
            thread = int(found.group(1))
            per_thread[thread] = max(per_thread.get(thread, 0), *totals)
    served = sum(n for thread, n in per_thread.items() if thread > THREADS_BEFORE_REQUESTS)
    return served // requests, sum(per_thread.values()) // requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="another checkout to compare with (its directory)")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    ensure_tool("valgrind")
    print("instructions per hello-world request (callgrind), request threads / whole process")
    for close in (False, True):
        for label, checkout in [("this checkout", None)] + ([("baseline", args.baseline)] if args.baseline else []):
            served, whole = count(os.path.abspath(checkout) if checkout else None, args.requests, close)
            print(f"{label:15} {'close' if close else 'keep-alive':10} {served:>9,} {whole:>9,}")


if __name__ == "__main__":
    main()
