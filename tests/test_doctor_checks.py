"""The pure parts of ``workos-forwarder doctor``: verdicts from values, every branch."""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest

from forwarder.config import ConfigError, Settings
from forwarder.doctor.datadog import TEST_LOG_TAGS, probe_log, validation_url
from forwarder.doctor.instance import status_url, summarise
from forwarder.doctor.journal import LOW_FREE_BYTES, SQLITE_SLOW_FIX, disk_room, fsync_verdict
from forwarder.doctor.public_path import body_digest, judge_answer, probe_body
from forwarder.doctor.report import (
    Check,
    exit_status,
    failed,
    passed,
    redact,
    render_json,
    render_text,
    scrubbed,
    skipped,
    warned,
)
from forwarder.doctor.runner import secret_values
from forwarder.doctor.secrets import check_webhook_secrets, judge_secret
from forwarder.doctor.workos import classify_skew, skew_from_date

GOOD = "whsec_0FWAiVGkEfGBqqsJH4aNAGBJ4"

# -- webhook secrets ---------------------------------------------------------------------


def test_a_well_formed_secret_passes_without_being_echoed() -> None:
    (result,) = check_webhook_secrets(GOOD)
    assert (result.check, result.status) == ("webhook secret", "PASS")
    assert GOOD not in result.detail and "31 characters" in result.detail


@pytest.mark.parametrize("raw", [None, "", "   ", " , "])
def test_an_unset_secret_fails_naming_the_variable(raw: str | None) -> None:
    (result,) = check_webhook_secrets(raw)
    assert result.status == "FAIL" and "WORKOS_WEBHOOK_SECRET" in result.fix


@pytest.mark.parametrize(
    ("value", "status", "finding"),
    [
        (f'"{GOOD}"', "FAIL", "quote"),
        (f"'{GOOD}'", "FAIL", "quote"),
        (f"\u201c{GOOD}\u201d", "FAIL", "quote"),
        ("whsec_0FWAiVGk EfGBqqsJH4aNAGBJ4", "FAIL", "whitespace inside"),
        ("whsec_0FWAiVGk\u00e9EfGBqqsJH4aNAGBJ4", "FAIL", "non-ASCII"),
        ("whsec_0FWAiVGk\x07EfGBqqsJH4aNAGBJ4", "FAIL", "non-ASCII or control"),
        ("sk_test_0123456789abcdefghij", "FAIL", "API key"),
        ("client_01HXYZ0123456789ABCDEF", "FAIL", "client id"),
        ("v1=" + "a" * 64, "FAIL", "Signature header"),
        ("https://hooks.example.com/x", "FAIL", "a URL"),
        ("whsec_change_me_0123456789", "FAIL", "placeholder"),
        (f" {GOOD}\n", "WARN", "leading or trailing whitespace"),
        ("whsec_short", "WARN", "shorter than"),
        ("Yb7QmT2pXk9LwR4sVz8NcE3h", "WARN", "does not look like"),
        ("whsec_abc.def/ghi+jklmnopq", "WARN", "does not look like"),
    ],
)
def test_each_secret_shape_problem_has_its_verdict(value: str, status: str, finding: str) -> None:
    result = judge_secret("webhook secret", value)
    assert result.status == status, result
    assert finding in result.detail
    assert "WORKOS_WEBHOOK_SECRET" in result.fix
    assert value.strip().strip("\"'\u201c\u201d") not in result.detail + result.fix


def test_every_secret_of_a_rotation_is_checked_on_its_own_line() -> None:
    other = "whsec_R0tat3dSecretValue12345"
    results = check_webhook_secrets(f"{GOOD}, '{other}',,{GOOD}")
    assert [(r.check, r.status) for r in results] == [
        ("webhook secret #1", "PASS"),
        ("webhook secret #2", "FAIL"),
        ("webhook secret #3", "WARN"),
        ("webhook secret #4", "WARN"),
    ]
    assert "stray comma" in results[2].detail and "repeats secret #1" in results[3].detail


# -- clock -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skew", "status"),
    [
        (0.0, "PASS"),
        (59.9, "PASS"),
        (-60.0, "PASS"),
        (60.5, "WARN"),
        (-61, "WARN"),
        (180, "WARN"),
        (180.1, "FAIL"),
        (-500, "FAIL"),
    ],
)
def test_skew_is_judged_against_a_third_and_the_whole_tolerance(skew: float, status: str) -> None:
    assert classify_skew(skew, 180.0) == status


def test_skew_is_read_from_the_date_header_at_the_middle_of_the_round_trip() -> None:
    server = 1_700_000_000.0
    date = formatdate(server, usegmt=True)
    assert skew_from_date(date, server + 100, server + 101) == pytest.approx(100.0)
    assert skew_from_date(date, server - 50.5, server - 49.5) == pytest.approx(-50.5)
    with pytest.raises((TypeError, ValueError)):
        skew_from_date("yesterday", server, server)


# -- journal -----------------------------------------------------------------------------


def test_fsync_over_20_ms_warns_with_the_variable_to_change() -> None:
    assert fsync_verdict(3.0, "fsync", SQLITE_SLOW_FIX).status == "PASS"
    assert fsync_verdict(20.0, "fsync", SQLITE_SLOW_FIX).status == "PASS"
    slow = fsync_verdict(25.0, "fsync", SQLITE_SLOW_FIX)
    assert slow.status == "WARN" and "FORWARDER_DATA_DIR" in slow.fix and "25.0 ms" in slow.detail


def test_free_disk_is_judged_against_the_journal_cap() -> None:
    gib = 1 << 30
    assert disk_room(10 * gib, gib, 5 * gib).status == "PASS"
    short = disk_room(2 * gib, gib, 5 * gib)
    assert short.status == "WARN" and "FORWARDER_JOURNAL_MAX_BYTES" in short.fix
    assert disk_room(10 * gib, gib, 0).status == "PASS"
    uncapped_low = disk_room(LOW_FREE_BYTES - 1, gib, 0)
    assert uncapped_low.status == "WARN" and "FORWARDER_JOURNAL_MAX_BYTES" in uncapped_low.fix


# -- public path -------------------------------------------------------------------------


def test_the_probe_body_changes_when_a_proxy_reserializes_it() -> None:
    body = probe_body()
    event = json.loads(body)
    assert event["event"] == "forwarder.doctor" and event["id"].startswith("event_doctor_")
    assert json.dumps(event).encode() != body
    assert json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() != body


SENT = "0123456789abcdef"


@pytest.mark.parametrize(
    ("status", "answer", "verdict", "finding"),
    [
        (200, {"status": "doctor"}, "PASS", "verified"),
        (200, {"status": "accepted", "id": "event_x"}, "WARN", "not as a workos-forwarder doctor probe"),
        (401, {"error": "missing_signature"}, "FAIL", "dropped"),
        (401, {"error": "malformed_signature"}, "FAIL", "rewritten"),
        (401, {"error": "stale_timestamp"}, "FAIL", "outside the service's window"),
        (401, {"error": "bad_signature", "received_sha256": "ffffffffffffffff"}, "FAIL", "modified"),
        (401, {"error": "bad_signature", "received_sha256": SENT}, "FAIL", "secret differs"),
        (401, {"error": "bad_signature"}, "FAIL", "no body digest"),
        (401, {}, "FAIL", "not a workos-forwarder"),
        (404, {"detail": "Not Found"}, "FAIL", "404"),
        (413, {"error": "too_large"}, "FAIL", "body size"),
        (502, {"error": "bad gateway"}, "FAIL", "502"),
    ],
)
def test_each_endpoint_answer_has_its_verdict(
    status: int, answer: dict[str, str], verdict: str, finding: str
) -> None:
    result = judge_answer(
        "https://hooks.example.com/webhooks/workos", status, json.dumps(answer).encode(), SENT
    )
    assert result.status == verdict and finding in result.detail, result
    if verdict == "FAIL":
        assert result.fix


def test_the_body_digest_is_a_short_sha256_prefix() -> None:
    assert body_digest(b"abc") == "ba7816bf8f01cfea"


# -- running instance --------------------------------------------------------------------


def test_a_healthy_instance_is_summarised_line_by_line() -> None:
    status = {
        "journal": {
            "events": 12,
            "bytes": 2 * 1048576,
            "backlog": 0,
            "backlog_limit": 100,
            "last_error": None,
        },
        "sinks": {
            "jsonl": {"healthy": True, "role": "active", "lag_events": 0, "lag_seconds": 0, "dead_letters": 0}
        },
        "sources": {"events_api": {"state": "ok", "fetched": 4, "api_only": 1}},
    }
    results = summarise(status)
    assert [(r.check, r.status) for r in results] == [
        ("instance journal", "PASS"),
        ("instance sink jsonl", "PASS"),
        ("instance events_api", "PASS"),
    ]
    assert "12 events, 2.0 MiB, backlog 0/100" in results[0].detail


def test_an_unhealthy_instance_names_each_problem_and_its_fix() -> None:
    status = {
        "journal": {"events": 5, "bytes": 0, "backlog": 90, "backlog_limit": 100, "last_error": None},
        "sinks": {
            "datadog": {
                "healthy": False,
                "last_error": "403 from intake",
                "lag_events": 90,
                "lag_seconds": 30,
                "dead_letters": 0,
            },
            "otlp": {"healthy": True, "role": "active", "lag_events": 0, "lag_seconds": 0, "dead_letters": 3},
        },
        "sources": {
            "events_api": {"state": "rejected", "last_error": "401"},
            "other": {"state": "unavailable"},
        },
    }
    results = {r.check: r for r in summarise(status)}
    assert results["instance journal"].status == "WARN"
    assert results["instance sink datadog"].status == "WARN"
    assert "403 from intake" in results["instance sink datadog"].detail
    assert "DD_API_KEY" in results["instance sink datadog"].fix
    assert results["instance sink otlp"].status == "WARN" and "dlq" in results["instance sink otlp"].fix
    assert (
        results["instance events_api"].status == "FAIL"
        and "WORKOS_API_KEY" in results["instance events_api"].fix
    )
    assert results["instance other"].status == "WARN"
    broken = summarise({"journal": {"last_error": "disk I/O error"}})
    assert broken[0].status == "FAIL" and "FORWARDER_DATA_DIR" in broken[0].fix


def test_the_status_url_reaches_a_wildcard_bind_on_loopback() -> None:
    env = {"WORKOS_WEBHOOK_SECRET": GOOD, "FORWARDER_HOST": "0.0.0.0", "FORWARDER_PORT": "9123"}
    assert status_url(Settings.from_env(env)) == "http://127.0.0.1:9123/status"
    env["FORWARDER_HOST"] = "::1"
    assert status_url(Settings.from_env(env)) == "http://[::1]:9123/status"


# -- datadog -----------------------------------------------------------------------------


def test_the_validation_url_follows_dd_site_and_dd_api_url() -> None:
    assert validation_url({}) == "https://api.datadoghq.com/api/v1/validate"
    assert validation_url({"DD_SITE": "datadoghq.eu"}) == "https://api.datadoghq.eu/api/v1/validate"
    assert validation_url({"DD_API_URL": "http://127.0.0.1:9/"}) == "http://127.0.0.1:9/api/v1/validate"
    with pytest.raises(ConfigError, match="DD_SITE"):
        validation_url({"DD_SITE": "datadog.com"})


def test_the_test_log_is_tagged_doctor_true() -> None:
    (log,) = probe_log({"FORWARDER_ENV": "staging"})
    assert "doctor:true" in TEST_LOG_TAGS and str(log["ddtags"]).endswith("env:staging")
    assert log["ddsource"] == "workos" and log["service"] == "workos-events"


# -- report ------------------------------------------------------------------------------


RESULTS = [
    passed("configuration", "every variable parses"),
    warned("clock", "70 s ahead", "sync the clock"),
    failed("datadog api key", "refused", "set DD_API_KEY"),
    skipped("otlp", "not configured"),
]


def test_text_output_is_one_line_per_check_with_the_fix_for_warn_and_fail() -> None:
    lines = render_text(RESULTS).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("PASS  configuration") and "fix:" not in lines[0]
    assert lines[1].startswith("WARN  clock") and lines[1].endswith("fix: sync the clock")
    assert lines[2].startswith("FAIL  datadog api key") and lines[2].endswith("fix: set DD_API_KEY")
    assert lines[3].startswith("SKIP  otlp") and "fix:" not in lines[3]


def test_json_output_is_an_array_of_check_status_detail_fix() -> None:
    parsed = json.loads(render_json(RESULTS))
    assert parsed[2] == {
        "check": "datadog api key",
        "status": "FAIL",
        "detail": "refused",
        "fix": "set DD_API_KEY",
    }
    assert [set(item) for item in parsed] == [{"check", "status", "detail", "fix"}] * 4


def test_exit_status_is_1_only_when_a_check_failed() -> None:
    assert exit_status(RESULTS) == 1
    assert exit_status([r for r in RESULTS if r.status != "FAIL"]) == 0
    assert exit_status([]) == 0


def test_secrets_are_masked_longest_first_wherever_they_appear() -> None:
    assert redact("key abcdef123 and abcdef", ["abcdef", "abcdef123"]) == "key *** and ***"
    leaky = [Check("x", "FAIL", "got sk_live_123456", "not sk_live_123456")]
    assert scrubbed(leaky, ["sk_live_123456"]) == [Check("x", "FAIL", "got ***", "not ***")]


def test_secret_values_cover_every_credential_in_the_environment() -> None:
    env = {
        "WORKOS_WEBHOOK_SECRET": f" '{GOOD}',whsec_second_secret_value",
        "WORKOS_API_KEY": "sk_test_abcdefgh",
        "DD_API_KEY": "dd-key-0123456",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20tok3n-value,x-team=a",
        "FORWARDER_JOURNAL_URL": "postgresql://app:pg-pass-word@db/x",
        "FORWARDER_PORT": "8080",
    }
    values = secret_values(env)
    for secret in (
        GOOD,
        "whsec_second_secret_value",
        "sk_test_abcdefgh",
        "dd-key-0123456",
        "Bearer tok3n-value",
        "pg-pass-word",
    ):
        assert secret in values
    assert "8080" not in values and "a" not in values
