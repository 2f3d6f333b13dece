"""Prometheus rules and the Grafana dashboard: valid, unit-tested with promtool, built on real metrics.

``promtool test rules`` runs the scenarios in monitors/prometheus/tests/ (a spike on a
series born mid-spike, probing vs a wrong secret, the very first dead letter...). The other
tests make sure every metric the rules and the dashboard query is one the forwarder exposes,
so renaming a metric in forwarder/metrics.py cannot silently blind an alert.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import sinks.prometheus  # noqa: F401  (registers workos_events_total on the shared registry)
from forwarder.metrics import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "monitors" / "prometheus" / "workos-forwarder.rules.yml"
RULE_TESTS = sorted((ROOT / "monitors" / "prometheus" / "tests").glob("*.yml"))
GRAFANA = ROOT / "dashboards" / "grafana" / "workos-forwarder.json"
# Grafana's variables, replaced by what they stand for when checking the queries offline.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def promtool() -> str:
    """Path of promtool; skip loudly when missing unless FORWARDER_REQUIRE_SERVICES=1 (then fail)."""
    found = shutil.which("promtool")
    if found:
        return found
    reason = (
        "promtool not found: install Debian's 'prometheus' package (.ci/run does) to test the alert rules"
    )
    if os.environ.get("FORWARDER_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def grafana_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(GRAFANA.read_text())
    queries = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    queries += [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]
    return queries


def test_rules_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_rules_pass_their_promtool_unit_tests() -> None:
    assert RULE_TESTS
    result = run_promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_issue_alert_exists_with_severity_and_a_first_response() -> None:
    found = alerts()
    assert set(found) >= {
        "WorkOSAuthenticationFailureSpike",
        "WorkOSWebhookSignatureFailures",
        "WorkOSForwarderSinkLag",
        "WorkOSForwarderDeadLettersGrowing",
        "WorkOSForwarderDown",
    }
    for name, rule in found.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["labels"]["service"] == "workos-forwarder", name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name
        assert rule["annotations"]["runbook"] == f"docs/monitors.md#{name.lower()}", name


def exposed_series() -> set[str]:
    """Series names the forwarder's /metrics can show, from the registry's metric families."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes[family.type]}


def metric_names(expression: str) -> set[str]:
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    return set(re.findall(r"\bworkos[a-z0-9_:]*", without_strings))


@pytest.mark.parametrize(
    ("where", "expression"),
    [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()] + grafana_queries(),
)
def test_every_metric_queried_is_exposed_by_the_forwarder_or_recorded(where: str, expression: str) -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    names = metric_names(expression)
    assert names or "up{" in expression or "ALERTS" in expression, where
    unknown = names - exposed_series() - recorded
    assert not unknown, (
        f"{where}: {sorted(unknown)} is neither in forwarder.metrics.REGISTRY nor a recording rule"
    )


def test_grafana_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each dashboard query as a recording rule, Grafana's variables filled in."""
    records = []
    for index, (_, expression) in enumerate(grafana_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expression = expression.replace(variable, value)
        records.append({"record": f"grafana:query_{index}", "expr": expression})
    check = tmp_path / "grafana.rules.yml"
    check.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": records}]}))
    result = run_promtool("check", "rules", str(check))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_is_importable() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


# --- Alerts on the detection engine's firings (monitors/prometheus/workos-detections.rules.yml) ---

DETECTION_RULES = ROOT / "monitors" / "prometheus" / "workos-detections.rules.yml"
MONITORS_DOC = ROOT / "docs" / "monitors.md"


def detection_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(DETECTION_RULES.read_text())["groups"] for rule in group["rules"]
    ]


def test_detection_rules_pass_promtool_check_and_have_unit_tests() -> None:
    result = run_promtool("check", "rules", str(DETECTION_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(detection_rules())} rules found" in result.stdout
    tested = [path for path in RULE_TESTS if "../workos-detections.rules.yml" in path.read_text()]
    assert tested, "no promtool test loads workos-detections.rules.yml"


def test_detection_alerts_page_on_high_and_warn_on_low_with_a_runbook_section() -> None:
    found = {rule["alert"]: rule for rule in detection_rules() if "alert" in rule}
    assert {name: rule["labels"]["severity"] for name, rule in found.items()} == {
        "WorkOSDetectionFired": "critical",
        "WorkOSDetectionFiredLowSeverity": "warning",
    }
    headings = set(re.findall(r"^### (\w+)$", MONITORS_DOC.read_text(), re.MULTILINE))
    for name, rule in found.items():
        assert rule["labels"]["service"] == "workos-forwarder", name
        assert rule["annotations"]["runbook"] == f"docs/monitors.md#{name.lower()}", name
        assert name in headings, name


@pytest.mark.skipif(
    "workos_detections" not in {family.name for family in REGISTRY.collect()},
    reason="workos_detections_total comes with the detection engine (forwarder/metrics.py, detections)",
)
@pytest.mark.parametrize("rule", detection_rules(), ids=lambda rule: rule.get("alert") or rule["record"])
def test_the_detection_rules_query_the_engine_s_counter(rule: dict[str, Any]) -> None:
    recorded = {r["record"] for r in detection_rules() if "record" in r}
    names = metric_names(rule["expr"])
    assert names and not names - exposed_series() - recorded, names
