"""Server-given waits are bounded: one parser, one meaning for every input, one cap.

The unit tests pin each form of ``Retry-After`` to its documented meaning (and property
tests check the bounds over arbitrary input). The loopback tests show, for each HTTP sink
and for the Events API client, that a server answering ``Retry-After: 86400`` cannot park
the forwarder for a day: the wait handed to the delivery loop (or waited by the client) is
``FORWARDER_MAX_RETRY_AFTER``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwarder.config import ConfigError, Settings, max_retry_after
from forwarder.normalize import NormalizeOptions, normalize
from forwarder.retry_after import retry_after_from_headers, retry_after_seconds
from forwarder.sources.events_api_client import EventsApiClient
from sinks import datadog, otlp
from sinks.base import RetryableError
from tests.doubles.datadog_intake import DatadogIntake
from tests.doubles.otlp_receiver import OtlpReceiver
from tests.doubles.workos_api import API_KEY, WorkOSEventsAPI, api_events
from tests.samples import make_event, stored

CAP = 300.0
NOW = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC).timestamp()


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + seconds_from_now, UTC), usegmt=True)


# --- one value ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", " ", "\t\r\n"])
def test_absent_or_blank_means_use_your_own_backoff(value: str | None) -> None:
    assert retry_after_seconds(value, cap=CAP, now=NOW) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        (" 120 ", 120.0),
        ("007", 7.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("+5", 5.0),
        ("1e2", 100.0),
        ("300", 300.0),
    ],
)
def test_delay_seconds_under_the_cap_are_honoured(value: str, seconds: float) -> None:
    assert retry_after_seconds(value, cap=CAP, now=NOW) == seconds


@pytest.mark.parametrize("value", ["301", "86400", "1e9", "1e400", "9" * 400, "300.000001"])
def test_delay_seconds_over_the_cap_are_capped(value: str) -> None:
    assert retry_after_seconds(value, cap=CAP, now=NOW) == CAP


@pytest.mark.parametrize("value", ["inf", "INF", "Infinity", "+infinity", " inf "])
def test_infinity_means_the_cap(value: str) -> None:
    assert retry_after_seconds(value, cap=CAP, now=NOW) == CAP


@pytest.mark.parametrize("value", ["-1", "-0.5", "-86400", "-inf", "-Infinity", "-0", "-1e400"])
def test_negative_means_now(value: str) -> None:
    result = retry_after_seconds(value, cap=CAP, now=NOW)
    assert result == 0.0
    assert math.copysign(1.0, result) == 1.0, "never -0.0"


@pytest.mark.parametrize(
    "value",
    [
        "nan",
        "NaN",
        "-nan",
        "soon",
        "1_000",
        "0x10",
        "1,5",
        "12 s",
        "5m",
        "1e",
        "--1",
        "½",
        "١٢",  # Arabic-Indic digits: float() reads them, no server means them
        "120\x00",
        "Wed, 31 Feb 2026 07:28:00 GMT",
        "Wed, 21 Oct 99999 07:28:00 GMT",
        "\U0001f600",
    ],
)
def test_nan_and_garbage_mean_use_your_own_backoff(value: str) -> None:
    assert retry_after_seconds(value, cap=CAP, now=NOW) is None


def test_an_http_date_in_the_future_is_the_seconds_until_it() -> None:
    assert retry_after_seconds(http_date(90), cap=CAP, now=NOW) == 90.0


def test_an_http_date_beyond_the_cap_is_capped() -> None:
    assert retry_after_seconds(http_date(86400), cap=CAP, now=NOW) == CAP
    assert retry_after_seconds("Fri, 31 Dec 9999 23:59:59 GMT", cap=CAP, now=NOW) == CAP


@pytest.mark.parametrize("seconds_ago", [0, 1, 86400, 50 * 365 * 86400])
def test_an_http_date_now_or_in_the_past_means_now(seconds_ago: int) -> None:
    assert retry_after_seconds(http_date(-seconds_ago), cap=CAP, now=NOW) == 0.0


def test_the_obsolete_http_date_forms_are_read_too() -> None:
    moment = datetime.fromtimestamp(NOW + 60, UTC)
    rfc850 = moment.strftime("%A, %d-%b-%y %H:%M:%S GMT")
    asctime = moment.strftime("%a %b %e %H:%M:%S %Y")
    assert retry_after_seconds(rfc850, cap=CAP, now=NOW) == 60.0
    assert retry_after_seconds(asctime, cap=CAP, now=NOW) == 60.0


def test_an_http_date_uses_the_current_time_by_default() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=100), usegmt=True)
    wait = retry_after_seconds(soon, cap=CAP)
    assert wait is not None and 95 <= wait <= 100


@pytest.mark.parametrize("cap", [-1.0, math.inf, math.nan])
def test_a_cap_that_bounds_nothing_is_a_programming_error(cap: float) -> None:
    with pytest.raises(ValueError, match="cap"):
        retry_after_seconds("1", cap=cap)


def test_a_zero_cap_means_never_wait() -> None:
    assert retry_after_seconds("86400", cap=0.0) == 0.0
    assert retry_after_seconds("inf", cap=0.0) == 0.0


@given(st.text())
def test_any_text_gives_none_or_a_wait_within_the_cap(value: str) -> None:
    wait = retry_after_seconds(value, cap=CAP, now=NOW)
    assert wait is None or (isinstance(wait, float) and 0.0 <= wait <= CAP)


@given(st.floats(allow_nan=False), st.floats(min_value=0, max_value=1e6))
def test_any_number_is_clamped_into_zero_and_the_cap(seconds: float, cap: float) -> None:
    wait = retry_after_seconds(repr(seconds), cap=cap, now=NOW)
    assert wait == min(max(seconds, 0.0), cap)


@given(st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=0, max_value=10**6))
def test_any_integer_is_clamped_into_zero_and_the_cap(seconds: int, cap: int) -> None:
    assert retry_after_seconds(str(seconds), cap=cap, now=NOW) == min(max(float(seconds), 0.0), cap)


@given(st.datetimes(timezones=st.just(UTC), min_value=datetime(1900, 1, 1), max_value=datetime(9999, 1, 1)))
def test_any_http_date_is_clamped_into_zero_and_the_cap(moment: datetime) -> None:
    wait = retry_after_seconds(format_datetime(moment, usegmt=True), cap=CAP, now=NOW)
    expected = min(max(moment.replace(microsecond=0).timestamp() - NOW, 0.0), CAP)
    assert wait == pytest.approx(expected)


# --- headers --------------------------------------------------------------------------------


def test_the_larger_of_retry_after_and_the_rate_limit_reset_wins() -> None:
    headers = httpx.Headers({"Retry-After": "5", "X-Ratelimit-Reset": "42"})
    assert retry_after_from_headers(headers, cap=CAP, now=NOW) == 42.0
    headers = httpx.Headers({"Retry-After": "50", "X-Ratelimit-Reset": "2"})
    assert retry_after_from_headers(headers, cap=CAP, now=NOW) == 50.0


def test_one_unusable_header_does_not_hide_the_other() -> None:
    headers = {"retry-after": "garbage", "x-ratelimit-reset": "7"}
    assert retry_after_from_headers(headers, cap=CAP, now=NOW) == 7.0
    assert retry_after_from_headers({"X-RateLimit-Reset": "nan"}, cap=CAP, now=NOW) is None
    assert retry_after_from_headers({}, cap=CAP, now=NOW) is None


def test_header_names_match_in_any_case_in_a_plain_mapping() -> None:
    assert retry_after_from_headers({"RETRY-AFTER": "86400"}, cap=CAP, now=NOW) == CAP
    assert retry_after_from_headers({"X-RateLimit-Reset": "-3"}, cap=CAP, now=NOW) == 0.0


# --- the setting ----------------------------------------------------------------------------


def test_the_cap_defaults_to_five_minutes_and_takes_any_duration() -> None:
    assert max_retry_after({}) == 300.0
    assert max_retry_after({"FORWARDER_MAX_RETRY_AFTER": "90s"}) == 90.0
    assert max_retry_after({"FORWARDER_MAX_RETRY_AFTER": "1h"}) == 3600.0
    assert (
        Settings.from_env({"FORWARDER_MAX_RETRY_AFTER": "2m"}, require_secret=False).max_retry_after_s == 120
    )


def test_an_invalid_cap_names_its_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"FORWARDER_MAX_RETRY_AFTER": "forever"}, require_secret=False)
    assert raised.value.variable == "FORWARDER_MAX_RETRY_AFTER"


# --- each HTTP sink and the Events API against a loopback server ---------------------------


def record() -> dict[str, Any]:
    created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return normalize(make_event("user.created", created_at=created), NormalizeOptions(env="test"))


@pytest.fixture
def intake() -> Iterator[DatadogIntake]:
    with DatadogIntake() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server


@pytest.mark.parametrize(
    ("env", "cap"), [({}, 300.0), ({"FORWARDER_MAX_RETRY_AFTER": "90s"}, 90.0)], ids=["default", "90s"]
)
@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "86400"},
        {"X-Ratelimit-Reset": "86400"},
        {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"},
    ],
    ids=["retry-after", "ratelimit-reset", "http-date"],
)
async def test_datadog_caps_a_day_long_wait(
    intake: DatadogIntake, env: dict[str, str], cap: float, headers: dict[str, str]
) -> None:
    sink = datadog.create({"DD_API_KEY": intake.api_key, "DD_LOGS_URL": intake.url, **env})
    assert sink is not None
    intake.fail_next(429, headers=headers)

    with pytest.raises(RetryableError) as raised:
        await sink.send(stored([record()]))
    await sink.close()

    assert raised.value.retry_after == cap
    assert "429" in raised.value.reason and sink.name in raised.value.reason


@pytest.mark.parametrize(
    ("env", "cap"), [({}, 300.0), ({"FORWARDER_MAX_RETRY_AFTER": "90s"}, 90.0)], ids=["default", "90s"]
)
async def test_otlp_caps_a_day_long_wait(receiver: OtlpReceiver, env: dict[str, str], cap: float) -> None:
    sink = otlp.create(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base_url, "OTEL_EXPORTER_OTLP_TIMEOUT": "1", **env}
    )
    assert sink is not None
    # More 429s than the exporter retries within its 1 s timeout.
    receiver.fail_next(429, times=5, headers={"Retry-After": "86400"})

    with pytest.raises(RetryableError) as raised:
        await sink.send(stored([record()]))
    await sink.close()

    assert raised.value.retry_after == cap
    assert "429" in raised.value.reason and sink.name in raised.value.reason


@pytest.mark.parametrize(
    ("header", "wait"),
    [("Fri, 31 Dec 9999 23:59:59 GMT", 300.0), ("later, please", None), ("inf", 300.0)],
    ids=["far-date", "garbage", "infinity"],
)
async def test_otlp_reads_every_form_through_the_same_parser(
    receiver: OtlpReceiver, header: str, wait: float | None
) -> None:
    sink = otlp.create({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base_url, "OTEL_EXPORTER_OTLP_TIMEOUT": "1"})
    assert sink is not None
    receiver.fail_next(503, times=5, headers={"Retry-After": header})

    with pytest.raises(RetryableError) as raised:
        await sink.send(stored([record()]))
    await sink.close()

    assert raised.value.retry_after == wait


async def test_events_api_client_caps_a_day_long_wait() -> None:
    waits: list[tuple[str, float]] = []
    api = WorkOSEventsAPI().start()
    events = api_events(3)
    api.add(events)
    api.rate_limit(1, retry_after="86400")
    client = EventsApiClient(
        api.url,
        API_KEY,
        on_wait=lambda reason, seconds: waits.append((reason, seconds)),
        max_retry_after_s=max_retry_after({"FORWARDER_MAX_RETRY_AFTER": "200ms"}),
    )
    try:
        page = await client.list_events(types=sorted({event["event"] for event in events}))
    finally:
        await client.aclose()
        api.stop()

    assert waits == [("rate limited (429), Retry-After: 86400", 0.2)]
    assert len(page.events) == 3
