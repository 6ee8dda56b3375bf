"""gracehttp against waitress on hello-world with wrk, in one run: requests/s and the ratio.

    python benchmarks/quick.py [--duration 5] [--rounds 3] [--connections 50]

Each server runs in its own process on a socket this script binds (so both get
the same kind of listener) and the rounds interleave the servers, so both are
measured under the same machine load. wrk is installed with apt-get if missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("installing wrk with apt-get ...", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    path = shutil.which("wrk")
    if not path:
        sys.exit("wrk is not available")
    return path


def serve(name: str, fd: int) -> None:
    """Child role: serve the hello app on the inherited listening socket `fd`."""
    sys.path[:0] = [HERE, ROOT]
    from apps import hello

    if name == "gracehttp":
        from gracehttp import Config, GracefulServer

        GracefulServer(Config(app=hello, addr=f"fd://{fd}", server_header="gracehttp")).serve_forever()
    elif name == "waitress":
        import waitress

        sock = socket.socket(fileno=fd)
        waitress.serve(hello, sockets=[sock], threads=8, _quiet=True)
    else:
        sys.exit(f"unknown server {name}")


def start(name: str) -> tuple[subprocess.Popen[bytes], int]:
    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", name, str(sock.fileno())],
                            pass_fds=[sock.fileno()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"GET / HTTP/1.0\r\n\r\n")
                if probe.recv(16).startswith(b"HTTP/1."):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"{name} did not start")


def wrk(wrk_path: str, port: int, duration: int, connections: int, close: bool) -> float:
    cmd = [wrk_path, "-t1", f"-c{connections}", f"-d{duration}s", f"http://127.0.0.1:{port}/"]
    if close:
        cmd[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        print(f"  warning: {errors.group(1)} non-2xx responses", file=sys.stderr)
    return float(match.group(1)) if match else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--serve", nargs=2, metavar=("NAME", "FD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    wrk_path = ensure_wrk()
    names = ["gracehttp", "waitress"]
    running = {name: start(name) for name in names}
    results: dict[tuple[str, bool], list[float]] = {(n, c): [] for n in names for c in (False, True)}
    try:
        for r in range(args.rounds):
            for close in (False, True):
                for name in names if r % 2 == 0 else reversed(names):
                    rps = wrk(wrk_path, running[name][1], args.duration, args.connections, close)
                    results[(name, close)].append(rps)
                    print(f"round {r + 1} {name:10} {'close' if close else 'keep-alive':10} {rps:10.0f} req/s",
                          file=sys.stderr)
    finally:
        for proc, _ in running.values():
            proc.terminate()
            proc.wait(15)
    print(f"\nhello-world, wrk -t1 -c{args.connections} -d{args.duration}s, median of {args.rounds} rounds, "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"{'mode':12} {'gracehttp':>12} {'waitress':>12} {'ratio':>8}")
    for close in (False, True):
        g = statistics.median(results[("gracehttp", close)])
        w = statistics.median(results[("waitress", close)])
        print(f"{'close' if close else 'keep-alive':12} {g:12.0f} {w:12.0f} {g / w if w else 0:8.2f}x")


if __name__ == "__main__":
    main()
