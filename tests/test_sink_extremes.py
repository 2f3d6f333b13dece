"""One record never stalls a sink: extreme but valid input, for every built-in sink.

Promise: a batch that mixes ordinary records with extreme ones (dates in year 1, 1969 and
year 9999, ``data`` nested 200 and 1000 levels deep, 900 KB and 3 MB of data, NUL, RTL
marks, U+FFFF, emoji) is delivered in full, each extreme record either normalised into
what the destination accepts (a clamped date keeps the original in ``workos.created_at``)
or, when nothing can be made of it, named in ``PermanentError.event_ids`` with the true
reason, after the others arrived. Never a ``RetryableError``, never another exception: the
delivery loop would otherwise retry that batch forever while every later event waits.

Each sink runs against the real loopback doubles in ``tests/doubles`` (the Datadog intake
and the OTLP receiver enforce the documented contracts), with records as the journal hands
them over: ``Entry`` objects holding the stored JSON bytes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import ReadableLogRecord

from forwarder import metrics
from forwarder.delivery import DeliveryLoop
from forwarder.journal import Journal
from forwarder.normalize import NormalizeOptions, normalize
from forwarder.records import Entry
from sinks import datadog, jsonl, otlp, prometheus
from sinks.base import PermanentError
from tests.doubles import eventually
from tests.doubles.datadog_intake import DatadogIntake
from tests.doubles.otlp_receiver import OtlpReceiver
from tests.samples import journaled, make_event, stored

ODD_STRINGS = {
    "nul": "before\x00after",
    "rtl": "\u202etxt.exe\u202c",
    "noncharacter": "\uffff\ufffe",
    "bom": "\ufeffleading",
    "emoji": "\U0001f469\u200d\U0001f4bb \U0001f3f3\ufe0f\u200d\U0001f308",
    "four_byte": "\U0001d11e\U00020000",
    "separators": "line\u2028paragraph\u2029",
    "control": "\x01\x1f\x7f",
}
YEAR_1 = "0001-01-01T00:00:00.000Z"
BEFORE_EPOCH = "1969-12-31T23:59:59.000Z"
YEAR_9999 = "9999-12-31T23:59:59.999Z"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(
    event_type: str = "authentication.password_failed", *, created_at: str | None = None, **data: Any
) -> dict[str, Any]:
    event = make_event(event_type, created_at=created_at or now_iso())
    event["data"].update(data)
    return normalize(event, NormalizeOptions(service="workos-events", env="test"))


def nested(levels: int, leaf: Any = "bottom") -> Any:
    """``{"k": {"k": ... leaf}}``, ``levels`` objects deep (built without recursion)."""
    value = leaf
    for _ in range(levels):
        value = {"k": value}
    return value


def nested_mixed(levels: int) -> Any:
    """Objects and arrays alternating, ``levels`` deep: OTLP keeps these as kvlist/array values."""
    value: Any = "bottom"
    for level in range(levels):
        value = [value, level] if level % 2 else {"k": value, "n": level}
    return value


def text(size: int) -> str:
    """About ``size`` bytes of UTF-8 that do not compress to nothing and hold multi-byte characters."""
    words = itertools.cycle(["audit", "Ünïcode", "\U0001f511", "203.0.113.7", "sso", "connection"])
    parts: list[str] = []
    length = 0
    while length < size:
        word = next(words)
        parts.append(word)
        length += len(word.encode()) + 1
    return " ".join(parts[:-1])


def deeper_than_orjson_writes(levels: int) -> Entry:
    """A stored record with ``data`` nested ``levels`` deep. orjson (and so the journal)
    writes at most 255 levels, but the bytes are valid JSON another writer could have
    stored; they are spliced in so the test does not depend on any encoder's limit."""
    base = record("user.updated", deep="__DEEP__")
    (entry,) = stored([base])
    entry.json = orjson.dumps(base).replace(b'"__DEEP__"', _deep_bytes(levels))
    return entry


def _deep_bytes(levels: int) -> bytes:
    return b'{"k":' * levels + b'"bottom"' + b"}" * levels


@dataclass
class Extremes:
    """The mixed batch, and the records of interest by name."""

    entries: list[Entry]
    normal: list[dict[str, Any]]
    named: dict[str, dict[str, Any]]
    nested_1000: Entry
    undecodable: Entry

    def id(self, name: str) -> str:
        if name == "nested_1000":
            return self.nested_1000.event_id
        if name == "undecodable":
            return self.undecodable.event_id
        return str(self.named[name]["workos"]["id"])

    @property
    def all_ids(self) -> list[str]:
        return [entry.event_id for entry in self.entries]

    @property
    def deliverable_ids(self) -> list[str]:
        return [event_id for event_id in self.all_ids if event_id != self.undecodable.event_id]


def extremes() -> Extremes:
    normal = [record() for _ in range(6)]
    named = {
        "year_1": record("user.created", created_at=YEAR_1),
        "before_epoch": record("user.created", created_at=BEFORE_EPOCH),
        "year_9999": record("user.created", created_at=YEAR_9999),
        "nested_200": record("user.updated", deep=nested(200)),
        "nested_200_mixed": record("user.updated", deep=nested_mixed(200)),
        "kb_900": record("user.updated", blob=text(900_000)),
        "mb_3": record("user.updated", blob=text(3_000_000)),
        "odd_unicode": record(email="ada\x00\u202e@example.com", **ODD_STRINGS),
        "odd_type": record("user.\U0001f600.created"),
        "huge_integers": record(counter=2**64 - 1, negative=-(2**63), ratio=1e308),
    }
    ordered = [normal[0], *list(named.values())[:5], normal[1], normal[2], *list(named.values())[5:]]
    entries = stored([*ordered, normal[3]])
    nested_1000 = deeper_than_orjson_writes(1000)
    # orjson reads at most 1024 levels: this one no sink that decodes can use.
    undecodable = deeper_than_orjson_writes(1100)
    entries[3:3] = [nested_1000]
    entries[9:9] = [undecodable]
    entries += stored([normal[4], normal[5]])
    for seq, entry in enumerate(entries, 1):
        entry.seq = seq
    return Extremes(entries, normal, named, nested_1000, undecodable)


def depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def assert_names_only_the_undecodable(error: PermanentError, batch: Extremes, sink: str, what: str) -> None:
    assert error.event_ids == [batch.undecodable.event_id]
    assert error.reason.startswith(f"{sink}: ")
    assert f"{what} record {batch.undecodable.event_id}" in error.reason
    assert "depth limit" in error.reason, error.reason


# --- Datadog --------------------------------------------------------------------------------


@pytest.fixture
def intake() -> Iterator[DatadogIntake]:
    with DatadogIntake() as server:
        yield server


@pytest.fixture
async def dd_sink(intake: DatadogIntake) -> AsyncIterator[datadog.DatadogSink]:
    sink = datadog.create({"DD_API_KEY": intake.api_key, "DD_LOGS_URL": intake.url})
    assert sink is not None
    yield sink
    await sink.close()


async def test_datadog_delivers_every_extreme_record_it_can_and_names_the_one_it_cannot(
    intake: DatadogIntake, dd_sink: datadog.DatadogSink
) -> None:
    batch = extremes()

    with pytest.raises(PermanentError) as raised:
        await dd_sink.send(batch.entries)

    assert_names_only_the_undecodable(raised.value, batch, "datadog", "cannot prepare")
    assert sorted(intake.ids()) == sorted(batch.deliverable_ids)
    assert intake.violations == [], "the intake would have dropped or cut something silently"
    received = {item["workos"]["id"]: item for item in intake.received()}
    now = datetime.now(UTC).timestamp()
    for name, original in (("year_1", YEAR_1), ("before_epoch", BEFORE_EPOCH), ("year_9999", YEAR_9999)):
        log = received[batch.id(name)]
        assert abs(datetime.fromisoformat(log["date"]).timestamp() - now) < 60, name
        assert log["workos"]["created_at"] == original
        assert "backfill:true" in log["ddtags"]
    assert received[batch.id("nested_200")]["workos"]["data"]["deep"] == nested(200)
    assert received[batch.id("nested_200_mixed")]["workos"]["data"]["deep"] == nested_mixed(200)
    cut = received[batch.id("nested_1000")]
    assert cut["workos"]["truncated"] is True
    assert depth(cut) <= datadog.MAX_NESTING + 1
    assert datadog.NESTING_MARK in orjson.dumps(cut).decode()
    assert (
        received[batch.id("kb_900")]["workos"]["data"]["blob"]
        == batch.named["kb_900"]["workos"]["data"]["blob"]
    )
    big = received[batch.id("mb_3")]
    assert big["workos"]["truncated"] is True and len(orjson.dumps(big)) <= datadog.MAX_LOG_BYTES
    odd = received[batch.id("odd_unicode")]["workos"]["data"]
    assert {key: odd[key] for key in ODD_STRINGS} == ODD_STRINGS
    assert received[batch.id("odd_unicode")]["usr"]["email"] == "ada\x00\u202e@example.com"
    assert received[batch.id("huge_integers")]["workos"]["data"]["counter"] == 2**64 - 1


async def test_datadog_retry_of_the_same_batch_posts_nothing_twice_and_names_the_same_record(
    intake: DatadogIntake, dd_sink: datadog.DatadogSink
) -> None:
    # The delivery loop hands a batch that raised PermanentError(event_ids) to the dead-letter
    # table; if it ever resent it, the outcome must be the same and nothing indexed twice.
    batch = extremes()
    for _ in range(2):
        with pytest.raises(PermanentError) as raised:
            await dd_sink.send(batch.entries)
        assert raised.value.event_ids == [batch.undecodable.event_id]
    assert sorted(intake.ids()) == sorted(batch.deliverable_ids * 2)


async def test_datadog_restamps_dates_the_intake_would_drop_as_too_far_ahead(
    intake: DatadogIntake, dd_sink: datadog.DatadogSink
) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    batch = [record(created_at=soon), record(created_at=later)]

    await dd_sink.send(stored(batch))

    received = {item["workos"]["id"]: item for item in intake.received()}
    assert received[batch[0]["workos"]["id"]]["date"] == soon, "within the window: posted as stored"
    restamped = received[batch[1]["workos"]["id"]]
    assert restamped["date"] != later and restamped["workos"]["created_at"] == later
    assert "backfill:true" in restamped["ddtags"]
    assert intake.violations == []


@pytest.mark.parametrize("policy", ["keep", "drop"])
async def test_datadog_other_backfill_policies_never_fail_on_far_dates(
    intake: DatadogIntake, policy: str
) -> None:
    sink = datadog.create(
        {"DD_API_KEY": intake.api_key, "DD_LOGS_URL": intake.url, "DD_BACKFILL_POLICY": policy}
    )
    assert sink is not None
    batch = [
        record(created_at=YEAR_1),
        record(created_at=YEAR_9999),
        record(created_at=BEFORE_EPOCH),
        record(),
    ]
    dropped = metrics.REGISTRY.get_sample_value(
        "workos_forwarder_sink_backfill_dropped_total", {"sink": "datadog"}
    )

    await sink.send(stored(batch))
    await sink.close()

    if policy == "keep":
        assert sorted(intake.ids()) == sorted(item["workos"]["id"] for item in batch)
        assert [item["date"] for item in intake.received()[:3]] == [YEAR_1, YEAR_9999, BEFORE_EPOCH]
    else:
        assert intake.ids() == [batch[3]["workos"]["id"]]
        after = metrics.REGISTRY.get_sample_value(
            "workos_forwarder_sink_backfill_dropped_total", {"sink": "datadog"}
        )
        assert (after or 0) - (dropped or 0) == 3


# --- OTLP -----------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server


@pytest.fixture
async def otlp_sink(receiver: OtlpReceiver) -> AsyncIterator[otlp.OtlpSink]:
    sink = otlp.create({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base_url, "OTEL_EXPORTER_OTLP_TIMEOUT": "2"})
    assert sink is not None
    yield sink
    await sink.close()


def nanos(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000) * 1_000_000


async def test_otlp_delivers_every_extreme_record_it_can_and_names_the_one_it_cannot(
    receiver: OtlpReceiver, otlp_sink: otlp.OtlpSink
) -> None:
    batch = extremes()
    before = datetime.now(UTC).timestamp()

    with pytest.raises(PermanentError) as raised:
        await otlp_sink.send(batch.entries)

    assert_names_only_the_undecodable(raised.value, batch, "otlp", "cannot convert")
    assert sorted(receiver.ids()) == sorted(batch.deliverable_ids)
    logs = {log.attributes["workos.id"]: log for log in receiver.logs()}
    for name, original, clamped in (
        ("year_1", YEAR_1, 0),
        ("before_epoch", BEFORE_EPOCH, 0),
        ("year_9999", YEAR_9999, 2**64 - 1),
    ):
        log = logs[batch.id(name)]
        assert log.time_unix_nano == clamped, name
        assert log.attributes["workos.created_at"] == original
    for log in logs.values():
        assert log.observed_time_unix_nano > 0 and abs(log.observed_time_unix_nano / 1e9 - before) < 60
    normal = batch.normal[0]
    assert logs[normal["workos"]["id"]].time_unix_nano == nanos(normal["date"])
    assert "workos.truncated" not in logs[normal["workos"]["id"]].attributes
    for name in ("nested_200", "nested_200_mixed", "nested_1000"):
        log = logs[batch.id(name)]
        assert log.attributes["workos.truncated"] is True, name
    assert any(otlp.NESTING_MARK in str(value) for value in logs[batch.id("nested_1000")].attributes.values())
    blob = logs[batch.id("mb_3")].attributes["workos.data.blob"]
    assert blob == batch.named["mb_3"]["workos"]["data"]["blob"]
    odd = logs[batch.id("odd_unicode")].attributes
    assert {key: odd[f"workos.data.{key}"] for key in ODD_STRINGS} == ODD_STRINGS
    assert odd["user.email"] == "ada\x00\u202e@example.com"
    assert logs[batch.id("huge_integers")].attributes["workos.data.counter"] == str(2**64 - 1)
    assert logs[batch.id("odd_type")].event_name == "user.\U0001f600.created"


async def test_otlp_a_record_before_1970_does_not_stall_the_delivery_loop(
    tmp_path: Path, receiver: OtlpReceiver, otlp_sink: otlp.OtlpSink
) -> None:
    """The reported stall: a pre-1970 ``created_at`` failed to encode and the batch was
    retried forever as "collector unreachable?". Now it arrives clamped, with the events
    behind it, and nothing is dead-lettered."""
    journal = Journal(tmp_path / "journal.sqlite3")
    await journal.register_sinks([otlp_sink.name])
    loop = DeliveryLoop(otlp_sink, journal, max_attempts=3, poll_interval_s=0.05, backoff_cap_s=0.5)
    task = asyncio.create_task(loop.run())
    batch = [
        record(),
        record(created_at=BEFORE_EPOCH),
        record(created_at=YEAR_1),
        *(record() for _ in range(20)),
    ]
    await journal.append(journaled(batch))

    await eventually(lambda: len(receiver.ids()) >= len(batch), what="every event at the collector")
    loop.stop()
    await asyncio.wait_for(task, 10)

    assert sorted(receiver.ids()) == sorted(item["workos"]["id"] for item in batch)
    assert journal.cursors()[otlp_sink.name] == len(batch)
    assert journal.dead_letters(sink=otlp_sink.name) == []
    await journal.close()


async def test_otlp_an_encoding_failure_is_the_records_not_the_collectors(
    receiver: OtlpReceiver, otlp_sink: otlp.OtlpSink
) -> None:
    """The safety net behind the normalisation: an export that failed with no HTTP answer and
    no transport error is re-encoded record by record with the exporter's own encoder, and
    only what fails there is refused, with the encoder's message. The unencodable log is
    built as the sink used to build it (a negative timestamp), since the sink no longer does."""
    good = [record() for _ in range(5)]
    pending = [
        otlp._Pending(item["workos"]["id"], otlp_sink._to_log(entry))
        for item, entry in zip(good, stored(good), strict=True)
    ]
    bad_log = ReadableLogRecord(
        log_record=LogRecord(timestamp=-1_000_000, body="pre-1970", attributes={"workos.id": "event_bad"}),
        resource=pending[0].log.resource,
    )
    pending.insert(2, otlp._Pending("event_bad", bad_log))

    refused = await otlp_sink._export(pending)

    assert [event_id for event_id, _ in refused] == ["event_bad"]
    reason = refused[0][1]
    assert reason.startswith("otlp: cannot encode record event_bad: ")
    assert "out of range" in reason.lower(), reason
    assert sorted(receiver.ids()) == sorted(item["workos"]["id"] for item in good)


async def test_otlp_collector_down_is_retryable_and_says_why(
    receiver: OtlpReceiver, otlp_sink: otlp.OtlpSink
) -> None:
    from sinks.base import RetryableError

    receiver.stop()
    with pytest.raises(RetryableError) as raised:
        await otlp_sink.send(stored([record(created_at=BEFORE_EPOCH), record()]))
    assert receiver.url in raised.value.reason
    assert "ConnectionError" in raised.value.reason
    assert receiver.logs() == []


# --- JSON lines -----------------------------------------------------------------------------


async def test_jsonl_writes_every_record_as_stored_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = jsonl.create({"JSONL_OUTPUT": str(path)})
    assert sink is not None
    batch = extremes()

    await sink.send(batch.entries)
    await sink.close()

    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert lines[:-1] == [entry.json for entry in batch.entries]


async def test_jsonl_keeps_one_record_per_line_and_names_what_it_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = jsonl.create({"JSONL_OUTPUT": str(path)})
    assert sink is not None
    entries = stored([record(), record(), record()])
    entries[1].json = orjson.dumps(
        orjson.loads(entries[1].json), option=orjson.OPT_INDENT_2
    )  # raw line breaks
    entries[2].json = b'{"workos":\n'  # cannot be made one line

    with pytest.raises(PermanentError) as raised:
        await sink.send(entries)
    await sink.close()

    assert raised.value.event_ids == [entries[2].event_id]
    assert f"jsonl: cannot write record {entries[2].event_id}" in raised.value.reason
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2
    assert [orjson.loads(line)["workos"]["id"] for line in lines] == [
        entries[0].event_id,
        entries[1].event_id,
    ]


# --- Prometheus -----------------------------------------------------------------------------


async def test_prometheus_counts_every_extreme_record_by_a_bounded_label() -> None:
    sink = prometheus.create({})
    assert sink is not None
    batch = extremes()

    def total() -> float:
        return sum(
            sample.value
            for family in metrics.REGISTRY.collect()
            if family.name == "workos_events"
            for sample in family.samples
            if sample.name == "workos_events_total"
        )

    def other() -> float:
        return sum(
            sample.value
            for family in metrics.REGISTRY.collect()
            if family.name == "workos_events"
            for sample in family.samples
            if sample.name == "workos_events_total" and sample.labels["event"] == "other"
        )

    before, other_before = total(), other()
    await sink.send(batch.entries)
    await sink.close()

    assert total() - before == len(batch.entries)
    assert other() - other_before == 1  # the odd type, folded; never a label of its own
