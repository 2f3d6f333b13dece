"""Internal faults: a bug inside the service must cost a retry, never an event or a silent stall.

Faults are injected into the real process with ``FORWARDER_FAILPOINTS`` (an exception none of
the code expects, where a bug would raise it) or by the test plugin sink misbehaving the ways
a sink's bug would. Each test counts the acknowledged ids against what arrived, and checks
that the service said what happened in ``/status`` and ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import with_flaky_sink
from tests.doubles.workos_api import API_KEY, WorkOSEventsAPI, api_events
from tests.samples import make_event
from tests.service import Service, wait_for

StartService = Callable[..., Service]


def acknowledge_with_retries(service: Service, count: int) -> list[str]:
    """Post ``count`` events, each again after a 503 as WorkOS would; the ids finally answered 200."""
    acked = []
    for _ in range(count):
        event = make_event("authentication.password_failed")
        wait_for(lambda event=event: service.post(event).status_code == 200, what=f"200 for {event['id']}")
        acked.append(event["id"])
    return acked


def restarts(service: Service, task: str) -> float:
    return service.metric("workos_forwarder_task_restarts_total", task=task)


def flaky_ids(tmp_path: Path) -> list[str]:
    out = tmp_path / "flaky.out"
    return out.read_text().split() if out.exists() else []


def test_an_exception_inside_the_journal_writer_answers_503_then_recovers(
    start_service: StartService,
) -> None:
    """Promise: the writer thread survives a bug; the writes it failed are answered 503 (never
    200, never a request left hanging), later ones are stored, and the failures are counted."""
    service = start_service(FORWARDER_FAILPOINTS="journal.writer=3")
    answers = [service.post(make_event("user.created")).status_code for _ in range(3)]
    assert answers == [503, 503, 503]

    acked = acknowledge_with_retries(service, 10)

    wait_for(lambda: set(acked) <= set(service.record_ids()), what="every acknowledged event delivered")
    assert restarts(service, "journal-writer") == 3
    assert httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200
    assert "journal writer failed" in service.stderr_path.read_text()
    assert "InjectedFault" in service.stderr_path.read_text()  # with its traceback


def test_a_delivery_loop_that_fails_is_restarted_and_delivers_everything(start_service: StartService) -> None:
    """Promise: a bug in a delivery loop restarts the loop, resumes from its cursor, loses nothing."""
    service = start_service(FORWARDER_FAILPOINTS="delivery.loop=2")
    acked = acknowledge_with_retries(service, 20)

    wait_for(lambda: set(acked) <= set(service.record_ids()), what="every acknowledged event delivered")
    loops = ("delivery:jsonl", "delivery:prometheus")  # the two failures fall on either loop
    assert sum(restarts(service, task) for task in loops) == 2
    tasks = service.status()["tasks"]
    assert sum(tasks[task]["restarts"] for task in loops) == 2
    assert any("InjectedFault" in (tasks[task]["last_error"] or "") for task in loops)
    assert all(tasks[task]["stopped"] is None for task in loops)


def test_retention_that_fails_is_restarted_and_prunes_later(start_service: StartService) -> None:
    """Promise: a failed retention run is retried; the journal does not grow without bound."""
    service = start_service(
        FORWARDER_FAILPOINTS="retention.prune=1", FORWARDER_RETENTION="0s", FORWARDER_PRUNE_INTERVAL="0.3s"
    )
    acked = acknowledge_with_retries(service, 5)
    wait_for(lambda: set(acked) <= set(service.record_ids()), what="every acknowledged event delivered")

    wait_for(lambda: service.status()["journal"]["events"] == 0, what="retention to prune after its failure")
    assert restarts(service, "retention") == 1


def test_unexpected_errors_from_a_sink_are_retried_then_dead_lettered(
    start_service: StartService, tmp_path: Path
) -> None:
    """Promise: a sink raising what the loop does not expect (KeyError, a stray CancelledError)
    neither kills its loop nor blocks the other sink; the records get the true reason."""
    service = start_service(**with_flaky_sink(tmp_path, "crash"), FORWARDER_MAX_ATTEMPTS="2")
    acked = acknowledge_with_retries(service, 3)
    wait_for(lambda: set(acked) <= set(service.record_ids()), what="jsonl delivers meanwhile")
    wait_for(lambda: service.status()["sinks"]["flaky"]["dead_letters"] == 3, what="3 dead letters")
    reasons = {letter for letter in service.cli("dlq", "list", "--sink", "flaky").stdout.splitlines()}
    assert any("KeyError" in line for line in reasons), reasons

    (tmp_path / "flaky.control").write_text("cancel")
    more = acknowledge_with_retries(service, 2)
    wait_for(lambda: service.status()["sinks"]["flaky"]["dead_letters"] == 5, what="5 dead letters")
    assert "CancelledError" in service.cli("dlq", "list", "--sink", "flaky").stdout

    (tmp_path / "flaky.control").write_text("ok")
    assert service.cli("dlq", "replay", "--sink", "flaky").returncode == 0
    wait_for(lambda: set(acked + more) <= set(flaky_ids(tmp_path)), what="replayed to the flaky sink")
    assert service.status()["tasks"]["delivery:flaky"]["stopped"] is None


def test_a_sink_send_that_never_returns_is_abandoned_and_retried(
    start_service: StartService, tmp_path: Path
) -> None:
    """Promise: no wait is unbounded: a hanging send times out (the sink turns unhealthy, with the
    reason), the other sink is not held back, and the records arrive once the sink answers."""
    service = start_service(**with_flaky_sink(tmp_path, "hang"))
    acked = acknowledge_with_retries(service, 3)
    wait_for(lambda: set(acked) <= set(service.record_ids()), what="jsonl delivers meanwhile")
    wait_for(lambda: not service.status()["sinks"]["flaky"]["healthy"], what="flaky reported unhealthy")
    assert "did not finish within 1 s" in service.status()["sinks"]["flaky"]["last_error"]

    (tmp_path / "flaky.control").write_text("ok")

    wait_for(lambda: set(acked) <= set(flaky_ids(tmp_path)), what="records on the flaky sink")
    wait_for(lambda: service.status()["sinks"]["flaky"]["healthy"], what="flaky healthy again")


def test_one_record_a_sink_cannot_take_is_isolated_and_the_rest_delivered(
    start_service: StartService, tmp_path: Path
) -> None:
    """Promise: one record never stalls a sink: the record the sink fails on is dead-lettered with
    the true reason, every other record of its batch and after it is delivered."""
    poison = make_event("user.updated")
    control = with_flaky_sink(tmp_path, f"poison {poison['id']}")
    service = start_service(**control, FORWARDER_MAX_ATTEMPTS="2")
    before = acknowledge_with_retries(service, 5)
    assert service.post(poison).status_code == 200
    after = acknowledge_with_retries(service, 5)

    wait_for(lambda: set(before + after) <= set(flaky_ids(tmp_path)), what="the other records on flaky")
    wait_for(lambda: service.status()["sinks"]["flaky"]["dead_letters"] == 1, what="one dead letter")
    listing = service.cli("dlq", "list", "--sink", "flaky").stdout
    assert poison["id"] in listing and "cannot take" in listing
    assert poison["id"] not in flaky_ids(tmp_path)


def test_a_poller_that_fails_goes_on_and_stores_what_it_missed(start_service: StartService) -> None:
    """Promise: a bug in the Events API poller costs a poll, not reconciliation: it is counted, shown
    in /status, and the next poll stores the events only the API had."""
    api = WorkOSEventsAPI().start()
    try:
        service = start_service(
            WORKOS_API_KEY=API_KEY,
            WORKOS_API_URL=api.url,
            WORKOS_POLL_INTERVAL="300ms",
            FORWARDER_FAILPOINTS="poller.poll=2",
        )
        missed = api_events(5)
        api.add(missed)

        wait_for(
            lambda: {e["id"] for e in missed} <= set(service.record_ids()), what="the API's events stored"
        )
        assert restarts(service, "source:events_api") == 2
        assert "InjectedFault" in service.stderr_path.read_text()
        assert service.status()["sources"]["events_api"]["state"] == "ok"
    finally:
        api.stop()
