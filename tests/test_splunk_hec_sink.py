"""The Splunk HEC sink against a loopback collector that enforces HEC's documented contract.

``send`` driven directly first (one delivery attempt), then the real delivery loop over a
real SQLite journal, then the real service: with the collector busy 30% of the time and
indexer acknowledgment on, every webhook the forwarder acknowledged is indexed.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from forwarder import metrics
from forwarder.config import ConfigError
from forwarder.delivery import DeliveryLoop
from forwarder.journal import Journal
from forwarder.normalize import NormalizeOptions, normalize
from sinks import splunk_hec
from sinks.base import PermanentError, RetryableError
from tests.doubles import eventually
from tests.doubles.splunk_hec import SplunkHec
from tests.samples import journaled, make_event, stored
from tests.service import Service, wait_for

StartService = Callable[..., Service]
TOKEN = "11111111-2222-3333-4444-555555555555"


def record(event_type: str = "authentication.password_failed", **data: Any) -> dict[str, Any]:
    event = make_event(event_type, created_at="2026-01-15T10:00:00.123Z")
    event["data"].update(data)
    return normalize(event, NormalizeOptions(service="workos-events", env="test"))


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [item["workos"]["id"] for item in records]


def env_for(hec: SplunkHec, **extra: str) -> dict[str, str]:
    return {"SPLUNK_HEC_URL": hec.base_url, "SPLUNK_HEC_TOKEN": TOKEN, **extra}


@pytest.fixture
def hec() -> Iterator[SplunkHec]:
    with SplunkHec(TOKEN) as server:
        yield server


async def make_sink(hec: SplunkHec, **extra: str) -> splunk_hec.SplunkHecSink:
    sink = splunk_hec.create(env_for(hec, **extra))
    assert sink is not None
    return sink


async def retryable_send(hec: SplunkHec, **extra: str) -> RetryableError:
    """The error a sink with these settings raises for one record."""
    sink = await make_sink(hec, **extra)
    try:
        with pytest.raises(RetryableError) as raised:
            await sink.send(stored([record()]))
    finally:
        await sink.close()
    return raised.value


# --- settings ---------------------------------------------------------------------------------


def test_the_sink_is_off_without_a_url_and_the_defaults_are_documented() -> None:
    assert splunk_hec.create({}) is None
    assert splunk_hec.DEFAULT_SOURCETYPE == "_json"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SPLUNK_HEC_URL": "https://splunk:8088"}, "SPLUNK_HEC_TOKEN"),
        ({"SPLUNK_HEC_URL": "splunk:8088", "SPLUNK_HEC_TOKEN": TOKEN}, "SPLUNK_HEC_URL"),
        (
            {"SPLUNK_HEC_URL": "https://splunk:8088/services/collector/event", "SPLUNK_HEC_TOKEN": TOKEN},
            "SPLUNK_HEC_URL",
        ),
        (
            {
                "SPLUNK_HEC_URL": "https://s:8088",
                "SPLUNK_HEC_TOKEN": TOKEN,
                "SPLUNK_HEC_TLS_CA_FILE": "/nope",
            },
            "SPLUNK_HEC_TLS_CA_FILE",
        ),
        (
            {"SPLUNK_HEC_URL": "https://s:8088", "SPLUNK_HEC_TOKEN": TOKEN, "SPLUNK_HEC_ACK": "maybe"},
            "SPLUNK_HEC_ACK",
        ),
    ],
)
def test_a_bad_setting_names_its_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as raised:
        splunk_hec.create(env)
    assert raised.value.variable == variable
    assert TOKEN not in str(raised.value)


# --- one send ---------------------------------------------------------------------------------


async def test_each_record_is_one_hec_event_with_its_time_and_metadata(hec: SplunkHec) -> None:
    sink = await make_sink(hec, SPLUNK_HEC_INDEX="workos", SPLUNK_HEC_HOST="fwd-1")
    batch = [record() for _ in range(3)]
    try:
        await sink.send(stored(batch))
    finally:
        await sink.close()

    events = hec.indexed()
    assert [event["event"] for event in events] == batch  # the record, as stored
    created = datetime(2026, 1, 15, 10, 0, 0, 123000, tzinfo=UTC).timestamp()
    for event in events:
        assert event["time"] == pytest.approx(created, abs=0.0005)  # seconds, milliseconds kept
        assert (event["host"], event["source"], event["sourcetype"], event["index"]) == (
            "fwd-1",
            "workos",
            "_json",
            "workos",
        )
    (headers,) = hec.headers_seen
    assert headers["content-encoding"] == "gzip"  # one request: events one after another


async def test_an_invalid_token_is_unhealthy_names_the_variable_and_never_shows_the_token(
    hec: SplunkHec,
) -> None:
    hec.token = "another-token"
    error = await retryable_send(hec)
    assert error.unhealthy
    assert "SPLUNK_HEC_TOKEN" in error.reason
    assert TOKEN not in error.reason
    assert hec.statuses == [403]


async def test_an_invalid_event_is_isolated_by_its_number_and_the_others_indexed(hec: SplunkHec) -> None:
    hec.poison_marker = "poison@example.com"
    sink = await make_sink(hec)
    batch = [record(), record(), record(email="poison@example.com"), record(), record()]
    try:
        with pytest.raises(PermanentError) as raised:
            await sink.send(stored(batch))
    finally:
        await sink.close()
    assert raised.value.event_ids == [batch[2]["workos"]["id"]]
    assert "400" in raised.value.reason
    expected = ids(batch[:2] + batch[3:])
    assert set(hec.ids()) == set(expected)  # at least once: the two before it may come twice
    assert len(hec.statuses) == 2  # one request to learn which, one for the others


async def test_a_busy_collector_is_retried_with_nothing_refused(hec: SplunkHec) -> None:
    hec.busy_ratio = 1.0
    sink = await make_sink(hec)
    before = metrics.REGISTRY.get_sample_value(
        "workos_forwarder_sink_retries_total", {"sink": "splunk_hec", "status_class": "5xx"}
    )
    try:
        with pytest.raises(RetryableError) as raised:
            await sink.send(stored([record()]))
        assert not raised.value.unhealthy
        hec.busy_ratio = 0.0
        await sink.send(stored([record()]))
    finally:
        await sink.close()
    after = metrics.REGISTRY.get_sample_value(
        "workos_forwarder_sink_retries_total", {"sink": "splunk_hec", "status_class": "5xx"}
    )
    assert (after or 0) == (before or 0) + 1
    assert len(hec.indexed()) == 1


async def test_an_unknown_index_names_splunk_hec_index(hec: SplunkHec) -> None:
    error = await retryable_send(hec, SPLUNK_HEC_INDEX="nope")
    assert error.unhealthy
    assert "SPLUNK_HEC_INDEX" in error.reason


async def test_with_acknowledgment_a_batch_counts_only_once_indexed(hec: SplunkHec) -> None:
    hec.ack, hec.ack_after_queries = True, 2
    sink = await make_sink(hec, SPLUNK_HEC_ACK="on", SPLUNK_HEC_ACK_INTERVAL="0.05s")
    batch = [record() for _ in range(4)]
    try:
        await sink.send(stored(batch))  # returns once /services/collector/ack says indexed
        assert sorted(hec.ids()) == sorted(ids(batch))

        hec.ack_after_queries = 1000  # an indexer that never confirms
        late = await make_sink(
            hec, SPLUNK_HEC_ACK="on", SPLUNK_HEC_ACK_INTERVAL="0.05s", SPLUNK_HEC_ACK_TIMEOUT="0.3s"
        )
        try:
            with pytest.raises(RetryableError) as raised:
                await late.send(stored([record()]))
        finally:
            await late.close()
        assert "SPLUNK_HEC_ACK_TIMEOUT" in raised.value.reason
        assert len(hec.ids()) == len(batch)  # not indexed: the loop sends it again
    finally:
        await sink.close()


async def test_acknowledgment_on_a_token_without_it_names_the_setting(hec: SplunkHec) -> None:
    error = await retryable_send(hec, SPLUNK_HEC_ACK="on")
    assert error.unhealthy and "SPLUNK_HEC_ACK" in error.reason


async def test_doctor_probe_tells_a_good_token_from_a_bad_one(hec: SplunkHec) -> None:
    sink = await make_sink(hec)
    try:
        ok, detail, _ = await sink.check_token()
        assert ok, detail
        hec.token = "rotated"
        ok, detail, variable = await sink.check_token()
        assert (ok, variable) == (False, "SPLUNK_HEC_TOKEN")
        assert TOKEN not in detail
    finally:
        await sink.close()


def self_signed(into: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 signed by itself, as a fresh HEC install has one."""
    certificate, key = into / "hec.pem", into / "hec.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(certificate), str(key)


async def test_tls_is_verified_and_a_self_signed_hec_is_trusted_through_its_ca_file(tmp_path: Path) -> None:
    hec = SplunkHec(TOKEN)
    hec.tls = self_signed(tmp_path)
    with hec:
        refused = await retryable_send(hec)  # verified against the system CAs: refused
        assert "cannot reach" in refused.reason and not refused.unhealthy
        for settings in ({"SPLUNK_HEC_TLS_CA_FILE": hec.tls[0]}, {"SPLUNK_HEC_TLS_VERIFY": "off"}):
            sink = await make_sink(hec, **settings)
            try:
                await sink.send(stored([record()]))
            finally:
                await sink.close()
        assert len(hec.indexed()) == 2


# --- the delivery loop --------------------------------------------------------------------------


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = Journal(tmp_path / "journal.sqlite3")
    await journal.register_sinks(["splunk_hec"])
    yield journal
    await journal.close()


async def test_a_rejected_token_loses_nothing_once_fixed(hec: SplunkHec, journal: Journal) -> None:
    hec.token = "rotated"
    sink = await make_sink(hec)
    loop = DeliveryLoop(sink, journal, max_attempts=3, poll_interval_s=0.05, backoff_cap_s=0.3)
    task = asyncio.create_task(loop.run())
    batch = [record() for _ in range(20)]
    try:
        await journal.append(journaled(batch))
        await eventually(lambda: not loop.status.healthy, what="the sink to turn unhealthy")
        assert "SPLUNK_HEC_TOKEN" in (loop.status.last_error or "")
        hec.token = TOKEN
        await eventually(lambda: sorted(hec.ids()) == sorted(ids(batch)), timeout=20, what="every event")
        await eventually(lambda: loop.status.healthy, what="healthy again")
        assert journal.dead_letters(sink="splunk_hec") == []
    finally:
        loop.stop()
        await asyncio.wait_for(task, 10)
        await sink.close()


# --- the service --------------------------------------------------------------------------------


def test_with_the_collector_busy_30_percent_every_acknowledged_event_is_indexed(
    start_service: StartService,
) -> None:
    with SplunkHec(TOKEN, ack=True, ack_after_queries=1, busy_ratio=0.3) as hec:
        service = start_service(
            **env_for(
                hec, SPLUNK_HEC_ACK="on", SPLUNK_HEC_ACK_INTERVAL="0.05s", SPLUNK_HEC_BATCH_LINGER="0.05s"
            ),
            FORWARDER_MAX_RETRY_AFTER="0.5s",
        )
        events = [make_event("authentication.sso_failed") for _ in range(60)]
        acknowledged = [event["id"] for event in events if service.post(event).status_code == 200]
        assert len(acknowledged) == len(events)

        wait_for(lambda: set(acknowledged) <= set(hec.ids()), timeout=60, what="every acknowledged event")
        assert 503 in hec.statuses  # it was busy, and nothing was lost
        wait_for(lambda: service.status()["sinks"]["splunk_hec"]["lag_events"] == 0, what="the cursor")
        assert service.status()["sinks"]["splunk_hec"]["dead_letters"] == 0
        assert TOKEN not in service.stderr_path.read_text()
