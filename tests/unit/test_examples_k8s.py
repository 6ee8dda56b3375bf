"""The deployment examples say what gracehttp does: the Kubernetes timings keep the whole
shutdown inside the grace period, Prometheus scrapes the admin listener on the pod's own
address, which only it may reach, the CPU request fits the workers, and the load balancers
check /readyz."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gracehttp import Config
from gracehttp.addresses import parse_address
from gracehttp.cli import build_parser, flag_values
from gracehttp.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: A pod address, as the kubelet would give the container in POD_IP (status.podIP).
POD_IP = "10.244.1.7"


def manifests(name: str) -> dict[str, dict[str, Any]]:
    """The objects of examples/kubernetes/`name`, by kind."""
    yaml = pytest.importorskip("yaml")
    return {d["kind"]: d for d in yaml.safe_load_all((EXAMPLES / "kubernetes" / name).read_text())}


def deployment() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    docs = manifests("deployment.yaml")
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    return pod, pod["containers"][0], docs["Service"]


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of a container's command and args before it starts the
    process: $(NAME) becomes the variable's value when the container defines it (else it
    stays as written), and $$ is a literal $."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def container_env(container: dict[str, Any], pod_ip: str) -> dict[str, str]:
    """The container's variables, with the values the kubelet gives the pod's fields."""
    fields = {"status.podIP": pod_ip}
    return {e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
            for e in container.get("env", [])}


def config_of(container: dict[str, Any], pod_ip: str = POD_IP) -> Config:
    """The Config the container's command line gives in a pod at `pod_ip`, expanded as
    Kubernetes does and parsed by gracehttp's own CLI parser."""
    assert container["command"][0] == "gracehttp"
    env = container_env(container, pod_ip)
    argv = [expand(arg, env) for arg in [*container["command"][1:], *container["args"]]]
    args = build_parser().parse_args(argv)
    return Config(app=lambda environ, start_response: [], **flag_values(args))


def port_named(container: dict[str, Any], name: str) -> int:
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == name))


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
    assert cfg.addr.rsplit(":", 1)[1] == str(port_named(container, "http"))
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_the_admin_listener_listens_on_the_pod_address() -> None:
    _, container, _ = deployment()
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    for pod_ip in (POD_IP, "10.244.2.9"):  # the address is the pod's, whichever it is
        admin = parse_address(config_of(container, pod_ip).admin_addr or "", "admin_addr")
        assert (admin.host, admin.port) == (pod_ip, port_named(container, "metrics"))
    # With an IPv6 pod address the same spelling is refused as gracehttp starts, rather than
    # bound somewhere else; the bracketed spelling the example's comment gives works.
    v6 = "fd00:10:244::7"
    with pytest.raises(ConfigError, match="IPv6"):
        config_of(container, v6)
    bracketed = "--admin-bind=[$(POD_IP)]:9090"
    assert bracketed in (EXAMPLES / "kubernetes" / "deployment.yaml").read_text()
    container["args"] = [bracketed if a.startswith("--admin-bind=") else a for a in container["args"]]
    assert config_of(container, v6).admin_addr == f"[{v6}]:9090"


def test_the_readme_shows_the_deployment_as_it_is() -> None:
    yaml = pytest.importorskip("yaml")
    _, container, _ = deployment()
    text = (EXAMPLES / "kubernetes" / "README.rst").read_text()
    (block,) = re.findall(r"\.\. code-block:: yaml\n\n((?: {4}.*\n|\n)+)", text)
    excerpt = yaml.safe_load(block)
    assert set(excerpt["args"]) <= set(container["args"])
    assert all(var in container["env"] for var in excerpt["env"])


def test_only_prometheus_may_reach_the_admin_listener() -> None:
    docs = manifests("deployment.yaml")
    deploy, policy, service = docs["Deployment"], docs["NetworkPolicy"], docs["Service"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"] for p in container["ports"]}
    rules = policy["spec"]["ingress"]
    for rule in rules:
        assert {p["port"] for p in rule["ports"]} <= named  # the ports the container names
    open_ports = {p["port"] for rule in rules if "from" not in rule for p in rule["ports"]}
    assert open_ports == {"http"}  # from anywhere: the main port only
    metrics_rules = [rule for rule in rules if any(p["port"] == "metrics" for p in rule["ports"])]
    assert len(metrics_rules) == 1
    (peer,) = metrics_rules[0]["from"]  # one peer holding both selectors: pods AND namespace
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    # The Service (what clients use) does not carry the admin port.
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_the_scrape_configuration_names_the_admin_listener() -> None:
    _, container, _ = deployment()
    admin = parse_address(config_of(container).admin_addr or "", "admin_addr")
    annotations = manifests("deployment.yaml")["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(admin.port)
    assert annotations["prometheus.io/path"] == "/metrics"  # the admin listener's path
    monitor = manifests("podmonitor.yaml")["PodMonitor"]
    labels = manifests("deployment.yaml")["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert port_named(container, endpoint["port"]) == admin.port
    assert endpoint["path"] == "/metrics"


def cpus(quantity: str) -> float:
    """A Kubernetes CPU quantity ("2", "1.5", "500m") in CPUs."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_the_cpu_request_is_one_cpu_per_worker() -> None:
    """The example's rule (its comment): a worker process runs Python on one CPU at a time,
    so one CPU per worker; --threads wait on I/O and ask for none."""
    _, container, _ = deployment()
    cfg = config_of(container)
    assert cfg.workers > 1
    assert cfg.threads > 1
    resources = container["resources"]
    assert cpus(str(resources["requests"]["cpu"])) == cfg.workers
    assert "cpu" not in resources.get("limits", {})  # no throttling below what the node has spare
    assert "one CPU per worker process" in (EXAMPLES / "kubernetes" / "deployment.yaml").read_text()


def test_the_kubernetes_objects_match_the_api_schema() -> None:
    """Deployment, Service and NetworkPolicy against Kubernetes' own schema, rejecting any
    field it does not know: a misspelt key would otherwise show only when applied to a
    cluster. (PodMonitor is a custom resource, with no schema there.)"""
    validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed "
                                   "(pip install kubernetes-validate)")
    docs = manifests("deployment.yaml")
    assert set(docs) == {"Deployment", "Service", "NetworkPolicy"}
    for doc in docs.values():
        validate.validate(doc, validate.latest_version(), strict=True)  # raises, naming the field


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
