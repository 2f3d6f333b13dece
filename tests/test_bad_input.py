"""Bad input gets a 4xx with a reason, and never touches anyone else's event (issue 18).

The real service over loopback, on SQLite and on PostgreSQL (``FORWARDER_TEST_POSTGRES``,
default the local test server; skipped loudly when it is unreachable, a failure under
``FORWARDER_REQUIRE_SERVICES=1``). Each case checks what a user notices: the status and
its reason, nothing stored (the jsonl sink, ``/status``), the other events posted at the
same moment all acknowledged and delivered, the Events API walk going on past a bad event,
and ``/metrics`` staying bounded whatever types arrive.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from forwarder import catalog
from forwarder.normalize import MAX_DEPTH, MAX_TEXT_CHARS
from tests.doubles.datadog_intake import DatadogIntake
from tests.doubles.otlp_receiver import OtlpReceiver
from tests.doubles.workos_api import API_KEY, WorkOSEventsAPI, api_events, event_id
from tests.postgres import journal_schema_or_skip
from tests.samples import make_event, new_id
from tests.service import Service, wait_for

StartService = Callable[..., Service]


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The service's environment for each journal engine: SQLite (the default) or a PostgreSQL
    schema of its own, dropped afterwards."""
    if request.param == "sqlite":
        yield {}
        return
    with journal_schema_or_skip("forwarder_bad") as (url, _):
        yield {"FORWARDER_JOURNAL_URL": url}


def _deep(depth: int) -> orjson.Fragment:
    """``data`` nested ``depth`` objects deep, as JSON text: orjson itself encodes at most 254."""
    return orjson.Fragment(b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1))


@dataclass(frozen=True)
class BadInput:
    name: str
    event: dict[str, Any]
    says: str
    """What the 400's ``detail`` must say: the field (or the limit) and the problem."""


def _bad_inputs() -> list[BadInput]:
    """One of each: every call gives fresh ids, so a case can be posted again in another round."""
    long_id = "event_" + "A" * (MAX_TEXT_CHARS - 5)
    return [
        BadInput(
            "nul_in_id",
            make_event("user.created", id=f"{new_id('event')}\x00"),
            '"id" contains a control character (U+0000) at index 32',
        ),
        BadInput(
            "nul_in_event",
            make_event("user.\x00created"),
            '"event" contains a control character (U+0000) at index 5',
        ),
        BadInput(
            "escape_sequence_in_id",
            make_event("user.created", id=f"event_\x1b[2J{uuid.uuid4().hex}"),
            '"id" contains a control character (U+001B) at index 6',
        ),
        BadInput(
            "c1_control_in_event",
            make_event("user.created\x85"),
            '"event" contains a control character (U+0085) at index 12',
        ),
        BadInput(
            "id_over_255_characters",
            make_event("user.created", id=long_id[:-8] + uuid.uuid4().hex[:8]),
            f'"id" is {MAX_TEXT_CHARS + 1} characters long; the limit is {MAX_TEXT_CHARS}',
        ),
        BadInput(
            "data_300_levels_deep",
            make_event("user.created", data=_deep(300)),
            f'"data" is nested 300 levels deep; the limit is {MAX_DEPTH}',
        ),
        BadInput(
            "data_1000_levels_deep",
            make_event("user.created", data=_deep(1_000)),
            f'"data" is nested 1000 levels deep; the limit is {MAX_DEPTH}',
        ),
        BadInput(
            "body_over_the_decoder_depth",
            make_event("user.created", data=_deep(1_100)),
            "body is nested deeper than 1024 levels",
        ),
    ]


def _stored_nothing(service: Service) -> None:
    journal = service.status()["journal"]
    assert (journal["events"], journal["head"]) == (0, 0), journal
    assert service.records() == []


def test_each_bad_input_is_400_with_its_reason_and_stores_nothing(
    start_service: StartService, journal_env: dict[str, str]
) -> None:
    service = start_service(**journal_env)

    for bad in _bad_inputs():
        response = service.post(bad.event)

        assert response.status_code == 400, f"{bad.name}: {response.status_code} {response.text}"
        answer = response.json()
        assert answer["error"] == "bad_request", bad.name
        assert bad.says in answer["detail"], f"{bad.name}: {answer['detail']!r}"
        assert answer["detail"].isprintable(), f"{bad.name}: the reason echoes raw control characters"
    time.sleep(0.5)  # a delivery-loop poll or two: nothing may reach the sink

    _stored_nothing(service)
    assert service.metric("workos_webhook_requests_total", result="bad_request") == len(_bad_inputs())
    assert service.metric("workos_webhook_requests_total", result="unavailable") == 0
    good = make_event("user.created")
    assert service.post(good).status_code == 200
    wait_for(lambda: service.record_ids() == [good["id"]], what="the next valid event, alone, delivered")


def _post_together(service: Service, events: list[dict[str, Any]]) -> list[httpx.Response]:
    """Post every event at the same moment, one connection each, so they share group commits."""
    start = threading.Barrier(len(events))

    def post(event: dict[str, Any]) -> httpx.Response:
        start.wait()
        return service.post(event)

    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        return list(pool.map(post, events))


def test_a_bad_event_posted_with_30_valid_ones_fails_none_of_them(
    start_service: StartService, journal_env: dict[str, str]
) -> None:
    service = start_service(**journal_env)
    accepted: list[str] = []

    for bad in _bad_inputs():
        valid = [make_event("authentication.password_failed") for _ in range(30)]
        everyone = [*valid[:15], bad.event, *valid[15:]]

        answers = _post_together(service, everyone)

        statuses = [response.status_code for response in answers]
        assert statuses[:15] + statuses[16:] == [200] * 30, f"{bad.name}: {statuses}"
        assert statuses[15] == 400, f"{bad.name}: {answers[15].text}"
        accepted += [event["id"] for event in valid]

    wait_for(
        lambda: sorted(service.record_ids()) == sorted(accepted),
        what=f"all {len(accepted)} valid events on the jsonl sink",
    )
    journal = service.status()["journal"]
    assert (journal["events"], journal["last_error"]) == (len(accepted), None)
    assert service.metric("workos_webhook_requests_total", result="unavailable") == 0


def test_nul_and_control_characters_inside_data_are_delivered_unchanged_to_every_sink(
    start_service: StartService, journal_env: dict[str, str]
) -> None:
    data = {
        "id": "user_01HWZBQ8NJ5J7Y2D3XKTA9C6RE",
        "note": "before\x00after",
        "nested": {"key\x00with nul": ["\x00", "\x1b[31m", "\x7f\x85"]},
        "first_name": "Ada\x00",
    }
    event = make_event("user.updated", data=data)
    with DatadogIntake("dd-key") as intake, OtlpReceiver() as collector:
        service = start_service(
            **journal_env,
            DD_API_KEY="dd-key",
            DD_LOGS_URL=intake.url,
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.base_url,
        )

        response = service.post(event)

        assert (response.status_code, response.json()["status"]) == (200, "accepted")
        (record,) = wait_for(service.records, what="the record on the jsonl sink")
        assert record["workos"]["data"] == data
        assert b"\\u0000" in service.jsonl.read_bytes()
        (logged,) = wait_for(intake.received, what="the record at the Datadog intake")
        assert logged["workos"]["data"] == data
        (log,) = wait_for(collector.logs, what="the record at the OTLP collector")
        assert log.attributes["workos.data.note"] == "before\x00after"
        assert log.attributes["workos.data.nested.key\x00with nul"] == ["\x00", "\x1b[31m", "\x7f\x85"]
    assert service.post(event).json()["status"] == "duplicate"


def test_made_up_event_types_add_no_metric_series_and_no_email_in_a_label(
    start_service: StartService,
) -> None:
    service = start_service()
    made_up = [make_event(f"made_up_{n}.thing_happened") for n in range(200)]
    made_up += [make_event(f"user{n}@example.com.signed_in") for n in range(20)]
    made_up += [make_event(f"authentication.brand_new_{n}_failed") for n in range(20)]
    known = make_event("authentication.password_failed")

    assert all(service.post(event).status_code == 200 for event in [*made_up, known])

    wait_for(lambda: len(service.records()) == len(made_up) + 1, what="every event on the jsonl sink")
    counted = wait_for(
        lambda: sum((series := _series(service, "workos_events_total")).values()) == 241 and series,
        what="workos_events_total to count every event",
    )
    assert counted == {
        ("other", "other", "info"): 220,
        ("other", "authentication", "failure"): 20,
        ("authentication.password_failed", "authentication", "failure"): 1,
    }
    assert "@" not in service.metrics()
    for record in service.records():
        assert record["workos"]["category"] in catalog.CATEGORIES | {"other"}
        assert "@" not in record["ddtags"]


def _series(service: Service, name: str) -> dict[tuple[str, str, str], float]:
    """Every sample of a counter by (event, category, outcome)."""
    return {
        (sample.labels["event"], sample.labels["category"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(service.metrics())
        for sample in family.samples
        if sample.name == name
    }


# --- The Events API: the poller and backfill skip a bad event with its reason, and go on ----


def _api_bad_events(around: float) -> list[dict[str, Any]]:
    """Events the API could serve that are no valid events: each of a type the poller asks for."""
    created = [
        datetime.fromtimestamp(around + offset, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for offset in (0.001, 0.002, 0.003, 0.004)
    ]
    return [
        make_event("user.created", id=f"{event_id(round(around * 1000))}\x00", created_at=created[0]),
        make_event("user.created", id="event_" + "B" * MAX_TEXT_CHARS, created_at=created[1]),
        make_event("user.created", data=_deep(300), created_at=created[2]),
        make_event("user.created", data=_deep(1_000), created_at=created[3]),
    ]


@pytest.fixture
def workos_api() -> Iterator[WorkOSEventsAPI]:
    api = WorkOSEventsAPI().start()
    yield api
    api.stop()


def test_the_poller_skips_bad_events_and_delivers_the_rest(
    start_service: StartService, workos_api: WorkOSEventsAPI, journal_env: dict[str, str]
) -> None:
    good = api_events(20)
    bad = _api_bad_events(time.time() - 0.1)
    workos_api.add(good + bad)
    service = start_service(
        **journal_env,
        WORKOS_API_KEY=API_KEY,
        WORKOS_API_URL=workos_api.url,
        WORKOS_POLL_INTERVAL="300ms",
    )

    wait_for(
        lambda: sorted(service.record_ids()) == sorted(event["id"] for event in good),
        what="the 20 valid events from the Events API",
    )
    later = api_events(5, start=time.time())
    workos_api.add(later)
    wait_for(
        lambda: {event["id"] for event in later} <= set(service.record_ids()),
        what="events published after the bad ones: the poller went on",
    )
    source = service.status()["sources"]["events_api"]
    assert (source["state"], source["last_error"]) == ("ok", None)
    assert service.status()["journal"]["events"] == 25
    errors = " | ".join(
        str(orjson.loads(line).get("error"))
        for line in service.stderr_path.read_text().splitlines()
        if line.startswith("{")
    )
    for says in (
        '"id" contains a control character (U+0000)',
        f'"id" is {MAX_TEXT_CHARS + 6} characters long',
        f'"data" is nested 300 levels deep; the limit is {MAX_DEPTH}',
        f'"data" is nested 1000 levels deep; the limit is {MAX_DEPTH}',
    ):
        assert says in errors, f"no log line says {says!r}: {errors}"


def test_backfill_skips_bad_events_counts_them_and_completes(
    start_service: StartService, workos_api: WorkOSEventsAPI
) -> None:
    good = api_events(30)
    workos_api.add(good + _api_bad_events(time.time() - 0.2))
    service = start_service(WORKOS_API_KEY=API_KEY, WORKOS_API_URL=workos_api.url, WORKOS_POLL_INTERVAL="0")
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    result = service.cli("backfill", "--since", since)

    assert result.returncode == 0, result.stderr
    assert re.search(r"fetched 34, new 30, already known 0, skipped 4", result.stdout), result.stdout
    wait_for(
        lambda: sorted(service.record_ids()) == sorted(event["id"] for event in good),
        what="the 30 valid backfilled events",
    )
