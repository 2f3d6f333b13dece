"""The Datadog Logs sink against a loopback intake that enforces Datadog's documented contract.

The first part drives ``send`` directly (what one delivery attempt does); the last part runs
the real delivery loop over a real SQLite journal, where retries and health are observable.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder import metrics
from forwarder.config import ConfigError
from forwarder.delivery import DeliveryLoop
from forwarder.journal import Journal
from forwarder.normalize import NormalizeOptions, normalize
from sinks import datadog
from sinks.base import PermanentError, RetryableError
from sinks.datadog.records import maybe_too_deep
from tests.doubles import eventually
from tests.doubles.datadog_intake import DatadogIntake
from tests.samples import journaled, make_event, stored

API_KEY = "test-api-key"


def record(
    event_type: str = "authentication.password_failed", *, age: timedelta = timedelta(0), **data: Any
) -> dict[str, Any]:
    """A normalized record, as the delivery loop hands it to the sink, created ``age`` ago."""
    created = (datetime.now(UTC) - age).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = make_event(event_type, created_at=created)
    event["data"].update(data)
    return normalize(event, NormalizeOptions(service="workos-events", env="test"))


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [item["workos"]["id"] for item in records]


def metric(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, {"sink": "datadog", **labels}) or 0.0


@pytest.fixture
def intake() -> Iterator[DatadogIntake]:
    with DatadogIntake(API_KEY) as server:
        yield server


@pytest.fixture
async def sink(intake: DatadogIntake) -> AsyncIterator[datadog.DatadogSink]:
    created = datadog.create({"DD_API_KEY": API_KEY, "DD_LOGS_URL": intake.url})
    assert created is not None
    yield created
    await created.close()


async def send_until_delivered(
    sink: datadog.DatadogSink, batch: list[dict[str, Any]], *, within: float = 20.0
) -> int:
    """What the delivery loop does with retryable errors, minus backoff: the number of attempts."""
    deadline = time.monotonic() + within
    attempts = 0
    while True:
        attempts += 1
        try:
            await sink.send(stored(batch))
            return attempts
        except RetryableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


# --- configuration --------------------------------------------------------------------------


def test_disabled_without_an_api_key() -> None:
    assert datadog.create({}) is None
    assert datadog.create({"DD_SITE": "datadoghq.eu"}) is None


@pytest.mark.parametrize("site", datadog.SITES)
async def test_every_documented_site_maps_to_its_intake(site: str) -> None:
    sink = datadog.create({"DD_API_KEY": API_KEY, "DD_SITE": site})
    assert sink is not None
    assert sink.url == f"https://http-intake.logs.{site}/api/v2/logs"
    await sink.close()


def test_unknown_site_is_a_config_error_that_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        datadog.create({"DD_API_KEY": API_KEY, "DD_SITE": "app.datadoghq.com"})
    assert raised.value.variable == "DD_SITE"
    for site in datadog.SITES:
        assert site in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DD_COMPRESSION_LEVEL", "10"), ("DD_MAX_IN_FLIGHT", "0"), ("DD_BACKFILL_POLICY", "ignore")],
)
def test_invalid_settings_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        datadog.create({"DD_API_KEY": API_KEY, variable: value})
    assert raised.value.variable == variable


async def test_event_filters_come_from_dd_events_and_dd_exclude_events() -> None:
    sink = datadog.create(
        {
            "DD_API_KEY": API_KEY,
            "DD_EVENTS": "authentication.*,connection.*",
            "DD_EXCLUDE_EVENTS": "*_succeeded",
        }
    )
    assert sink is not None
    assert sink.events.matches("authentication.password_failed")
    assert sink.events.matches("connection.activated")
    assert not sink.events.matches("authentication.password_succeeded")
    assert not sink.events.matches("user.created")
    await sink.close()


# --- one send -------------------------------------------------------------------------------


async def test_ten_thousand_events_all_arrive_once(intake: DatadogIntake, sink: datadog.DatadogSink) -> None:
    batch = [record() for _ in range(10_000)]

    for start in range(0, len(batch), sink.max_batch):
        await sink.send(stored(batch[start : start + sink.max_batch]))

    assert sorted(intake.ids()) == sorted(ids(batch))
    assert intake.violations == []
    requests = intake.requests()
    assert all(request.status == 202 and request.entries <= 1000 for request in requests)
    assert all(request.content_encoding == "gzip" for request in requests)
    assert sum(request.wire_bytes for request in requests) < sum(
        request.uncompressed_bytes for request in requests
    )


async def test_every_request_names_its_origin_as_datadog_s_shippers_do(
    intake: DatadogIntake, sink: datadog.DatadogSink
) -> None:
    intake.fail_next(500)  # a retried request carries them too
    await send_until_delivered(sink, [record()])
    await sink.send(stored([record(), record()]))
    version = importlib.metadata.version("workos-forwarder")
    requests = intake.requests()
    assert len(requests) == 3
    assert {(r.origin, r.origin_version) for r in requests} == {("workos-forwarder", version)}


async def test_a_batch_over_the_request_size_limit_is_posted_in_several_requests(
    intake: DatadogIntake, sink: datadog.DatadogSink
) -> None:
    batch = [record(notes="n" * 10_000) for _ in range(1000)]  # about 10 MB of JSON

    await sink.send(stored(batch))

    assert sorted(intake.ids()) == sorted(ids(batch))
    requests = intake.requests()
    assert len(requests) >= 3
    assert all(request.status == 202 and request.uncompressed_bytes <= 4_250_000 for request in requests)


async def test_413_from_a_stricter_proxy_splits_the_batch_until_it_fits(sink: datadog.DatadogSink) -> None:
    with DatadogIntake(API_KEY, max_uncompressed_bytes=100_000) as proxy:
        sink.url = proxy.url
        batch = [record(notes="n" * 1000) for _ in range(500)]  # about 1 MB of JSON

        await sink.send(stored(batch))

        assert sorted(proxy.ids()) == sorted(ids(batch))
        statuses = [request.status for request in proxy.requests()]
        assert statuses[0] == 413
        assert statuses.count(202) >= 10
        assert all(r.uncompressed_bytes <= 100_000 for r in proxy.requests() if r.status == 202)


async def test_a_poison_record_is_isolated_and_the_rest_of_its_batch_delivered(
    intake: DatadogIntake, sink: datadog.DatadogSink
) -> None:
    batch = [record() for _ in range(1000)]
    poison = record(email="poison@example.com")
    batch.insert(637, poison)
    intake.poison_marker = "poison@example.com"

    with pytest.raises(PermanentError) as raised:
        await sink.send(stored(batch))

    assert raised.value.event_ids == [poison["workos"]["id"]]
    assert "400" in raised.value.reason
    assert "rejected record" in raised.value.reason  # the intake's own answer, for the dead-letter table
    delivered = intake.ids()
    assert sorted(delivered) == sorted(ids(batch[:637] + batch[638:]))


async def test_429_surfaces_retry_after_to_the_delivery_loop(
    intake: DatadogIntake, sink: datadog.DatadogSink
) -> None:
    batch = [record()]
    intake.fail_next(429, headers={"Retry-After": "2"})

    with pytest.raises(RetryableError) as raised:
        await sink.send(stored(batch))

    assert raised.value.retry_after is not None
    assert raised.value.retry_after >= 2
    assert not raised.value.unhealthy
    await sink.send(stored(batch))
    assert intake.ids() == ids(batch)


async def test_x_ratelimit_reset_is_honoured_too(intake: DatadogIntake, sink: datadog.DatadogSink) -> None:
    intake.fail_next(429, headers={"X-RateLimit-Reset": "7"})

    with pytest.raises(RetryableError) as raised:
        await sink.send(stored([record()]))

    assert raised.value.retry_after == 7


@pytest.mark.parametrize("status", [408, 500, 502, 503])
async def test_transient_answers_are_retryable(
    intake: DatadogIntake, sink: datadog.DatadogSink, status: int
) -> None:
    intake.fail_next(status)
    before = metric("workos_forwarder_sink_retries_total", status_class=f"{status // 100}xx")

    with pytest.raises(RetryableError) as raised:
        await sink.send(stored([record()]))

    assert str(status) in raised.value.reason
    assert metric("workos_forwarder_sink_retries_total", status_class=f"{status // 100}xx") == before + 1


async def test_intake_down_for_a_while_then_back_loses_nothing(
    intake: DatadogIntake, sink: datadog.DatadogSink
) -> None:
    batch = [record() for _ in range(300)]
    intake.down_for(1.0)

    attempts = await send_until_delivered(sink, batch)

    assert attempts > 1
    assert sorted(intake.ids()) == sorted(ids(batch))


async def test_unreachable_intake_is_retryable(sink: datadog.DatadogSink, intake: DatadogIntake) -> None:
    intake.stop()
    before = metric("workos_forwarder_sink_requests_total", status_class="error")

    with pytest.raises(RetryableError) as raised:
        await sink.send(stored([record()]))

    assert intake.url in raised.value.reason
    assert metric("workos_forwarder_sink_requests_total", status_class="error") == before + 1


async def test_rejected_api_key_marks_the_sink_unhealthy_and_names_the_fix(
    intake: DatadogIntake, sink: datadog.DatadogSink, caplog: pytest.LogCaptureFixture
) -> None:
    batch = [record() for _ in range(5)]
    intake.api_key = "rotated-key"

    for _ in range(3):
        with pytest.raises(RetryableError) as raised:
            await sink.send(stored(batch))
        assert raised.value.unhealthy
        assert "DD_API_KEY" in raised.value.reason
        assert "DD_SITE" in raised.value.reason

    assert len([line for line in caplog.records if "DD_API_KEY" in line.getMessage()]) == 1
    intake.api_key = API_KEY
    await sink.send(stored(batch))
    assert sorted(intake.ids()) == sorted(ids(batch))


async def test_a_partly_accepted_batch_is_not_posted_twice_on_retry(intake: DatadogIntake) -> None:
    sink = datadog.create({"DD_API_KEY": API_KEY, "DD_LOGS_URL": intake.url, "DD_MAX_IN_FLIGHT": "1"})
    assert sink is not None
    batch = [record(notes="n" * 10_000) for _ in range(1000)]  # three requests
    intake.fail_next(500)  # the first request fails, the two others are accepted

    with pytest.raises(RetryableError):
        await sink.send(stored(batch))
    await sink.send(stored(batch))
    await sink.close()

    assert sorted(intake.ids()) == sorted(ids(batch))  # each id exactly once


async def test_an_event_three_days_old_is_restamped_with_its_original_time_kept(
    intake: DatadogIntake, sink: datadog.DatadogSink
) -> None:
    old, fresh = record(age=timedelta(days=3)), record()

    await sink.send(stored([old, fresh]))

    arrived = {item["workos"]["id"]: item for item in intake.received()}
    restamped = arrived[old["workos"]["id"]]
    assert abs(datetime.fromisoformat(restamped["date"]).timestamp() - time.time()) < 60
    assert restamped["workos"]["created_at"] == old["workos"]["created_at"]
    assert "backfill:true" in restamped["ddtags"].split(",")
    untouched = arrived[fresh["workos"]["id"]]
    assert untouched["date"] == fresh["date"]
    assert "backfill:true" not in untouched["ddtags"].split(",")
    assert intake.violations == []


async def test_backfill_policy_keep_sends_the_original_date(intake: DatadogIntake) -> None:
    sink = datadog.create({"DD_API_KEY": API_KEY, "DD_LOGS_URL": intake.url, "DD_BACKFILL_POLICY": "keep"})
    assert sink is not None
    old = record(age=timedelta(days=3))

    await sink.send(stored([old]))
    await sink.close()

    assert intake.received()[0]["date"] == old["date"]
    assert len(intake.violations) == 1  # Datadog would drop it: the operator chose that knowingly


async def test_backfill_policy_drop_skips_old_events_and_counts_them(intake: DatadogIntake) -> None:
    sink = datadog.create({"DD_API_KEY": API_KEY, "DD_LOGS_URL": intake.url, "DD_BACKFILL_POLICY": "drop"})
    assert sink is not None
    old, fresh = record(age=timedelta(days=3)), record()
    before = metric("workos_forwarder_sink_backfill_dropped_total")

    await sink.send(stored([old, fresh]))
    await sink.close()

    assert intake.ids() == [fresh["workos"]["id"]]
    assert metric("workos_forwarder_sink_backfill_dropped_total") == before + 1


@pytest.mark.parametrize("where", ["message", "data", "error"])
async def test_a_record_over_1_mb_is_shortened_on_purpose(
    intake: DatadogIntake, sink: datadog.DatadogSink, where: str
) -> None:
    big = {
        "message": lambda: {**record(), "message": "m" * 2_000_000},
        "data": lambda: record(notes="d" * 2_000_000),
        "error": lambda: record(error={"code": "invalid_credentials", "message": "e" * 1_100_000}),
    }[where]()

    await sink.send(stored([big]))

    (arrived,) = intake.received()
    assert intake.violations == []
    assert len(orjson.dumps(arrived)) <= 1_000_000
    assert arrived["workos"]["truncated"] is True
    assert arrived["workos"]["id"] == big["workos"]["id"]
    assert arrived["message"].startswith(big["message"][:1000])


LIMIT = datadog.MAX_NESTING


@pytest.mark.parametrize(
    ("objects", "arrays", "maybe"),
    [
        (LIMIT, 0, False),
        (LIMIT + 1, 0, True),
        (0, LIMIT + 1, True),
        (LIMIT - 9, 9, False),
        (LIMIT - 9, 10, True),
    ],
)
def test_the_depth_pre_check_counts_objects_and_arrays_alike(objects: int, arrays: int, maybe: bool) -> None:
    # Only a record holding more than MAX_NESTING openings is decoded to measure its depth: a
    # count that missed one kind, or one far from the others, would post a too-deep record uncut.
    padding = '"' + "x" * 300 + '"'
    value = "1"
    for _ in range(arrays):
        value = f"[{padding},{value}]"
    for _ in range(objects):
        value = f'{{"padding":{padding},"k":{value}}}'

    assert maybe_too_deep(value.encode()) is maybe


async def test_compression_level_zero_posts_plain_json(intake: DatadogIntake) -> None:
    sink = datadog.create({"DD_API_KEY": API_KEY, "DD_LOGS_URL": intake.url, "DD_COMPRESSION_LEVEL": "0"})
    assert sink is not None

    await sink.send(stored([record()]))
    await sink.close()

    (request,) = intake.requests()
    assert request.content_encoding == ""
    assert request.wire_bytes == request.uncompressed_bytes


async def test_requests_bytes_and_last_success_are_measured(
    intake: DatadogIntake, sink: datadog.DatadogSink
) -> None:
    before_2xx = metric("workos_forwarder_sink_requests_total", status_class="2xx")
    before_bytes = metric("workos_forwarder_sink_bytes_total")

    await sink.send(stored([record()]))

    assert metric("workos_forwarder_sink_requests_total", status_class="2xx") == before_2xx + 1
    assert metric("workos_forwarder_sink_bytes_total") == before_bytes + intake.requests()[0].wire_bytes
    assert abs(metric("workos_forwarder_sink_last_success_timestamp_seconds") - time.time()) < 60


# --- through the real delivery loop and journal ----------------------------------------------


class Pipeline:
    """A real SQLite journal and the real delivery loop feeding one sink."""

    def __init__(self, journal: Journal, loop: DeliveryLoop, task: asyncio.Task[None]) -> None:
        self.journal, self.loop, self.task = journal, loop, task

    async def append(self, records: list[dict[str, Any]]) -> None:
        await self.journal.append(journaled(records))


@pytest.fixture
async def pipeline(tmp_path: Path, sink: datadog.DatadogSink) -> AsyncIterator[Pipeline]:
    journal = Journal(tmp_path / "journal.sqlite3")
    await journal.register_sinks([sink.name])
    loop = DeliveryLoop(sink, journal, max_attempts=3, poll_interval_s=0.05, backoff_cap_s=0.5)
    task = asyncio.create_task(loop.run())
    yield Pipeline(journal, loop, task)
    loop.stop()
    await asyncio.wait_for(task, 10)
    await journal.close()


def cursor_reached(pipeline: Pipeline, records: list[Mapping[str, Any]]) -> bool:
    return pipeline.journal.cursors()["datadog"] >= len(records)


async def test_delivery_survives_the_intake_going_away_and_coming_back(
    intake: DatadogIntake, pipeline: Pipeline
) -> None:
    intake.stop()
    batch = [record() for _ in range(2500)]
    await pipeline.append(batch)
    await eventually(lambda: pipeline.loop.status.failing_since is not None, what="the loop to notice")
    assert pipeline.journal.cursors()["datadog"] == 0

    intake.start()

    await eventually(lambda: len(intake.ids()) >= len(batch), what="every event at the intake")
    assert sorted(intake.ids()) == sorted(ids(batch))
    await eventually(lambda: cursor_reached(pipeline, batch), what="the cursor to advance")
    assert pipeline.journal.dead_letters(sink="datadog") == []


async def test_429_retry_after_delays_the_next_attempt(intake: DatadogIntake, pipeline: Pipeline) -> None:
    intake.fail_next(429, headers={"Retry-After": "2"})
    batch = [record()]

    await pipeline.append(batch)

    await eventually(lambda: intake.ids() == ids(batch), what="the event after the 429")
    throttled, accepted = intake.requests()
    assert (throttled.status, accepted.status) == (429, 202)
    assert accepted.at - throttled.at >= 2.0


async def test_rejected_key_makes_the_sink_unhealthy_and_nothing_is_lost_once_fixed(
    intake: DatadogIntake, pipeline: Pipeline
) -> None:
    intake.api_key = "rotated-key"
    batch = [record() for _ in range(50)]
    await pipeline.append(batch)

    await eventually(lambda: not pipeline.loop.status.healthy, what="the sink to turn unhealthy")
    assert metric("workos_forwarder_sink_healthy") == 0
    assert "DD_API_KEY" in (pipeline.loop.status.last_error or "")
    intake.api_key = API_KEY

    await eventually(lambda: sorted(intake.ids()) == sorted(ids(batch)), timeout=20, what="every event")
    await eventually(lambda: pipeline.loop.status.healthy, what="the sink to be healthy again")
    assert metric("workos_forwarder_sink_healthy") == 1
    assert pipeline.journal.dead_letters(sink="datadog") == []


async def test_poison_record_lands_in_the_dead_letter_table_with_the_answer(
    intake: DatadogIntake, pipeline: Pipeline
) -> None:
    intake.poison_marker = "poison@example.com"
    poison = record(email="poison@example.com")
    batch = [record(), poison, record()]

    await pipeline.append(batch)

    await eventually(lambda: cursor_reached(pipeline, batch), what="the cursor to pass the batch")
    assert sorted(intake.ids()) == sorted(ids([batch[0], batch[2]]))
    (letter,) = pipeline.journal.dead_letters(sink="datadog")
    assert letter.event_id == poison["workos"]["id"]
    assert "400" in letter.reason
