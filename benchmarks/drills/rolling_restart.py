"""Drill: rolling restarts behind a real load balancer (HAProxy), gracehttp against its peers.

HAProxy (Debian's package, installed with apt-get when missing) balances three
instances of one server on loopback, health-checking them every 500 ms
(gracehttp on ``/readyz``; the peers, which have no readiness endpoint, on ``/``).
``wrk`` drives HAProxy for ``--duration`` seconds while each instance in turn is

a. sent SIGTERM and started again once it has exited (gracehttp with
   ``drain_delay=2``: readiness turns 503, HAProxy stops sending, then it drains);
b. upgraded in place: gracehttp with SIGUSR2; gunicorn with its documented
   USR2-then-TERM-the-old-master; waitress has no upgrade, so it is restarted as in (a);
c. drained and undrained: gracehttp with ``POST /drain`` and ``POST /undrain`` on its
   admin listener; the peers, which have nothing of the kind, through HAProxy's own
   runtime API (``set server ... state drain`` / ``ready``).

Two probe clients through HAProxy (one keep-alive, one fresh connection per request)
time every request for the timeline. Prints, per server: wrk's requests, non-2xx and
socket errors, the probes' errors, latency; writes a table (JSON) and a PNG timeline
of errors and latency to benchmarks/results/. Exit status 1 if gracehttp lost any.

    python benchmarks/drills/rolling_restart.py [--duration 30] [--servers gracehttp,gunicorn,waitress]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, HERE)
from measure import ensure_tool, wrk_counts  # noqa: E402
from upgrade_under_load import percentile, read_pid, start_load, wait_for  # noqa: E402

RESULTS = os.path.join(BENCH, "results")
INSTANCES = 3
PHASES = ("restart", "upgrade", "drain")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def post(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", path)
    status = conn.getresponse().status
    conn.close()
    return status


@dataclass
class Instance:
    """One backend process (and for gracehttp, its admin port), restartable on its port."""

    kind: str
    index: int
    tmp: str
    port: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> str:
        return os.path.join(self.tmp, f"{self.kind}-{self.index}.pid")

    def command(self) -> list[str]:
        if self.kind == "gracehttp":
            return [sys.executable, "-m", "gracehttp", "apps:hello", "--bind", f"127.0.0.1:{self.port}",
                    "--admin-bind", f"127.0.0.1:{self.admin}", "--drain-delay", "2", "--threads", "8",
                    "--pid-file", self.pid_file, "--no-metrics"]
        if self.kind == "gunicorn":
            return [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "2", "--threads", "4",
                    "-b", f"127.0.0.1:{self.port}", "--pid", self.pid_file, "--graceful-timeout", "10",
                    "apps:hello"]
        return [sys.executable, "-m", "waitress", "--listen", f"127.0.0.1:{self.port}", "--threads", "8",
                "apps:hello"]

    def start(self) -> None:
        log = open(os.path.join(self.tmp, f"{self.kind}-{self.index}.log"), "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([BENCH, ROOT])}
        self.proc = subprocess.Popen(self.command(), cwd=BENCH, env=env, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        if not wait_for(lambda: answers(self.port, "/"), 20):
            raise SystemExit(f"{self.kind} instance {self.index} did not start: see {self.tmp}")

    def main_pid(self) -> int:
        """The process to signal: an upgraded gracehttp or gunicorn is no longer our child
        (gunicorn's new master writes ``PIDFILE.2`` while the old one is still there)."""
        return read_pid(self.pid_file + ".2") or read_pid(self.pid_file) or (self.proc.pid if self.proc else 0)

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.main_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not _alive(pid), timeout)
        if self.proc is not None:
            self.proc.wait(timeout)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def haproxy_config(front: int, backends: list[Instance], check: str, sock: str) -> str:
    servers = "\n".join(f"    server s{b.index} 127.0.0.1:{b.port} check" for b in backends)
    return f"""global
    maxconn 4096
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
frontend fe
    bind 127.0.0.1:{front}
    default_backend be
backend be
    balance roundrobin
    option httpchk GET {check}
    http-check expect status 200
    default-server inter 500ms fall 1 rise 2
{servers}
"""


def haproxy_command(sock: str, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(sock)
        s.sendall(command.encode() + b"\n")
        return s.recv(4096).decode()


def servers_up(sock: str) -> int:
    """How many of the backend's servers HAProxy has up (its CSV stats: column 18 is status)."""
    rows = [line.split(",") for line in haproxy_command(sock, "show stat").splitlines()]
    return sum(1 for r in rows if len(r) > 17 and r[0] == "be" and r[1].startswith("s") and r[17] == "UP")


def act(inst: Instance, phase: str, sock: str, hold: float) -> str:
    """Run one step of the drill on one instance; returns what was done (for the log)."""
    if phase == "restart" or (phase == "upgrade" and inst.kind == "waitress"):
        inst.stop()
        inst.start()
        return "SIGTERM, restarted"
    if phase == "upgrade":
        old = inst.main_pid()
        os.kill(old, signal.SIGUSR2)
        if inst.kind == "gracehttp":
            wait_for(lambda: read_pid(inst.pid_file) not in (0, old), 30)
            wait_for(lambda: not _alive(old), 30)
            return "SIGUSR2"
        # gunicorn: the new master writes its pid file once it is up; then retire the old one.
        wait_for(lambda: inst.main_pid() not in (0, old) and answers(inst.port, "/"), 30)
        os.kill(old, signal.SIGTERM)
        wait_for(lambda: not _alive(old), 30)
        return "SIGUSR2, then SIGTERM to the old master"
    if inst.kind == "gracehttp":
        assert post(inst.admin, "/drain") == 200
        time.sleep(hold)  # the drill's pacing: how long the instance stays out of rotation
        assert post(inst.admin, "/undrain") == 200
        return "POST /drain, /undrain"
    haproxy_command(sock, f"set server be/s{inst.index} state drain")
    time.sleep(hold)
    haproxy_command(sock, f"set server be/s{inst.index} state ready")
    return "haproxy drain, ready"


def run(kind: str, duration: float, connections: int, wrk_path: str, haproxy_path: str,
        quick: bool = False) -> dict[str, object]:
    tmp = tempfile.mkdtemp(prefix=f"gracehttp-rolling-{kind}-")
    backends = [Instance(kind, i, tmp) for i in range(INSTANCES)]
    front = free_port()
    sock = os.path.join(tmp, "haproxy.sock")
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(haproxy_config(front, backends, "/readyz" if kind == "gracehttp" else "/", sock))
    haproxy = None
    actions: list[dict[str, object]] = []
    stop = threading.Event()
    try:
        for b in backends:
            b.start()
        haproxy = subprocess.Popen([haproxy_path, "-f", cfg, "-db"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        if not wait_for(lambda: os.path.exists(sock) and servers_up(sock) == INSTANCES, 15):
            raise SystemExit("haproxy did not see every instance up")
        t0 = time.monotonic()
        # wrk runs until every step is done (a slow server's steps can outlast `duration`),
        # then gets SIGINT, on which it stops and reports.
        wrk, probes = start_load(wrk_path, front, connections, duration * 10, t0, stop)
        steps = ([(phase, b) for phase, b in zip(PHASES, backends, strict=True)] if quick
                 else [(phase, b) for phase in PHASES for b in backends])
        every = (duration - 1.0) / len(steps)
        for k, (phase, b) in enumerate(steps):
            time.sleep(max(0.0, t0 + 0.5 + k * every - time.monotonic()))  # pacing, not synchronisation
            began = time.monotonic() - t0
            what = act(b, phase, sock, hold=min(2.0, every / 2))
            # A rolling restart moves on once the load balancer has the instance back.
            back = wait_for(lambda: servers_up(sock) == INSTANCES, 15)
            actions.append({"at": round(began, 2), "took": round(time.monotonic() - t0 - began, 2),
                            "instance": b.index, "phase": phase, "what": what, "back_in_rotation": back})
        time.sleep(max(0.5, t0 + duration - time.monotonic()))  # the rest of the run, under load
        wrk.send_signal(signal.SIGINT)
        out, _ = wrk.communicate(timeout=60)
        elapsed = time.monotonic() - t0
        stop.set()
        for p in probes:
            p.join(15)
    finally:
        stop.set()
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(10)
        for b in backends:
            b.stop()
    requests, socket_errors, non2xx = wrk_counts(out)
    samples = [s for p in probes for s in p.samples]
    ok = [lat for _, lat, err in samples if err is None]
    return {"server": kind, "seconds": round(elapsed, 1), "wrk_requests": requests, "non2xx": non2xx,
            "socket_errors": sum(socket_errors.values()), "probe_requests": len(samples),
            "probe_errors": len(samples) - len(ok), "probe_p50_ms": round(percentile(ok, 0.5), 2),
            "probe_p99_ms": round(percentile(ok, 0.99), 2), "probe_max_ms": round(max(ok, default=0.0), 2),
            "actions": actions, "error_examples": [e for _, _, e in samples if e][:3], "logs": tmp,
            "timeline": [(round(t, 3), round(lat, 2), err is not None) for t, lat, err in samples]}


def plot(results: list[dict[str, object]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(10, 2.6 * len(results)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        timeline = r["timeline"]
        assert isinstance(timeline, list)
        good = [(t, lat) for t, lat, bad in timeline if not bad]
        bad = [t for t, _, failed in timeline if failed]
        ax.scatter([t for t, _ in good], [lat for _, lat in good], s=2, color="tab:blue", label="probe latency")
        if bad:
            ax.scatter(bad, [1.0] * len(bad), s=20, marker="x", color="tab:red", label="failed request")
        for a in r["actions"]:  # type: ignore[attr-defined]
            ax.axvline(a["at"], color="grey", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"{r['server']}: {r['wrk_requests']} wrk requests, {r['non2xx']} non-2xx, "
                     f"{r['socket_errors']} socket errors, {r['probe_errors']} probe errors", fontsize=9)
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds (dotted: restart, upgrade, drain of one instance)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--servers", default="gracehttp,gunicorn,waitress")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="one step per phase (instance 0 restarted, 1 upgraded, 2 drained): for a 10 s run")
    args = parser.parse_args()
    wrk_path = ensure_tool("wrk")
    haproxy_path = ensure_tool("haproxy")
    results = []
    for kind in args.servers.split(","):
        if kind == "gunicorn" and subprocess.run([sys.executable, "-c", "import gunicorn"]).returncode:
            print("gunicorn is not installed (pip install -e '.[bench]'): skipped", file=sys.stderr)
            continue
        results.append(run(kind, args.duration, args.connections, wrk_path, haproxy_path, args.quick))
    print(f"rolling restart drill: HAProxy in front of {INSTANCES} instances, wrk -t2 -c{args.connections} "
          f"{args.duration:g}s; each instance restarted (SIGTERM), upgraded, drained in turn")
    print(f"{'server':<10} {'wrk requests':>12} {'non-2xx':>8} {'socket err':>10} {'probe err':>9} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>8} {'seconds':>8}")
    for r in results:
        print(f"{r['server']:<10} {r['wrk_requests']:>12} {r['non2xx']:>8} {r['socket_errors']:>10} "
              f"{r['probe_errors']:>9} {r['probe_p50_ms']:>7} {r['probe_p99_ms']:>7} {r['probe_max_ms']:>8} "
              f"{r['seconds']:>8}")
        for e in r["error_examples"]:  # type: ignore[attr-defined]
            print(f"    e.g. {e}")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "drill-rolling.json"), "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "timeline"} for r in results], f, indent=2)
    if not args.no_plot:
        plot(results, os.path.join(RESULTS, "drill-rolling.png"))
    ours = [r for r in results if r["server"] == "gracehttp"]
    lost = sum(int(str(r[k])) for r in ours for k in ("non2xx", "socket_errors", "probe_errors"))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
