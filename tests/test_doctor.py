"""``workos-forwarder doctor`` against real loopback doubles and a real running service.

The WorkOS API, Datadog (key validation and logs intake) and an OTLP receiver are the
doubles in tests/doubles; the public path goes through tests/doubles/reverse_proxy.py in
front of a real ``serve``. Each test sets up one situation a user meets and asserts the line
doctor prints for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from forwarder.doctor.report import Check
from forwarder.doctor.runner import run_checks
from tests.doubles.datadog_api import API_KEY as DD_KEY
from tests.doubles.datadog_api import DatadogApi
from tests.doubles.datadog_intake import DatadogIntake
from tests.doubles.otlp_receiver import OtlpReceiver
from tests.doubles.reverse_proxy import Mode, ReverseProxy
from tests.doubles.splunk_hec import SplunkHec
from tests.doubles.workos_api import API_KEY as WORKOS_KEY
from tests.doubles.workos_api import WorkOSEventsAPI, api_events
from tests.postgres import SERVER, journal_schema_or_skip
from tests.samples import make_event
from tests.service import SECRET, Service, free_port, wait_for

StartService = Callable[..., Service]
WEBHOOK_PATH = "/webhooks/workos"


@pytest.fixture
def workos() -> Iterator[WorkOSEventsAPI]:
    api = WorkOSEventsAPI().start()
    yield api
    api.stop()


@pytest.fixture
def datadog_api() -> Iterator[DatadogApi]:
    with DatadogApi() as api:
        yield api


@pytest.fixture
def intake() -> Iterator[DatadogIntake]:
    with DatadogIntake(DD_KEY) as server:
        yield server


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def hec() -> Iterator[SplunkHec]:
    with SplunkHec() as server:
        yield server


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """Only the webhook secret, a data dir and a port nothing listens on."""
    return {
        "WORKOS_WEBHOOK_SECRET": SECRET,
        "FORWARDER_DATA_DIR": str(tmp_path / "doctor"),
        "FORWARDER_PORT": str(free_port()),
    }


def doctor(env: dict[str, str], *, url: str | None = None, send_test_log: bool = False) -> dict[str, Check]:
    results = asyncio.run(run_checks(env, url=url, send_test_log=send_test_log))
    return {result.check: result for result in results}


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real command, in a process whose environment holds ``env`` and nothing of ours."""
    inherited = {name: os.environ[name] for name in ("PATH", "HOME", "PYTHONPATH") if name in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "forwarder.cli", "doctor", *args],
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- the whole path, healthy ---------------------------------------------------------------


def test_a_complete_healthy_setup_passes_every_check_and_stores_no_probe(
    start_service: StartService,
    workos: WorkOSEventsAPI,
    datadog_api: DatadogApi,
    intake: DatadogIntake,
    otlp: OtlpReceiver,
    hec: SplunkHec,
    tmp_path: Path,
) -> None:
    service = start_service()
    workos.connections.append({"id": "conn_01", "object": "connection"})
    workos.add(api_events(3))
    env = {
        "WORKOS_WEBHOOK_SECRET": SECRET,
        "FORWARDER_DATA_DIR": str(tmp_path / "doctor"),
        "FORWARDER_PORT": str(service.port),
        "WORKOS_API_KEY": WORKOS_KEY,
        "WORKOS_API_URL": workos.url,
        "DD_API_KEY": DD_KEY,
        "DD_API_URL": datadog_api.base_url,
        "DD_LOGS_URL": intake.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.base_url,
        "SPLUNK_HEC_URL": hec.base_url,
        "SPLUNK_HEC_TOKEN": hec.token,
    }
    run = cli(env, "--url", f"{service.url}{WEBHOOK_PATH}", "--send-test-log", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    results = {item["check"]: item for item in json.loads(run.stdout)}
    not_passed = {name: item for name, item in results.items() if item["status"] != "PASS"}
    assert not_passed == {}
    assert {
        "configuration",
        "webhook secret",
        "journal",
        "journal fsync",
        "journal disk",
        "clock",
        "workos api key",
        "workos event source",
        "workos events api",
        "workos activity",
        "datadog api key",
        "datadog intake",
        "datadog test log",
        "otlp",
        "splunk hec",
        "public path",
        "instance journal",
        "instance sink jsonl",
    } <= set(results)
    assert "3 event(s) in the last 24 h" in results["workos activity"]["detail"]
    # The test log is the only log sent, tagged doctor:true; the OTLP probe carried no record.
    (log,) = intake.received()
    assert "doctor:true" in log["ddtags"]
    assert otlp.requests()[0].records == 0 and otlp.logs() == []
    assert hec.indexed() == [] and hec.token not in run.stdout
    # The signed probe was verified and answered, and reached no sink and no counter.
    assert service.records() == []
    assert service.status()["journal"]["events"] == 0
    assert service.metric("workos_webhook_requests_total", result="accepted") == 0
    for secret in (SECRET, WORKOS_KEY, DD_KEY):
        assert secret not in run.stdout + run.stderr


# -- public path through a proxy -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "doctor_secret", "status", "finding", "fix"),
    [
        ("pass", SECRET, "PASS", "verified the signed test event", ""),
        ("drop_signature", SECRET, "FAIL", "a proxy dropped it", "WorkOS-Signature"),
        ("reserialize", SECRET, "FAIL", "body was modified on the way", "raw body"),
        (
            "pass",
            "whsec_another_secret_0123456789",
            "FAIL",
            "arrived intact but the secret differs",
            "WORKOS_WEBHOOK_SECRET",
        ),
    ],
)
def test_the_public_path_tells_each_proxy_fault_apart(
    start_service: StartService,
    base_env: dict[str, str],
    mode: Mode,
    doctor_secret: str,
    status: str,
    finding: str,
    fix: str,
) -> None:
    service = start_service()
    with ReverseProxy(service.url, mode) as proxy:
        results = doctor(
            {**base_env, "WORKOS_WEBHOOK_SECRET": doctor_secret}, url=f"{proxy.base_url}{WEBHOOK_PATH}"
        )
        assert proxy.forwarded == 1
    result = results["public path"]
    assert result.status == status and finding in result.detail, result
    assert fix in result.fix
    assert service.records() == [] and service.status()["journal"]["events"] == 0


def test_the_public_path_reports_a_wrong_path_an_unreachable_url_and_no_url(
    start_service: StartService, base_env: dict[str, str]
) -> None:
    service = start_service()
    wrong = doctor(base_env, url=f"{service.url}/webhooks/wrong")["public path"]
    assert wrong.status == "FAIL" and "404" in wrong.detail and "FORWARDER_WEBHOOK_PATH" in wrong.fix
    down = doctor(base_env, url=f"{closed_url()}{WEBHOOK_PATH}")["public path"]
    assert down.status == "FAIL" and "cannot reach" in down.detail
    assert doctor(base_env)["public path"].status == "SKIP"


def test_an_ordinary_event_is_still_stored_next_to_the_doctor_type(start_service: StartService) -> None:
    service = start_service()
    assert service.post(make_event("user.created", id="event_regular_1")).json()["status"] == "accepted"
    assert service.post(make_event("forwarder.doctor", id="event_doctor_1")).json()["status"] == "doctor"
    wait_for(lambda: service.record_ids() == ["event_regular_1"], what="the regular event delivered")
    rejected = service.post(
        make_event("forwarder.doctor", id="event_doctor_2"), secret="whsec_wrong_0123456789"
    )
    assert rejected.status_code == 401 and len(rejected.json()["received_sha256"]) == 16


# -- WorkOS API and clock ------------------------------------------------------------------


def test_a_rejected_api_key_fails_and_is_never_printed(
    workos: WorkOSEventsAPI, base_env: dict[str, str]
) -> None:
    wrong = "sk_test_not_the_right_key_42"
    results = doctor({**base_env, "WORKOS_API_KEY": wrong, "WORKOS_API_URL": workos.url})
    result = results["workos api key"]
    assert result.status == "FAIL" and "401" in result.detail and "WORKOS_API_KEY" in result.fix
    assert "workos events api" not in results
    assert all(wrong not in r.detail + r.fix for r in results.values())


def test_no_event_source_and_no_recent_events_warn_with_the_filter_named(
    workos: WorkOSEventsAPI, base_env: dict[str, str]
) -> None:
    workos.add(api_events(2, start=1_000_000_000))  # long ago: outside the last 24 h
    results = doctor({**base_env, "WORKOS_API_KEY": WORKOS_KEY, "WORKOS_API_URL": workos.url})
    assert results["workos api key"].status == "PASS"
    assert results["workos event source"].status == "WARN"
    assert results["workos events api"].status == "PASS"
    activity = results["workos activity"]
    assert activity.status == "WARN" and "no activity yet, or the filter excludes it" in activity.detail
    assert "WORKOS_EVENTS" in activity.fix


def test_a_directory_counts_as_an_event_source(workos: WorkOSEventsAPI, base_env: dict[str, str]) -> None:
    workos.directories.append({"id": "directory_01", "object": "directory"})
    result = doctor({**base_env, "WORKOS_API_KEY": WORKOS_KEY, "WORKOS_API_URL": workos.url})[
        "workos event source"
    ]
    assert result.status == "PASS" and "directories" in result.detail


def test_an_events_filter_the_api_refuses_fails_with_the_variable(
    workos: WorkOSEventsAPI, base_env: dict[str, str]
) -> None:
    env = {
        **base_env,
        "WORKOS_API_KEY": WORKOS_KEY,
        "WORKOS_API_URL": workos.url,
        "WORKOS_EVENTS": "no.such_type",
    }
    result = doctor(env)["workos events api"]
    assert result.status == "FAIL" and "422" in result.detail and "WORKOS_EVENTS" in result.fix


@pytest.mark.parametrize(("offset", "status"), [(0, "PASS"), (-100, "WARN"), (400, "FAIL")])
def test_the_clock_is_judged_against_the_workos_date_header(
    workos: WorkOSEventsAPI, base_env: dict[str, str], offset: float, status: str
) -> None:
    workos.clock_offset_s = offset
    # No API key: any answer of the WorkOS API (here a 401) carries its Date.
    result = doctor({**base_env, "WORKOS_API_URL": workos.url})["clock"]
    assert result.status == status, result
    if status != "PASS":
        direction = "ahead of" if offset < 0 else "behind"
        assert direction in result.detail and "NTP" in result.fix
    if status == "WARN":
        assert "FORWARDER_SIGNATURE_TOLERANCE" in result.fix


def test_an_unreachable_workos_api_fails_and_unset_settings_skip(
    base_env: dict[str, str],
) -> None:
    down = doctor({**base_env, "WORKOS_API_KEY": WORKOS_KEY, "WORKOS_API_URL": closed_url()})
    assert down["clock"].status == "FAIL" and "WORKOS_API_URL" in down["clock"].fix
    assert down["workos api key"].status == "FAIL" and "cannot reach" in down["workos api key"].detail
    unset = {key: value for key, value in base_env.items() if key != "WORKOS_WEBHOOK_SECRET"}
    assert doctor(unset)["clock"].status == "SKIP"
    assert doctor(base_env)["workos api key"].status == "SKIP"


# -- Datadog -------------------------------------------------------------------------------


def test_a_datadog_key_of_another_site_fails_validation_and_intake(
    datadog_api: DatadogApi, intake: DatadogIntake, base_env: dict[str, str]
) -> None:
    wrong = "0123456789abcdef0123456789abcdef"
    env = {**base_env, "DD_API_KEY": wrong, "DD_API_URL": datadog_api.base_url, "DD_LOGS_URL": intake.url}
    results = doctor(env, send_test_log=True)
    assert results["datadog api key"].status == "FAIL" and "DD_SITE" in results["datadog api key"].fix
    assert results["datadog intake"].status == "FAIL" and "401" in results["datadog intake"].detail
    assert results["datadog test log"].status == "FAIL"
    assert intake.received() == []


def test_datadog_intake_failures_and_an_undecided_validation(
    intake: DatadogIntake, otlp: OtlpReceiver, base_env: dict[str, str]
) -> None:
    env = {**base_env, "DD_API_KEY": DD_KEY, "DD_API_URL": otlp.base_url, "DD_LOGS_URL": intake.url}
    intake.fail_next(500)
    results = doctor(env)
    assert results["datadog api key"].status == "WARN" and "404" in results["datadog api key"].detail
    assert results["datadog intake"].status == "FAIL" and "500" in results["datadog intake"].detail
    assert (
        results["datadog test log"].status == "SKIP"
        and "--send-test-log" in results["datadog test log"].detail
    )
    down = doctor({**env, "DD_LOGS_URL": f"{closed_url()}/api/v2/logs", "DD_API_URL": closed_url()})
    assert down["datadog intake"].status == "FAIL" and "DD_LOGS_URL" in down["datadog intake"].fix
    assert down["datadog api key"].status == "FAIL" and "cannot reach" in down["datadog api key"].detail


def test_a_bad_dd_site_fails_configuration_and_datadog(base_env: dict[str, str]) -> None:
    results = doctor({**base_env, "DD_API_KEY": DD_KEY, "DD_SITE": "datadog.com"})
    assert results["configuration"].status == "FAIL" and "DD_SITE" in results["configuration"].fix
    assert results["datadog"].status == "FAIL" and "DD_SITE" in results["datadog"].fix
    assert doctor(base_env)["datadog"].status == "SKIP"


# -- OTLP ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "status", "fix"),
    [
        (None, "PASS", ""),
        (401, "FAIL", "OTEL_EXPORTER_OTLP_HEADERS"),
        (503, "FAIL", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ],
)
def test_the_otlp_endpoint_gets_an_empty_export_request(
    otlp: OtlpReceiver, base_env: dict[str, str], answer: int | None, status: str, fix: str
) -> None:
    if answer is not None:
        otlp.fail_next(answer)
    env = {
        **base_env,
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": otlp.url,
        "OTEL_EXPORTER_OTLP_HEADERS": "x-token=t0ken-value",
    }
    result = doctor(env)["otlp"]
    assert result.status == status and fix in result.fix, result
    assert otlp.requests()[0].headers["x-token"] == "t0ken-value"
    assert otlp.logs() == []


def test_the_otlp_check_fails_unreachable_or_misconfigured_and_skips_unset(base_env: dict[str, str]) -> None:
    down = doctor({**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": closed_url()})["otlp"]
    assert down.status == "FAIL" and "cannot reach" in down.detail
    wrong = doctor({**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})["otlp"]
    assert wrong.status == "FAIL" and "OTEL_EXPORTER_OTLP_ENDPOINT" in wrong.fix
    assert doctor(base_env)["otlp"].status == "SKIP"


# -- journal -------------------------------------------------------------------------------


def test_an_unusable_data_dir_fails_the_journal_check(base_env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = doctor({**base_env, "FORWARDER_DATA_DIR": str(blocker / "data")})["journal"]
    assert result.status == "FAIL" and "FORWARDER_DATA_DIR" in result.detail + result.fix


def test_a_journal_cap_beyond_the_free_disk_warns(base_env: dict[str, str]) -> None:
    result = doctor({**base_env, "FORWARDER_JOURNAL_MAX_BYTES": str(10**18)})["journal disk"]
    assert result.status == "WARN" and "FORWARDER_JOURNAL_MAX_BYTES" in result.fix


@pytest.mark.parametrize(("synchronous", "status"), [("on", "PASS"), ("off", "WARN")])
def test_a_postgresql_journal_reports_version_and_synchronous_commit(
    base_env: dict[str, str], synchronous: str, status: str
) -> None:
    with journal_schema_or_skip("doctor") as (_, schema):
        options = quote(f"-csearch_path={schema} -csynchronous_commit={synchronous}")
        url = f"{SERVER.replace('postgres@', 'postgres:pg-secret-pw@')}?options={options}"
        results = doctor({**base_env, "FORWARDER_JOURNAL_URL": url})
    assert results["journal"].status == "PASS"
    server = results["journal postgresql"]
    assert server.status == status and f"synchronous_commit={synchronous}" in server.detail
    assert "PostgreSQL " in server.detail
    assert (
        results["journal fsync"].status in ("PASS", "WARN")
        and "durable commit" in results["journal fsync"].detail
    )
    assert "journal disk" not in results
    assert all("pg-secret-pw" not in r.detail + r.fix for r in results.values())


def test_an_unreachable_postgresql_fails_the_journal_check(base_env: dict[str, str]) -> None:
    url = f"postgresql://app:pg-secret-pw@127.0.0.1:{free_port()}/journal?connect_timeout=2"
    result = doctor({**base_env, "FORWARDER_JOURNAL_URL": url})["journal"]
    assert result.status == "FAIL" and "FORWARDER_JOURNAL_URL" in result.detail + result.fix
    assert "pg-secret-pw" not in result.detail


# -- the running instance -------------------------------------------------------------------


def test_a_running_instance_with_a_failing_sink_is_summarised(
    start_service: StartService, intake: DatadogIntake, base_env: dict[str, str]
) -> None:
    service = start_service(DD_API_KEY="a-key-datadog-refuses", DD_LOGS_URL=intake.url)
    assert service.post(make_event("user.created")).status_code == 200
    wait_for(lambda: not service.status()["sinks"]["datadog"]["healthy"], what="the datadog sink unhealthy")
    results = doctor({**base_env, "FORWARDER_PORT": str(service.port)})
    sink = results["instance sink datadog"]
    assert sink.status == "WARN" and "unhealthy" in sink.detail and "DD_API_KEY" in sink.fix
    assert results["instance sink jsonl"].status == "PASS"
    assert results["instance journal"].status == "PASS" and "1 events" in results["instance journal"].detail


def test_the_instance_check_skips_when_nothing_listens_and_fails_on_another_program(
    otlp: OtlpReceiver, base_env: dict[str, str]
) -> None:
    assert doctor(base_env)["instance"].status == "SKIP"
    other = doctor({**base_env, "FORWARDER_PORT": str(otlp.port)})["instance"]
    assert other.status == "FAIL" and "FORWARDER_PORT" in other.fix


# -- the command ---------------------------------------------------------------------------


def test_configuration_errors_fail_with_the_variable_and_skip_what_depends_on_them(
    base_env: dict[str, str],
) -> None:
    results = doctor({**base_env, "FORWARDER_PORT": "eighty"})
    assert results["configuration"].status == "FAIL" and "FORWARDER_PORT" in results["configuration"].detail
    assert results["journal"].status == "SKIP" and results["instance"].status == "SKIP"


def test_exit_status_text_and_json_and_no_secret_in_either(
    workos: WorkOSEventsAPI, datadog_api: DatadogApi, tmp_path: Path
) -> None:
    quoted = '"whsec_quoted_secret_value_0123"'
    env = {
        "WORKOS_WEBHOOK_SECRET": f"{quoted},whsec_second_secret_value_4567",
        "FORWARDER_DATA_DIR": str(tmp_path / "cli"),
        "FORWARDER_PORT": str(free_port()),
        "WORKOS_API_KEY": "sk_test_rejected_key_0123",
        "WORKOS_API_URL": workos.url,
        "DD_API_KEY": "dd0123456789wrongkey",
        "DD_API_URL": datadog_api.base_url,
        "DD_LOGS_URL": f"{closed_url()}/api/v2/logs",
    }
    text = cli(env)
    assert text.returncode == 1, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("PASS  configuration")
    assert any(line.startswith("FAIL  webhook secret #1") and "quote" in line for line in lines)
    assert any(line.startswith("PASS  webhook secret #2") for line in lines)
    as_json = cli(env, "--json")
    assert as_json.returncode == 1
    parsed = json.loads(as_json.stdout)
    assert [item["status"] for item in parsed] == [line.split()[0] for line in lines]
    for output in (text.stdout + text.stderr, as_json.stdout + as_json.stderr):
        for secret in (
            "whsec_quoted_secret_value_0123",
            "whsec_second_secret_value_4567",
            "sk_test_rejected_key_0123",
            "dd0123456789wrongkey",
        ):
            assert secret not in output


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    env = {"WORKOS_WEBHOOK_SECRET": SECRET, "FORWARDER_DATA_DIR": str(tmp_path)}
    assert cli(env, "--url", "hooks.example.com/webhooks").returncode == 2
    assert cli(env, "--no-such-option").returncode == 2


def test_an_unreadable_forwarder_config_is_a_failed_check(tmp_path: Path) -> None:
    env = {
        "WORKOS_WEBHOOK_SECRET": SECRET,
        "FORWARDER_DATA_DIR": str(tmp_path),
        "FORWARDER_PORT": str(free_port()),
        "FORWARDER_CONFIG": str(tmp_path / "missing.toml"),
    }
    run = cli(env, "--json")
    assert run.returncode == 1
    first = json.loads(run.stdout)[0]
    assert (
        first["check"] == "configuration" and first["status"] == "FAIL" and "FORWARDER_CONFIG" in first["fix"]
    )
