"""End to end: the real service, a real Prometheus scraping it, the project's alert rules.

A burst of signed ``authentication.*_failed`` webhooks must bring
WorkOSAuthenticationFailureSpike to ``firing`` in Prometheus's ``/api/v1/alerts``; as many
successful sign-ins must leave it inactive. Prometheus scrapes and evaluates every second
and loads monitors/prometheus/workos-forwarder.rules.yml unchanged: the spike alert has no
``for`` and counts series born during the spike, so its real form fires within seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from forwarder.signature import sign
from tests.samples import make_event
from tests.service import SECRET, Service, free_port, wait_for

RULES = Path(__file__).resolve().parent.parent / "monitors" / "prometheus" / "workos-forwarder.rules.yml"
ALERT = "WorkOSAuthenticationFailureSpike"


def spike_threshold() -> int:
    """The number in the real rule, so the burst is sized from the file, not a copy of it."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == ALERT]
    match = re.search(r">\s*(\d+)\s*$", rule["expr"].strip())
    assert match, rule["expr"]
    return int(match.group(1))


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5).json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        return self.api("query", query=expression)["result"]

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [alert for alert in self.api("alerts")["alerts"] if alert["labels"]["alertname"] == name]

    def rule(self, name: str) -> dict[str, Any]:
        for group in self.api("rules")["groups"]:
            for rule in group["rules"]:
                if rule["name"] == name:
                    return {**rule, "group_last_evaluation": group["lastEvaluation"]}
        raise AssertionError(f"rule {name} is not loaded ({self.log.read_text()[-2000:]})")


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    reason = "prometheus not found: install Debian's 'prometheus' package (.ci/run does) for the alert e2e"
    if os.environ.get("FORWARDER_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def monitored(start_service: Callable[..., Service], tmp_path: Path) -> Iterator[tuple[Service, Prometheus]]:
    """The service, and a Prometheus scraping it every second with the project's rules loaded."""
    binary = prometheus_binary()
    service = start_service(JSONL_OUTPUT="off")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "workos-forwarder",
                        "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as output:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_for(
            lambda: (
                proc.poll() is None and httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200
            ),
            timeout=30,
            what=f"Prometheus ready ({log})",
        )
        wait_for(
            lambda: prometheus.query('up{job="workos-forwarder"} == 1'),
            timeout=30,
            what="Prometheus scraping the service",
        )
        assert prometheus.rule(ALERT)["state"] == "inactive"
        yield service, prometheus
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def post_events(service: Service, events: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=service.url, timeout=10) as client:
        for event in events:
            body = orjson.dumps(event)
            answer = client.post(
                "/webhooks/workos",
                content=body,
                headers={"content-type": "application/json", "workos-signature": sign(body, SECRET)},
            )
            assert answer.status_code == 200, answer.text


def scraped_total(prometheus: Prometheus, selector: str) -> float:
    result = prometheus.query(f"sum(workos_events_total{{{selector}}})")
    return float(result[0]["value"][1]) if result else 0.0


def test_a_burst_of_authentication_failures_fires_the_spike_alert(
    monitored: tuple[Service, Prometheus],
) -> None:
    service, prometheus = monitored
    threshold = spike_threshold()
    burst = threshold + 10
    failures = [make_event("authentication.password_failed") for _ in range(burst)]
    # a few failures of other kinds, below the threshold: they must not fire
    failures += [make_event("authentication.magic_auth_failed") for _ in range(5)]
    failures += [make_event("authentication.sso_failed") for _ in range(5)]
    post_events(service, failures)

    firing = wait_for(
        lambda: [a for a in prometheus.alerts(ALERT) if a["state"] == "firing"],
        timeout=45,
        what=f"{ALERT} firing ({prometheus.log})",
    )
    assert [alert["labels"]["event"] for alert in firing] == ["authentication.password_failed"]
    (alert,) = firing
    assert alert["labels"]["severity"] == "warning"
    # Not necessarily the whole burst: the alert may fire before the last of it is scraped.
    assert float(alert["value"]) > threshold
    assert alert["annotations"]["summary"].endswith("authentication.password_failed events in 5 minutes")


def test_successes_alone_leave_the_spike_alert_inactive(monitored: tuple[Service, Prometheus]) -> None:
    service, prometheus = monitored
    successes = 3 * spike_threshold()
    post_events(service, [make_event("authentication.password_succeeded") for _ in range(successes)])
    post_events(service, [make_event("authentication.sso_succeeded") for _ in range(10)])

    wait_for(
        lambda: scraped_total(prometheus, 'outcome="success"') >= successes + 10,
        timeout=30,
        what="Prometheus scraping the successes",
    )
    # Let the rules run several times over the scraped data before looking.
    seen = time.time()
    wait_for(
        lambda: _epoch(prometheus.rule(ALERT)["group_last_evaluation"]) > seen + 3,
        timeout=30,
        what="rule evaluations after the scrape",
    )
    rule = prometheus.rule(ALERT)
    assert rule["state"] == "inactive" and rule["alerts"] == []
    assert prometheus.alerts(ALERT) == []
    assert prometheus.query("workos:authentication_failures:increase5m") == []


def _epoch(rfc3339: str) -> float:
    """Prometheus prints nanoseconds; Python parses at most microseconds."""
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()
