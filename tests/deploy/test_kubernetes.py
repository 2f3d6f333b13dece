"""deploy/kubernetes: every manifest valid (strictly, offline), the sidecar as the issue asks,
monitors that select what they should, and a PrometheusRule equal to monitors/prometheus."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from forwarder.config import duration
from tests.deploy.podman import DATA_DIR, ROOT, UID

KUBERNETES = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(KUBERNETES.rglob("*.yaml"))
# 1.29: the first release with native sidecars on by default; and the newest schemas shipped.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# The Prometheus Operator's kinds: kubernetes-validate ships no schema for them. The rule is
# checked against monitors/prometheus below, the monitors against the workloads they scrape.
OPERATOR_API = "monitoring.coreos.com/v1"


def _resources(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _all() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for path in MANIFESTS for doc in _resources(path)}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: str(path.relative_to(KUBERNETES)))
def test_every_manifest_validates_strictly(path: Path, version: str) -> None:
    for resource in _resources(path):
        if resource["apiVersion"] == OPERATOR_API:
            continue
        # Strict: an unknown or misspelt field fails, as `kubectl apply --validate=strict` would.
        kubernetes_validate.validate(resource, version, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = _all()[("Deployment", "my-app")]
    deployment["spec"]["template"]["spec"]["initContainers"][0]["restartPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicyy"):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def _dockerfile(instruction: str) -> str:
    match = re.search(rf"^{instruction}\s+(.+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert match, f"no {instruction} in the Dockerfile"
    return match.group(1).strip()


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def _stop_budget_s(env: dict[str, Any]) -> float:
    """The longest the forwarder takes to stop: drain delay, in-flight requests, sinks' drain."""
    values = {name: value for name, value in env.items() if isinstance(value, str)}
    return duration(values, "FORWARDER_DRAIN_DELAY", "0s") + 2 * duration(
        values, "FORWARDER_SHUTDOWN_TIMEOUT", "10s"
    )


@pytest.mark.parametrize(
    ("name", "where"), [("my-app", "initContainers"), ("workos-forwarder", "containers")]
)
def test_the_forwarder_runs_hardened_probed_and_with_time_to_drain(name: str, where: str) -> None:
    pod = _all()[("Deployment", name)]["spec"]["template"]["spec"]
    (forwarder,) = [c for c in pod[where] if c["name"] == "workos-forwarder"]
    if where == "initContainers":
        assert forwarder["restartPolicy"] == "Always"  # a native sidecar

    assert forwarder["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert forwarder["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert forwarder["startupProbe"]["httpGet"]["path"] == "/healthz"
    # Probes and scrapes go to the admin listener the image configures, never the public port.
    ports = {port["name"]: port["containerPort"] for port in forwarder["ports"]}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"FORWARDER_ADMIN_PORT={ports['admin']}" in dockerfile
    assert "FORWARDER_ADMIN_HOST=0.0.0.0" in dockerfile
    assert f"FORWARDER_PORT={ports['forwarder']}" in dockerfile
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert forwarder[probe]["httpGet"]["port"] == "admin"
    annotations = _all()[("Deployment", name)]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["admin"])
    security = forwarder["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == UID
    assert f"ARG UID={UID}" in (ROOT / "Dockerfile").read_text()
    assert {"requests", "limits"} <= forwarder["resources"].keys()

    env = _env(forwarder)
    assert env["WORKOS_WEBHOOK_SECRET"]["secretKeyRef"]["key"] == "webhook-secret"
    assert all("secretKeyRef" in env[key] for key in env if "SECRET" in key or "KEY" in key or "URL" in key)
    assert pod["terminationGracePeriodSeconds"] > _stop_budget_s(env)

    (mount,) = forwarder["volumeMounts"]
    assert mount["mountPath"] == DATA_DIR and _dockerfile("VOLUME") == f'["{DATA_DIR}"]'
    assert f"FORWARDER_DATA_DIR={DATA_DIR}" in (ROOT / "Dockerfile").read_text()


def _labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def test_the_pod_and_service_monitors_scrape_the_forwarder_as_job_workos_forwarder() -> None:
    resources = _all()
    pod_monitor = resources[("PodMonitor", "my-app-workos-forwarder")]["spec"]
    sidecar_pod = resources[("Deployment", "my-app")]["spec"]["template"]
    assert (
        pod_monitor["selector"]["matchLabels"].items() <= _labels(resources[("Deployment", "my-app")]).items()
    )
    (endpoint,) = pod_monitor["podMetricsEndpoints"]
    ports = [port["name"] for c in sidecar_pod["spec"]["initContainers"] for port in c["ports"]]
    assert endpoint["port"] == "admin" in ports and endpoint["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "workos-forwarder", "action": "replace"} in endpoint[
        "relabelings"
    ]

    service_monitor = resources[("ServiceMonitor", "workos-forwarder")]["spec"]
    service = resources[("Service", "workos-forwarder")]  # its name becomes the job label
    assert service_monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    shared = resources[("Deployment", "workos-forwarder")]
    assert service["spec"]["selector"].items() <= _labels(shared).items()
    assert service_monitor["endpoints"][0]["port"] == "admin"
    assert "admin" in [port["name"] for port in service["spec"]["ports"]]


def test_the_prometheusrule_is_exactly_the_rules_in_monitors_prometheus() -> None:
    rules = yaml.safe_load((ROOT / "monitors" / "prometheus" / "workos-forwarder.rules.yml").read_text())
    rule = _all()[("PrometheusRule", "workos-forwarder")]
    assert rule["apiVersion"] == OPERATOR_API
    assert rule["spec"] == rules
    check = subprocess.run(
        [sys.executable, str(KUBERNETES / "prometheusrule.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
