"""What an operator meets: failing sinks, dead letters, crashes, shutdown, config errors, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import with_flaky_sink
from tests.samples import make_event
from tests.service import SECRET, Service, wait_for

StartService = Callable[..., Service]


def _flaky_ids(tmp_path: Path) -> list[str]:
    out = tmp_path / "flaky.out"
    return out.read_text().split() if out.exists() else []


def test_failing_sink_does_not_hold_back_others_and_dead_letters_replay(
    start_service: StartService, tmp_path: Path
) -> None:
    service = start_service(FORWARDER_MAX_ATTEMPTS="2", **with_flaky_sink(tmp_path, "permanent"))
    events = [make_event("authentication.sso_failed") for _ in range(5)]

    assert [service.post(event).status_code for event in events] == [200] * 5

    ids = [event["id"] for event in events]
    wait_for(lambda: sorted(service.record_ids()) == sorted(ids), what="jsonl to get every event")
    wait_for(
        lambda: service.status()["sinks"]["flaky"]["dead_letters"] == 5, what="5 dead letters", timeout=30
    )
    flaky = service.status()["sinks"]["flaky"]
    assert flaky["lag_events"] == 0
    assert "reject everything" in flaky["last_error"]
    assert _flaky_ids(tmp_path) == []

    listing = service.cli("dlq", "list", "--sink", "flaky")
    assert listing.returncode == 0, listing.stderr
    assert all(event_id in listing.stdout for event_id in ids)
    assert "reject everything" in listing.stdout

    (tmp_path / "flaky.control").write_text("ok")
    replay = service.cli("dlq", "replay", "--sink", "flaky", "--event-id", ids[0])
    assert replay.returncode == 0, replay.stderr
    assert "1 dead letter" in replay.stdout
    wait_for(lambda: _flaky_ids(tmp_path) == [ids[0]], what="the replayed event on the flaky sink")

    service.cli("dlq", "replay", "--sink", "flaky")
    wait_for(lambda: sorted(_flaky_ids(tmp_path)) == sorted(ids), what="all replayed events")
    wait_for(
        lambda: service.status()["sinks"]["flaky"]["dead_letters"] == 0, what="the dead-letter table to empty"
    )
    assert service.metric("workos_forwarder_sink_dead_lettered_total", sink="flaky") == 5


def test_retryable_failure_delivers_everything_once_the_sink_recovers(
    start_service: StartService, tmp_path: Path
) -> None:
    service = start_service(**with_flaky_sink(tmp_path, "retryable"))
    ids = [make_event("user.created") for _ in range(20)]
    for event in ids:
        assert service.post(event).status_code == 200
    wait_for(lambda: len(service.records()) == 20, what="jsonl to advance while flaky fails")
    wait_for(lambda: service.status()["sinks"]["flaky"]["last_error"], what="the flaky error in /status")
    assert service.status()["sinks"]["flaky"]["lag_events"] == 20

    (tmp_path / "flaky.control").write_text("ok")

    wait_for(lambda: len(_flaky_ids(tmp_path)) == 20, what="flaky to catch up", timeout=40)
    assert sorted(_flaky_ids(tmp_path)) == sorted(event["id"] for event in ids)
    assert service.status()["sinks"]["flaky"]["dead_letters"] == 0


def test_the_journal_gauges_are_read_when_metrics_is_scraped(
    start_service: StartService, tmp_path: Path
) -> None:
    service = start_service(**with_flaky_sink(tmp_path, "retryable"))

    def scrape() -> dict[tuple[str, str], float]:
        """The journal's size, flaky's lag and dead letters, from one scrape of /metrics."""
        wanted = {
            "workos_forwarder_journal_events",
            "workos_forwarder_sink_lag_events",
            "workos_forwarder_dead_letters",
        }
        return {
            (sample.name, sample.labels.get("sink", "")): sample.value
            for family in text_string_to_metric_families(service.metrics())
            for sample in family.samples
            if sample.name in wanted and sample.labels.get("sink", "flaky") == "flaky"
        }

    for _ in range(3):
        assert service.post(make_event("user.created")).status_code == 200
    # No waiting: the scrape itself reads the journal.
    assert scrape() == {
        ("workos_forwarder_journal_events", ""): 3,
        ("workos_forwarder_sink_lag_events", "flaky"): 3,
        ("workos_forwarder_dead_letters", "flaky"): 0,
    }
    time.sleep(1.0)  # older than the most the gauges may be
    for _ in range(2):
        assert service.post(make_event("user.created")).status_code == 200
    after = scrape()
    assert after[("workos_forwarder_journal_events", "")] == 5
    assert after[("workos_forwarder_sink_lag_events", "flaky")] == 5


def test_every_acknowledged_event_survives_sigkill(start_service: StartService) -> None:
    service = start_service()
    acknowledged = []
    for _ in range(200):
        event = make_event("authentication.magic_auth_succeeded")
        if service.post(event).status_code == 200:
            acknowledged.append(event["id"])
    service.stop(signal.SIGKILL)

    service.start()

    wait_for(
        lambda: set(acknowledged) <= set(service.record_ids()), what="every acknowledged event after restart"
    )
    delivered = service.record_ids()
    duplicates = len(delivered) - len(set(delivered))
    assert len(set(delivered)) == len(acknowledged)
    assert duplicates <= len(acknowledged)  # at least once: a replay after the crash is allowed


def test_sigterm_drains_and_exits_cleanly(start_service: StartService) -> None:
    service = start_service()
    ids = []
    for _ in range(50):
        event = make_event("session.created")
        assert service.post(event).status_code == 200
        ids.append(event["id"])

    # uvicorn re-raises the signal after its graceful shutdown, so the exit status says SIGTERM.
    assert service.stop(signal.SIGTERM) in (0, -signal.SIGTERM)

    assert sorted(service.record_ids()) == sorted(ids)
    assert "forwarder stopped" in service.stderr_path.read_text()


def test_health_endpoints(start_service: StartService) -> None:
    service = start_service()
    assert httpx.get(f"{service.url}/healthz").json() == {"alive": True}
    ready = httpx.get(f"{service.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    status = service.status()
    assert set(status["sinks"]) == {"jsonl", "prometheus"}
    assert status["journal"]["events"] == 0


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("FORWARDER_", "WORKOS_"))}
    return subprocess.run(
        [sys.executable, "-m", "forwarder.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "WORKOS_WEBHOOK_SECRET"),
        ({"WORKOS_WEBHOOK_SECRET": "s", "FORWARDER_PORT": "eighty"}, "FORWARDER_PORT"),
        ({"WORKOS_WEBHOOK_SECRET": "s", "FORWARDER_REDACT": "email"}, "FORWARDER_REDACT_KEY"),
        ({"WORKOS_WEBHOOK_SECRET": "s", "FORWARDER_RETENTION": "forever"}, "FORWARDER_RETENTION"),
        ({"WORKOS_WEBHOOK_SECRET": "s", "FORWARDER_JOURNAL_URL": "mysql://x"}, "FORWARDER_JOURNAL_URL"),
    ],
)
def test_config_error_names_the_variable_and_exits_non_zero(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    result = _run_cli("serve", env={"FORWARDER_DATA_DIR": str(tmp_path), **env})
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_a_data_dir_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _run_cli(
        "serve", env={"WORKOS_WEBHOOK_SECRET": "s", "FORWARDER_DATA_DIR": str(blocker / "data")}
    )
    assert result.returncode == 2
    assert "FORWARDER_DATA_DIR" in result.stderr and "Not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_sign_prints_a_header_and_curl_line_the_service_accepts(
    start_service: StartService, tmp_path: Path
) -> None:
    service = start_service()
    event_file = tmp_path / "event.json"
    event_file.write_bytes(httpx.Response(200, json=make_event("user.created")).content)

    result = _run_cli(
        "sign",
        str(event_file),
        "--url",
        f"{service.url}/webhooks/workos",
        env={"WORKOS_WEBHOOK_SECRET": SECRET},
    )

    assert result.returncode == 0, result.stderr
    header_line, curl_line = result.stdout.strip().splitlines()
    assert curl_line.startswith("curl ")
    curl = subprocess.run(curl_line, shell=True, capture_output=True, text=True, timeout=10)
    assert '"accepted"' in curl.stdout, curl.stdout + curl.stderr
    header = header_line.split(": ", 1)[1]
    response = httpx.post(
        f"{service.url}/webhooks/workos",
        content=event_file.read_bytes(),
        headers={"workos-signature": header},
    )
    assert response.json()["status"] == "duplicate"


def test_every_command_has_help() -> None:
    top = _run_cli("--help", env={})
    assert top.returncode == 0
    for command in ("serve", "sign", "dlq"):
        assert command in top.stdout
    for args in (["serve"], ["sign"], ["dlq"], ["dlq", "list"], ["dlq", "replay"]):
        result = _run_cli(*args, "--help", env={})
        assert result.returncode == 0, args
        assert "Usage" in result.stdout
