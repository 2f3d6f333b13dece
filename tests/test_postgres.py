"""The journal on a real PostgreSQL: one replica, two replicas sharing it, a dropped connection.

Needs PostgreSQL at ``FORWARDER_TEST_POSTGRES`` (default postgresql://postgres@127.0.0.1:5432/test).
Each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest

from forwarder.engines import engine_for
from forwarder.journal import Journal
from tests.postgres import SERVER, journal_schema_or_skip
from tests.samples import make_event
from tests.service import Service, wait_for
from tests.unit.test_journal import check_batch_outcomes

StartService = Callable[..., Service]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with journal_schema_or_skip("forwarder_test") as (url, _):
        yield url


async def test_a_large_batch_tells_new_records_from_duplicates_on_postgres(pg_url: str) -> None:
    await check_batch_outcomes(Journal(engine_for(pg_url)))


def _delivered(*services: Service) -> list[str]:
    return [event_id for service in services for event_id in service.record_ids()]


def test_service_on_postgres_acknowledges_dedupes_and_delivers(
    start_service: StartService, pg_url: str
) -> None:
    service = start_service(FORWARDER_JOURNAL_URL=pg_url)
    events = [make_event("authentication.oauth_failed") for _ in range(30)]

    answers = [service.post(event).json()["status"] for event in events + events[:5]]

    assert answers == ["accepted"] * 30 + ["duplicate"] * 5
    wait_for(lambda: len(service.records()) == 30, what="30 records on the jsonl sink")
    assert sorted(service.record_ids()) == sorted(event["id"] for event in events)
    status = service.status()
    assert status["journal"]["events"] == 30
    assert "postgresql://" in status["journal"]["location"]
    assert status["sinks"]["jsonl"]["role"] == "active"


def test_metrics_answers_while_the_journal_does_not(start_service: StartService, pg_url: str) -> None:
    """The journal's gauges are read for a scrape; a journal that does not answer must not hold
    up /metrics, where that shows: the scrape waits for the read one second at most."""
    service = start_service(FORWARDER_JOURNAL_URL=pg_url)
    assert service.post(make_event("user.created")).status_code == 200
    with psycopg.connect(pg_url) as blocker:
        blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # reads of events wait
        started = time.monotonic()
        answer = httpx.get(f"{service.url}/metrics", timeout=10)
        took = time.monotonic() - started
        blocker.rollback()
    assert answer.status_code == 200
    assert "workos_forwarder_journal_writable 1.0" in answer.text
    assert 1.0 <= took < 3.0
    wait_for(
        lambda: service.metric("workos_forwarder_journal_events") == 1, what="the gauges once it answers"
    )


def test_two_replicas_share_the_journal_and_one_delivers_each_sink(
    start_service: StartService, pg_url: str
) -> None:
    first = start_service(name="first", FORWARDER_JOURNAL_URL=pg_url)
    second = start_service(name="second", FORWARDER_JOURNAL_URL=pg_url)
    events = [make_event("user.created") for _ in range(40)]

    for index, event in enumerate(events):
        assert (first if index % 2 else second).post(event).json()["status"] == "accepted"
    assert second.post(events[1]).json()["status"] == "duplicate"  # stored through the other replica

    ids = sorted(event["id"] for event in events)
    wait_for(lambda: sorted(_delivered(first, second)) == ids, what="each event delivered once in all")
    roles = {first.status()["sinks"]["jsonl"]["role"], second.status()["sinks"]["jsonl"]["role"]}
    assert roles == {"active", "standby"}

    leader, standby = (
        (first, second) if first.status()["sinks"]["jsonl"]["role"] == "active" else (second, first)
    )
    leader.stop(signal.SIGKILL)
    later = [make_event("user.updated") for _ in range(10)]
    for event in later:
        assert standby.post(event).status_code == 200

    wait_for(
        lambda: {event["id"] for event in later} <= set(standby.record_ids()),
        timeout=30,
        what="the standby to take over delivery",
    )
    assert standby.status()["sinks"]["jsonl"]["role"] == "active"
    assert set(_delivered(first, second)) == set(ids) | {event["id"] for event in later}


def test_dropped_database_connection_gives_503_then_recovers(
    start_service: StartService, pg_url: str
) -> None:
    service = start_service(FORWARDER_JOURNAL_URL=pg_url, JSONL_OUTPUT="off", PROMETHEUS_SINK="off")
    assert service.post(make_event("session.created")).status_code == 200
    with psycopg.connect(SERVER, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND datname = current_database()"
            " AND backend_type = 'client backend'"
        ).fetchone()[0]
    assert killed >= 1

    answers = [service.post(make_event("session.created")) for _ in range(5)]

    assert {response.status_code for response in answers} <= {200, 503}
    refused = [response for response in answers if response.status_code == 503]
    assert all(int(response.headers["retry-after"]) > 0 for response in refused)
    assert answers[-1].status_code == 200, "the writer did not reconnect"
    stored = service.status()["journal"]["events"]
    assert stored == 1 + sum(response.status_code == 200 for response in answers)


def test_a_standby_replica_reports_the_lag_of_the_shared_cursor(
    start_service: StartService, pg_url: str
) -> None:
    """Two replicas, a caught-up sink: neither reports lag (the standby once reported the whole
    journal, so the lag alert fired on every standby)."""
    first = start_service(name="first", FORWARDER_JOURNAL_URL=pg_url, PROMETHEUS_SINK="off")
    second = start_service(name="second", FORWARDER_JOURNAL_URL=pg_url, PROMETHEUS_SINK="off")
    events = [make_event("user.created") for _ in range(20)]
    for event in events:
        assert first.post(event).status_code == 200
    wait_for(lambda: len(_delivered(first, second)) == 20, what="20 records delivered by one replica")

    def lags() -> list[float]:
        return [
            service.metric("workos_forwarder_sink_lag_events", sink="jsonl") for service in (first, second)
        ]

    wait_for(lambda: lags() == [0.0, 0.0], timeout=10, what="no lag on either replica")
    roles = sorted(service.status()["sinks"]["jsonl"]["role"] for service in (first, second))
    assert roles == ["active", "standby"]
    assert [service.status()["sinks"]["jsonl"]["lag_events"] for service in (first, second)] == [0, 0]


def test_the_journal_password_is_not_shown_in_status_or_logs(
    start_service: StartService, pg_url: str
) -> None:
    """Trust authentication ignores the password, so a real service runs with one in its URL."""
    service = start_service(FORWARDER_JOURNAL_URL=f"{pg_url}&password=hunter2secret")
    assert service.post(make_event("user.created")).status_code == 200

    location = service.status()["journal"]["location"]
    assert "password=***" in location
    assert "hunter2secret" not in service.stderr_path.read_text() + str(service.status())
