"""The Events API path end to end: backfill and the poller in ``serve``, against the emulator.

The real service and the real ``workos-forwarder backfill`` run as processes on loopback; the
WorkOS Events API is ``tests.doubles.workos_api`` (documented parameters, pagination by
``after``, 429 with ``Retry-After``, a newest-first mode). What a user would notice is checked
where they would notice it: the jsonl sink's records, /metrics, /status, exit codes and output.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.doubles.workos_api import API_KEY, WorkOSEventsAPI, api_events, too_deep
from tests.samples import make_event
from tests.service import Service, wait_for

StartService = Callable[..., Service]
StartApi = Callable[..., WorkOSEventsAPI]
ORDERS = pytest.mark.parametrize("newest_first", [False, True], ids=["oldest-first", "newest-first"])
_SUMMARY = re.compile(r"fetched ([\d,]+), new ([\d,]+), already known ([\d,]+)")


@pytest.fixture
def workos_api() -> Iterator[StartApi]:
    started: list[WorkOSEventsAPI] = []

    def start(**options: object) -> WorkOSEventsAPI:
        api = WorkOSEventsAPI(**options).start()  # type: ignore[arg-type]
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


def _api_env(api: WorkOSEventsAPI, **extra: str) -> dict[str, str]:
    return {"WORKOS_API_KEY": API_KEY, "WORKOS_API_URL": api.url, "WORKOS_POLL_INTERVAL": "0", **extra}


def _since(hours: float = 1) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(output: str) -> tuple[int, int, int]:
    match = _SUMMARY.search(output)
    assert match, f"no summary in: {output}"
    fetched, new, known = (int(group.replace(",", "")) for group in match.groups())
    return fetched, new, known


def _backfill_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "forwarder.cli", "backfill", *args]


def _cli_env(data_dir: Path, env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "FORWARDER_DATA_DIR": str(data_dir), **env}


def _journal_count(data_dir: Path) -> int:
    with sqlite3.connect(f"file:{data_dir / 'journal.sqlite3'}?mode=ro", uri=True) as db:
        return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def _each_once(service: Service, ids: list[str]) -> bool:
    delivered = Counter(service.record_ids())
    assert all(count == 1 for count in delivered.values()), f"delivered twice: {delivered.most_common(3)}"
    return set(delivered) == set(ids)


def test_backfill_delivers_each_event_once_in_creation_order_and_is_safe_to_run_twice(
    start_service: StartService, workos_api: StartApi
) -> None:
    api = workos_api()
    events = api_events(450)
    api.add(events)
    ids = [event["id"] for event in events]
    service = start_service(**_api_env(api))
    since = _since()

    first = service.cli("backfill", "--since", since)

    assert first.returncode == 0, first.stderr
    assert _summary(first.stdout) == (450, 450, 0)
    wait_for(lambda: _each_once(service, ids), what="every backfilled event on the jsonl sink")
    records = service.records()
    assert [record["workos"]["id"] for record in records] == ids
    assert {record["workos"]["delivery"] for record in records} == {"api"}
    request = api.page_requests()[0].params
    assert (request["limit"], request["order"]) == ("100", "asc")
    assert "user.created" in request["events"].split(",")

    second = service.cli("backfill", "--since", since)

    assert second.returncode == 0, second.stderr
    assert _summary(second.stdout) == (450, 0, 450)
    assert "completed before" in second.stderr
    time.sleep(1)  # two delivery-loop polls: nothing new may reach the sink
    assert _each_once(service, ids)
    assert _journal_count(service.data_dir) == 450


@ORDERS
def test_backfill_killed_mid_way_resumes_without_gap_or_duplicate(
    start_service: StartService, workos_api: StartApi, newest_first: bool
) -> None:
    api = workos_api(newest_first=newest_first, page_delay_s=0.1)
    events = api_events(2000)
    api.add(events)
    service = start_service(**_api_env(api))
    since = _since()
    killed = subprocess.Popen(
        _backfill_command("--since", since),
        env=_cli_env(service.data_dir, service.env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: len(api.page_requests()) >= 6, what="a few pages fetched")
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    stored = _journal_count(service.data_dir)
    assert 0 < stored < 2000, "the backfill was not killed mid-way"

    api.page_delay_s = 0
    resumed = service.cli("backfill", "--since", since)

    assert resumed.returncode == 0, resumed.stderr
    assert "resuming an interrupted run" in resumed.stderr
    # It continues after the last committed page: nothing fetched twice, nothing skipped.
    assert _summary(resumed.stdout) == (2000 - stored, 2000 - stored, 0)
    wait_for(lambda: _each_once(service, [event["id"] for event in events]), what="all 2000 events, once")


@ORDERS
def test_webhooks_and_polls_overlap_each_event_once_and_api_only_ones_counted(
    start_service: StartService, workos_api: StartApi, newest_first: bool
) -> None:
    api = workos_api(newest_first=newest_first)
    service = start_service(**_api_env(api, WORKOS_POLL_INTERVAL="300ms"))
    first_wave = api_events(10)
    by_webhook, api_only = first_wave[:6], first_wave[6:]
    assert all(service.post(event).json()["status"] == "accepted" for event in by_webhook)

    api.add(first_wave)
    wait_for(lambda: _each_once(service, [e["id"] for e in first_wave]), what="the first wave, once each")
    # A late webhook for an event the poller already stored is a duplicate, not a second record.
    assert service.post(api_only[0]).json()["status"] == "duplicate"
    # New events appear between polls: more than a page of them, after the cursor.
    second_wave = api_events(250, start=time.time(), spacing_s=0.001)
    api.add(second_wave)
    everything = [event["id"] for event in first_wave + second_wave]
    wait_for(lambda: _each_once(service, everything), what="the second wave, once each")

    delivery = {record["workos"]["id"]: record["workos"]["delivery"] for record in service.records()}
    assert {delivery[event["id"]] for event in by_webhook} == {"webhook"}
    assert {delivery[event["id"]] for event in api_only + second_wave} == {"api"}
    assert service.metric("workos_reconciled_events_total", path="api_only") == 4 + 250
    assert service.metric("workos_event_arrival_delay_seconds_count", path="api") == 4 + 250
    assert service.metric("workos_event_arrival_delay_seconds_count", path="webhook") == 6
    source = service.status()["sources"]["events_api"]
    assert (source["state"], source["api_only"]) == ("ok", 254)
    if not newest_first:
        # After a page whose list_metadata.after was null, polls resume from the last id.
        assert any(request.params.get("after") == first_wave[-1]["id"] for request in api.requests)
    time.sleep(1)  # a few more polls over the same events change nothing
    assert _each_once(service, everything)


def _skip_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "skipped, the rest of its page is stored" in line]


@ORDERS
def test_an_event_too_deep_to_decode_is_skipped_once_and_the_rest_of_its_page_stored(
    start_service: StartService, workos_api: StartApi, newest_first: bool
) -> None:
    """Promise: one event that cannot be decoded does not hold up its page, nor the poller.

    It was 0 of 19 in 20 s: an event nested 1,100 levels deep made the page undecodable and the
    poller asked for it again forever. The newest event is the deep one, so the cursor must step
    past it too, or every poll would fetch, log and count it again.
    """
    api = workos_api(newest_first=newest_first)
    events = api_events(20)
    *others, deep = events
    api.add(others)
    api.add_raw(deep, too_deep(deep))
    service = start_service(**_api_env(api, WORKOS_POLL_INTERVAL="200ms"))

    wait_for(lambda: _each_once(service, [event["id"] for event in others]), what="the 19 other events")
    skipped = {"reason": "undecodable"}
    wait_for(lambda: service.metric("workos_forwarder_events_api_skipped_total", **skipped) == 1)
    polls = len(api.page_requests())
    wait_for(lambda: len(api.page_requests()) >= polls + 3, what="three more polls")

    assert service.metric("workos_forwarder_events_api_skipped_total", **skipped) == 1
    assert _each_once(service, [event["id"] for event in others])
    source = service.status()["sources"]["events_api"]
    assert (source["state"], source["skipped"], source["last_error"]) == ("ok", 1, None)
    (line,) = _skip_lines(service.stderr_path.read_text())
    assert deep["id"] in line and "depth limit exceeded" in line and '"reason":"undecodable"' in line


def test_backfill_skips_an_undecodable_event_stores_the_rest_and_exits_0(
    start_service: StartService, workos_api: StartApi
) -> None:
    api = workos_api()
    events = api_events(150)
    deep = events[40]
    api.add(events[:40] + events[41:])
    api.add_raw(deep, too_deep(deep))
    service = start_service(**_api_env(api))

    result = service.cli("backfill", "--since", _since())

    assert result.returncode == 0, result.stderr
    assert _summary(result.stdout) == (150, 149, 0)
    assert "skipped 1 (each logged above with its reason)" in result.stdout
    (line,) = _skip_lines(result.stderr)
    assert deep["id"] in line and "depth limit exceeded" in line
    wait_for(lambda: _each_once(service, [e["id"] for e in events if e is not deep]), what="149 events")


def test_a_page_that_is_not_json_is_asked_for_again(tmp_path: Path, workos_api: StartApi) -> None:
    api = workos_api()
    api.add(api_events(30))
    api.fail_next(200, body=b'{"object": "list", "data": [{"id": "event_')
    env = _cli_env(tmp_path, _api_env(api))

    result = subprocess.run(_backfill_command("--since", _since()), env=env, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert _summary(result.stdout) == (30, 30, 0)
    assert "the body is not JSON" in result.stderr
    assert [request.status for request in api.requests] == [200, 200]


def test_rejected_key_gives_a_clear_message_and_a_nonzero_exit(tmp_path: Path, workos_api: StartApi) -> None:
    api = workos_api(api_key="sk_test_the_other_environment")
    env = _cli_env(tmp_path, _api_env(api))

    refused = subprocess.run(_backfill_command("--since", _since()), env=env, capture_output=True, text=True)

    assert refused.returncode == 1
    assert "Events API answered 401" in refused.stderr
    assert "WORKOS_API_KEY was not accepted" in refused.stderr

    env["WORKOS_API_KEY"] = "client_01HWZ9K2M4P6R8T0V2X4Z6B8DA"
    malformed = subprocess.run(
        _backfill_command("--since", _since()), env=env, capture_output=True, text=True
    )

    assert malformed.returncode == 2
    assert "WORKOS_API_KEY" in malformed.stderr
    assert "a client id" in malformed.stderr and "starts with sk_" in malformed.stderr


def test_bad_filters_are_refused_with_the_likely_cause(tmp_path: Path, workos_api: StartApi) -> None:
    env = _cli_env(tmp_path, _api_env(workos_api()))

    no_match = subprocess.run(
        _backfill_command("--since", _since(), "--events", "authentcation.*"),
        env=env,
        capture_output=True,
        text=True,
    )
    unknown_type = subprocess.run(
        _backfill_command("--since", _since(), "--events", "user.created,user.teleported"),
        env=env,
        capture_output=True,
        text=True,
    )

    assert no_match.returncode == 2
    assert "'authentcation.*' matches no known event type" in no_match.stderr
    assert unknown_type.returncode == 1
    assert "Events API answered 422" in unknown_type.stderr
    assert "an event type the API does not know" in unknown_type.stderr


def test_rejected_key_in_serve_is_shown_and_webhooks_still_flow(
    start_service: StartService, workos_api: StartApi
) -> None:
    api = workos_api(api_key="sk_test_the_other_environment")
    service = start_service(**_api_env(api, WORKOS_POLL_INTERVAL="200ms"))

    source = wait_for(
        lambda: (status := service.status()["sources"]["events_api"])["state"] == "rejected" and status,
        what="the poller to report the refusal",
    )

    assert "401" in source["last_error"] and "WORKOS_API_KEY" in source["last_error"]
    event = make_event("authentication.password_failed")
    assert service.post(event).json()["status"] == "accepted"
    wait_for(lambda: service.record_ids() == [event["id"]], what="the webhook on the jsonl sink")
    assert service.proc is not None and service.proc.poll() is None


def test_rate_limit_and_server_errors_are_waited_out(tmp_path: Path, workos_api: StartApi) -> None:
    api = workos_api()
    api.add(api_events(250))
    api.rate_limit(1, retry_after="1")
    api.fail_next(503)
    env = _cli_env(tmp_path, _api_env(api))

    result = subprocess.run(
        _backfill_command("--since", _since(24 * 40)), env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert _summary(result.stdout) == (250, 250, 0)
    limited, failed, first_page = api.requests[:3]
    assert (limited.status, failed.status, first_page.status) == (429, 503, 200)
    assert failed.at - limited.at >= 0.95, "Retry-After: 1 was not honoured"
    assert first_page.at - failed.at >= 0.45, "no backoff after a 503"
    assert "rate limited (429)" in result.stderr
    assert "Events API keeps events for 30 days" in result.stderr
