"""The OTLP logs sink against a loopback receiver that decodes ``ExportLogsServiceRequest``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from forwarder.config import ConfigError
from forwarder.delivery import DeliveryLoop
from forwarder.journal import Journal
from forwarder.normalize import NormalizeOptions, normalize
from sinks import otlp
from sinks.base import PermanentError, RetryableError
from tests.doubles import eventually
from tests.doubles.otlp_receiver import OtlpReceiver
from tests.samples import EMAIL, USER_ID, journaled, make_event, stored


def record(event_type: str = "authentication.password_failed", **data: Any) -> dict[str, Any]:
    created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = make_event(event_type, created_at=created)
    event["data"].update(data)
    return normalize(event, NormalizeOptions(service="workos-events", env="staging"))


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [item["workos"]["id"] for item in records]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server


def make_sink(receiver: OtlpReceiver, **env: str) -> otlp.OtlpSink:
    # A short exporter timeout keeps "collector down" tests quick; the exporter retries within it.
    sink = otlp.create(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base_url, "OTEL_EXPORTER_OTLP_TIMEOUT": "1", **env}
    )
    assert sink is not None
    return sink


@pytest.fixture
async def sink(receiver: OtlpReceiver) -> AsyncIterator[otlp.OtlpSink]:
    created = make_sink(receiver)
    yield created
    await created.close()


# --- configuration --------------------------------------------------------------------------


def test_disabled_without_an_endpoint() -> None:
    assert otlp.create({"OTEL_SERVICE_NAME": "x"}) is None


async def test_logs_endpoint_is_used_as_given_and_the_generic_one_gets_v1_logs() -> None:
    generic = otlp.create({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    specific = otlp.create(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://logs-collector:9999/custom/path",
        }
    )
    assert generic is not None and specific is not None
    assert generic.endpoint == "http://collector:4318/v1/logs"
    assert specific.endpoint == "http://logs-collector:9999/custom/path"
    await generic.close()
    await specific.close()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "10s"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "collector:4318/v1/logs"),
    ],
)
def test_invalid_settings_name_their_variable(variable: str, value: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", variable: value}
    with pytest.raises(ConfigError) as raised:
        otlp.create(env)
    assert raised.value.variable == variable


def test_event_filters_come_from_otlp_events_and_otlp_exclude_events() -> None:
    sink = otlp.create(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            "OTLP_EVENTS": "dsync.*",
            "OTLP_EXCLUDE_EVENTS": "dsync.group.*",
        }
    )
    assert sink is not None
    assert sink.events.matches("dsync.user.created")
    assert not sink.events.matches("dsync.group.created")
    assert not sink.events.matches("authentication.password_failed")


# --- mapping ----------------------------------------------------------------------------------


async def test_each_event_becomes_one_log_record_with_semantic_convention_attributes(
    receiver: OtlpReceiver, sink: otlp.OtlpSink
) -> None:
    failed = record("authentication.password_failed", user_id=USER_ID)
    risky = record("authentication.radar_risk_detected")
    created = record("user.created")

    await sink.send(stored([failed, risky, created]))

    logs = {log.attributes["workos.id"]: log for log in receiver.logs()}
    assert len(logs) == 3
    log = logs[failed["workos"]["id"]]
    assert log.event_name == "authentication.password_failed"
    assert (log.severity_number, log.severity_text) == (17, "ERROR")
    assert log.body == failed["message"]
    assert log.time_unix_nano == int(datetime.fromisoformat(failed["date"]).timestamp() * 1000) * 1_000_000
    assert log.attributes["user.id"] == USER_ID
    assert log.attributes["user.email"] == EMAIL
    assert log.attributes["client.address"] == failed["network"]["client"]["ip"]
    assert log.attributes["user_agent.original"] == failed["http"]["useragent"]
    assert log.attributes["error.type"] == "invalid_credentials"
    assert log.attributes["workos.event"] == "authentication.password_failed"
    assert log.attributes["workos.category"] == "authentication"
    assert log.attributes["workos.created_at"] == failed["workos"]["created_at"]
    assert log.attributes["workos.data.error.code"] == "invalid_credentials"
    assert log.resource == {"service.name": "workos-events", "deployment.environment.name": "staging"}
    assert log.scope == "workos-forwarder"
    assert (logs[risky["workos"]["id"]].severity_number, logs[risky["workos"]["id"]].severity_text) == (
        13,
        "WARN",
    )
    assert (logs[created["workos"]["id"]].severity_number, logs[created["workos"]["id"]].severity_text) == (
        9,
        "INFO",
    )


async def test_values_protobuf_cannot_hold_do_not_block_the_batch(
    receiver: OtlpReceiver, sink: otlp.OtlpSink
) -> None:
    # The largest integers a stored record can hold (orjson reads up to 2**64 - 1) are
    # beyond protobuf's int64.
    odd = record(counter=2**64 - 1, mixed=[1, "two", None], rows=[{"big": 2**63}])

    await sink.send(stored([odd, record()]))

    log = next(log for log in receiver.logs() if log.attributes["workos.id"] == odd["workos"]["id"])
    assert log.attributes["workos.data.counter"] == str(2**64 - 1)
    assert log.attributes["workos.data.mixed"] == [1, "two", None]
    assert log.attributes["workos.data.rows"] == [{"big": str(2**63)}]
    assert len(receiver.logs()) == 2


async def test_service_name_and_resource_attributes_come_from_the_standard_variables(
    receiver: OtlpReceiver,
) -> None:
    sink = make_sink(
        receiver,
        OTEL_SERVICE_NAME="workos-audit",
        OTEL_RESOURCE_ATTRIBUTES="service.namespace=identity,team=platform%20security",
    )

    await sink.send(stored([record()]))
    await sink.close()

    (log,) = receiver.logs()
    assert log.resource == {
        "service.name": "workos-audit",
        "service.namespace": "identity",
        "team": "platform security",
        "deployment.environment.name": "staging",
    }


async def test_headers_and_compression_variables_reach_the_collector(receiver: OtlpReceiver) -> None:
    sink = make_sink(
        receiver,
        OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20token-1,x-tenant=acme",
        OTEL_EXPORTER_OTLP_LOGS_COMPRESSION="gzip",
    )

    await sink.send(stored([record()]))
    await sink.close()

    (request,) = receiver.requests()
    assert request.headers["authorization"] == "Bearer token-1"
    assert request.headers["x-tenant"] == "acme"
    assert request.headers["content-encoding"] == "gzip"
    assert len(receiver.logs()) == 1


# --- failures -------------------------------------------------------------------------------


async def test_collector_down_then_up_loses_nothing(receiver: OtlpReceiver, sink: otlp.OtlpSink) -> None:
    batch = [record() for _ in range(200)]
    receiver.stop()

    with pytest.raises(RetryableError) as raised:
        await sink.send(stored(batch))
    assert receiver.url in raised.value.reason

    receiver.start()
    await sink.send(stored(batch))
    assert sorted(receiver.ids()) == sorted(ids(batch))


async def test_throttling_beyond_the_exporter_timeout_surfaces_retry_after(
    receiver: OtlpReceiver, sink: otlp.OtlpSink
) -> None:
    receiver.fail_next(429, times=5, headers={"Retry-After": "30"})

    with pytest.raises(RetryableError) as raised:
        await sink.send(stored([record()]))

    assert raised.value.retry_after == 30
    assert receiver.logs() == []


async def test_rejected_credentials_mark_the_sink_unhealthy(
    receiver: OtlpReceiver, sink: otlp.OtlpSink
) -> None:
    receiver.fail_next(401)

    with pytest.raises(RetryableError) as raised:
        await sink.send(stored([record()]))

    assert raised.value.unhealthy
    assert "OTEL_EXPORTER_OTLP_HEADERS" in raised.value.reason


async def test_a_record_the_collector_refuses_is_isolated_and_the_rest_delivered(
    receiver: OtlpReceiver, sink: otlp.OtlpSink
) -> None:
    batch = [record() for _ in range(100)]
    poison = record(email="poison@example.com")
    batch.insert(42, poison)
    receiver.poison_marker = "poison@example.com"

    with pytest.raises(PermanentError) as raised:
        await sink.send(stored(batch))

    assert raised.value.event_ids == [poison["workos"]["id"]]
    assert sorted(receiver.ids()) == sorted(ids(batch[:42] + batch[43:]))


async def test_a_wrong_endpoint_path_marks_the_sink_unhealthy_instead_of_dropping(
    receiver: OtlpReceiver,
) -> None:
    sink = make_sink(receiver, OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"{receiver.base_url}/v1/traces")

    with pytest.raises(RetryableError) as raised:
        await sink.send(stored([record()]))
    await sink.close()

    assert raised.value.unhealthy
    assert "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT" in raised.value.reason


async def test_413_halves_the_batch_until_the_collector_takes_it(
    receiver: OtlpReceiver, sink: otlp.OtlpSink
) -> None:
    batch = [record() for _ in range(100)]
    receiver.fail_next(413)

    await sink.send(stored(batch))

    assert sorted(receiver.ids()) == sorted(ids(batch))
    assert [request.records for request in receiver.requests()] == [0, 50, 50]


# --- through the real delivery loop and journal ----------------------------------------------


async def test_delivery_loop_holds_the_cursor_while_the_collector_is_down(
    tmp_path: Path, receiver: OtlpReceiver, sink: otlp.OtlpSink
) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    await journal.register_sinks([sink.name])
    loop = DeliveryLoop(sink, journal, max_attempts=3, poll_interval_s=0.05, backoff_cap_s=0.5)
    task = asyncio.create_task(loop.run())
    receiver.stop()
    batch = [record() for _ in range(1200)]
    await journal.append(journaled(batch))

    await eventually(
        lambda: loop.status.failing_since is not None, what="the loop to notice the collector is down"
    )
    assert journal.cursors()[sink.name] == 0
    receiver.start()

    await eventually(lambda: len(receiver.ids()) >= len(batch), what="every event at the collector")
    assert sorted(receiver.ids()) == sorted(ids(batch))
    loop.stop()
    await asyncio.wait_for(task, 10)
    assert journal.cursors()[sink.name] == len(batch)
    assert journal.dead_letters(sink=sink.name) == []
    await journal.close()
