"""The deployment examples say what gracehttp does: the Kubernetes timings keep the whole
shutdown inside the grace period, and the load balancers check /readyz."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gracehttp import Config
from gracehttp.cli import build_parser, flag_values

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def deployment() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    docs = list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "deployment.yaml").read_text()))
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    pod = deploy["spec"]["template"]["spec"]
    return pod, pod["containers"][0], service


def config_of(container: dict[str, Any]) -> Config:
    """The Config the container's command line gives, parsed by gracehttp's own CLI parser."""
    assert container["command"][0] == "gracehttp"
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    return Config(app=lambda environ, start_response: [], **flag_values(args))


def test_kubernetes_timings_keep_the_shutdown_inside_the_grace_period() -> None:
    pod, container, _ = deployment()
    cfg = config_of(container)
    assert cfg.drain_delay + cfg.drain_timeout < cfg.shutdown_timeout < pod["terminationGracePeriodSeconds"]
    # The pod leaves the Service (one failed readiness probe) before the listener closes.
    ready = container["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] < cfg.drain_delay


def test_kubernetes_probes_and_ports_point_at_gracehttp() -> None:
    _, container, service = deployment()
    cfg = config_of(container)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    port = next(p for p in container["ports"] if p["name"] == "http")
    assert cfg.addr.rsplit(":", 1)[1] == str(port["containerPort"])
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_haproxy_example_checks_readyz_and_is_valid() -> None:
    text = (EXAMPLES / "haproxy" / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in text
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (.ci/run installs it)")
    check = subprocess.run(["haproxy", "-c", "-f", str(EXAMPLES / "haproxy" / "haproxy.cfg")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_nginx_example_retries_elsewhere_and_names_readyz() -> None:
    text = (EXAMPLES / "nginx" / "gracehttp.conf").read_text()
    assert "proxy_next_upstream error" in text
    assert "health_check uri=/readyz" in text
    assert "non_idempotent" not in text  # a POST is never sent twice
    assert text.count("{") == text.count("}")
