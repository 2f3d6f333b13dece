"""Lifecycles: what happens between features, on both engines, through the real service.

Each test posts signed webhooks, keeps the ids that were acknowledged (HTTP 200), lets time,
retention, restarts and sink outages do their work, and then checks by id that every
acknowledged event reached every sink. The bug this suite was written for: once retention
had emptied the journal, SQLite numbered the next event 1 again, below every sink's cursor,
and it was acknowledged but never delivered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from forwarder.engines import SCHEMA_VERSION
from forwarder.normalize import NormalizeOptions, journal_record
from tests.conftest import with_flaky_sink
from tests.samples import make_event
from tests.service import Service, wait_for

StartService = Callable[..., Service]
QUICK_RETENTION = {"FORWARDER_RETENTION": "0s", "FORWARDER_PRUNE_INTERVAL": "0.3s"}


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> dict[str, str]:
    """The journal settings of one engine: the embedded default, or a scratch PostgreSQL schema."""
    if request.param == "sqlite":
        return {}
    url, _ = request.getfixturevalue("pg_journal")
    return {"FORWARDER_JOURNAL_URL": url}


def acknowledge(service: Service, count: int) -> list[str]:
    """Post ``count`` new events; the ids answered 200 (all of them, or the test fails)."""
    events = [make_event("user.created") for _ in range(count)]
    for event in events:
        answer = service.post(event)
        assert answer.status_code == 200, answer.text
    return [event["id"] for event in events]


def wait_delivered(ids: list[str], delivered: Callable[[], list[str]], what: str) -> None:
    wait_for(lambda: set(ids) <= set(delivered()), timeout=20, what=f"{len(ids)} acknowledged ids on {what}")


def flaky_ids(tmp_path: Path) -> list[str]:
    out = tmp_path / "flaky.out"
    return out.read_text().split() if out.exists() else []


def journal_events(service: Service) -> int:
    return int(service.status()["journal"]["events"])


def deliver_then_prune_everything(service: Service) -> list[str]:
    """Three events delivered, then retention deletes every row: the state that lost events."""
    ids = acknowledge(service, 3)
    wait_delivered(ids, service.record_ids, "jsonl")
    wait_for(lambda: journal_events(service) == 0, what="retention to empty the journal")
    return ids


def test_prune_to_empty_then_new_events_are_delivered(
    start_service: StartService, engine: dict[str, str]
) -> None:
    """Promise: an event acknowledged after retention emptied the journal is delivered."""
    service = start_service(**engine, **QUICK_RETENTION)
    deliver_then_prune_everything(service)

    second = acknowledge(service, 3)

    wait_delivered(second, service.record_ids, "jsonl")
    status = service.status()
    assert status["sinks"]["jsonl"]["cursor"] == status["journal"]["head"] >= 6


def test_prune_to_empty_restart_then_new_events_are_delivered(
    start_service: StartService, engine: dict[str, str]
) -> None:
    """Promise: the sequence survives a restart on an emptied journal (the default 7-day quiet week)."""
    service = start_service(**engine, **QUICK_RETENTION)
    first = deliver_then_prune_everything(service)
    assert service.stop() in (0, -15)

    service.start()
    second = acknowledge(service, 3)

    wait_delivered(second, service.record_ids, "jsonl")
    assert sorted(service.record_ids()) == sorted(first + second)


def test_prune_keeps_what_a_sink_far_behind_has_not_delivered(
    start_service: StartService, engine: dict[str, str], tmp_path: Path
) -> None:
    """Promise: retention never deletes a record some sink has not delivered, however old."""
    service = start_service(**engine, **QUICK_RETENTION, **with_flaky_sink(tmp_path, "retryable"))
    ids = acknowledge(service, 20)
    wait_delivered(ids, service.record_ids, "jsonl")
    wait_for(
        lambda: service.metric("workos_forwarder_sink_failures_total", sink="flaky", kind="retryable") >= 2,
        what="the flaky sink to fail",
    )
    assert journal_events(service) == 20  # several prune rounds later, all still held for "flaky"

    (tmp_path / "flaky.control").write_text("ok")

    wait_delivered(ids, lambda: flaky_ids(tmp_path), "the flaky sink")
    wait_for(lambda: journal_events(service) == 0, what="retention once every sink delivered")


def test_retention_shorter_than_a_sink_outage_loses_nothing(
    start_service: StartService, engine: dict[str, str], tmp_path: Path
) -> None:
    """Promise: a sink down for longer than the retention gets everything when it comes back,
    including events that arrived during the outage, while the other sink keeps up."""
    service = start_service(**engine, **QUICK_RETENTION, **with_flaky_sink(tmp_path, "retryable"))
    before = acknowledge(service, 5)
    wait_delivered(before, service.record_ids, "jsonl")
    during = acknowledge(service, 5)  # retention (0 s) has passed several times by now
    wait_delivered(during, service.record_ids, "jsonl")

    (tmp_path / "flaky.control").write_text("ok")

    wait_delivered(before + during, lambda: flaky_ids(tmp_path), "the flaky sink")
    after = acknowledge(service, 5)
    wait_delivered(after, lambda: flaky_ids(tmp_path), "the flaky sink")
    wait_delivered(after, service.record_ids, "jsonl")


def test_dead_letter_replay_after_the_original_rows_were_pruned(
    start_service: StartService, engine: dict[str, str], tmp_path: Path
) -> None:
    """Promise: a dead letter keeps its own copy of the record, so a replay works after retention."""
    service = start_service(
        **engine, **QUICK_RETENTION, **with_flaky_sink(tmp_path, "permanent"), FORWARDER_MAX_ATTEMPTS="1"
    )
    ids = acknowledge(service, 4)
    wait_for(lambda: service.status()["sinks"]["flaky"]["dead_letters"] == 4, what="4 dead letters for flaky")
    wait_for(lambda: journal_events(service) == 0, what="retention to remove the original rows")

    (tmp_path / "flaky.control").write_text("ok")
    replay = service.cli("dlq", "replay", "--sink", "flaky")
    assert replay.returncode == 0, replay.stderr

    wait_delivered(ids, lambda: flaky_ids(tmp_path), "the flaky sink")
    wait_for(lambda: service.status()["sinks"]["flaky"]["dead_letters"] == 0, what="dead letters cleared")
    later = acknowledge(service, 2)  # and the sequence still moves forward after all that
    wait_delivered(later, lambda: flaky_ids(tmp_path), "the flaky sink")


def empty_by_hand(service: Service, engine: dict[str, str]) -> None:
    """What an operator might do to "start over": delete every event and reset the numbering."""
    url = engine.get("FORWARDER_JOURNAL_URL")
    if url is None:
        with sqlite3.connect(service.data_dir / "journal.sqlite3") as conn:
            conn.execute("DELETE FROM events")
            conn.execute("DELETE FROM sqlite_sequence")
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM events")
        conn.execute("ALTER TABLE events ALTER COLUMN seq RESTART")


def test_a_journal_emptied_by_hand_while_stopped_keeps_delivering(
    start_service: StartService, engine: dict[str, str]
) -> None:
    """Promise: a cursor above the journal's sequence is detected at start and repaired, loudly."""
    service = start_service(**engine)
    first = acknowledge(service, 5)
    wait_delivered(first, service.record_ids, "jsonl")
    service.stop()
    empty_by_hand(service, engine)

    service.start()
    second = acknowledge(service, 3)

    wait_delivered(second, service.record_ids, "jsonl")
    assert "journal sequence was behind the delivery cursors" in service.stderr_path.read_text()


def test_a_journal_emptied_by_hand_while_running_is_repaired_and_says_so(
    start_service: StartService, engine: dict[str, str]
) -> None:
    """Promise: the same, detected at run time: /metrics counts the repair, the log says why."""
    service = start_service(**engine)
    first = acknowledge(service, 5)
    wait_delivered(first, service.record_ids, "jsonl")

    empty_by_hand(service, engine)
    wait_for(
        lambda: service.metric("workos_forwarder_journal_sequence_repairs_total") == 1,
        what="the sequence repair to be counted",
    )
    second = acknowledge(service, 3)

    wait_delivered(second, service.record_ids, "jsonl")
    assert "journal sequence was behind the delivery cursors" in service.stderr_path.read_text()


# The schema of journals written before sequence numbers were made monotonic (version 1).
VERSION_1_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    created_at REAL,
    received_at REAL NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE cursors (sink TEXT PRIMARY KEY, seq BIGINT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY, sink TEXT NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL,
    record BLOB NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL, failed_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'dead', UNIQUE (sink, event_id)
);
CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
"""


def version_1_journal(path: Path, *, delivered_up_to: int, rows: list[tuple[int, dict[str, Any]]]) -> None:
    """A journal file as version 1 wrote it: ``rows`` are (seq, WorkOS event), normalized as then."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(VERSION_1_SCHEMA)
        conn.execute("INSERT INTO cursors VALUES ('jsonl', ?, 0)", (delivered_up_to,))
        for seq, event in rows:
            record = journal_record(event, NormalizeOptions(), delivery="webhook")
            conn.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, 1.0, ?)",
                (seq, record.event_id, record.event_type, record.created_at, record.json),
            )


def test_a_version_1_journal_emptied_by_retention_is_upgraded_and_delivers(
    start_service: StartService, tmp_path: Path
) -> None:
    """Promise: a journal from before the fix, in exactly the state that lost events (cursor 3,
    no rows left), is upgraded at start and the next event is delivered."""
    version_1_journal(tmp_path / "svc" / "journal.sqlite3", delivered_up_to=3, rows=[])
    service = start_service()

    ids = acknowledge(service, 2)

    wait_delivered(ids, service.record_ids, "jsonl")
    with sqlite3.connect(service.data_dir / "journal.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert (
            "AUTOINCREMENT"
            in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()[0]
        )


def test_a_version_1_journal_with_a_backlog_keeps_it_through_the_upgrade(
    start_service: StartService, tmp_path: Path
) -> None:
    """Promise: records a version-1 journal still held for a sink are delivered after the upgrade,
    with their sequence numbers, and nothing already delivered is sent again."""
    old = [make_event("user.created") for _ in range(4)]
    version_1_journal(
        tmp_path / "svc" / "journal.sqlite3",
        delivered_up_to=11,
        rows=list(zip(range(10, 14), old, strict=True)),
    )
    service = start_service()

    wait_delivered([event["id"] for event in old[2:]], service.record_ids, "jsonl")
    new = acknowledge(service, 2)
    wait_delivered(new, service.record_ids, "jsonl")
    assert sorted(service.record_ids()) == sorted([event["id"] for event in old[2:]] + new)


# The schema the previous release (version 2) wrote, as it wrote it: the journal must open it.
VERSION_2_SCHEMA = VERSION_1_SCHEMA.replace(
    "seq INTEGER PRIMARY KEY,", "seq INTEGER PRIMARY KEY AUTOINCREMENT,"
).replace("CREATE TABLE events", "PRAGMA user_version = 2;\nCREATE TABLE events")


def test_a_version_2_journal_with_a_backlog_opens_and_delivers_every_record(
    start_service: StartService, tmp_path: Path
) -> None:
    """Promise: a journal the previous release wrote, holding records a sink has not had yet,
    opens in place; every record after the cursor is delivered once, then the new ones."""
    path = tmp_path / "svc" / "journal.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = [make_event("user.created") for _ in range(30)]
    with sqlite3.connect(path) as conn:
        conn.executescript(VERSION_2_SCHEMA)
        conn.execute("INSERT INTO cursors VALUES ('jsonl', 10, 0)")
        for event in old:
            record = journal_record(event, NormalizeOptions(), delivery="webhook")
            conn.execute(
                "INSERT INTO events (event_id, event_type, created_at, received_at, record)"
                " VALUES (?, ?, ?, 1.0, ?)",
                (record.event_id, record.event_type, record.created_at, record.json),
            )
    service = start_service()

    backlog = [event["id"] for event in old[10:]]
    wait_delivered(backlog, service.record_ids, "jsonl")
    assert service.post(old[0]).json()["status"] == "duplicate"  # the ids still deduplicate
    new = acknowledge(service, 3)
    wait_delivered(new, service.record_ids, "jsonl")
    assert sorted(service.record_ids()) == sorted(backlog + new)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        # Keyed in place: no unique text index is left to grow dear with the table.
        assert [row[1] for row in conn.execute("PRAGMA index_list(events)")] == ["events_key"]
