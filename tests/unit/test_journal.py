"""The journal's operations on both engines: a real SQLite file and a real PostgreSQL schema.

Every test here runs twice (``sqlite``, ``postgresql``); the PostgreSQL run skips loudly
without a server, and fails under ``FORWARDER_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from forwarder.dedup_key import dedup_key
from forwarder.engines import Engine, SQLiteEngine, engine_for
from forwarder.journal import BACKLOG_RECOUNT_S, BacklogFull, Journal, JournalUnavailable
from forwarder.records import Entry, NewRecord
from tests.postgres import journal_schema_or_skip

OpenJournal = Callable[..., Journal]


def records(count: int, *, start: int = 0) -> list[NewRecord]:
    return [NewRecord(f"event_{i:04d}", "user.created", None, b"{}") for i in range(start, start + count)]


def entries(journal: Journal) -> list[Entry]:
    return journal.read_after(0, 10_000)


@pytest.fixture(params=["sqlite", "postgresql"])
async def open_journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenJournal]:
    """Opens journals on one fresh store (a replica each); all are closed at the end."""
    opened: list[Journal] = []
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            path = tmp_path / "journal.sqlite3"

            def new_engine() -> Engine:
                return SQLiteEngine(path)
        else:
            url, _ = stack.enter_context(journal_schema_or_skip("forwarder_unit"))

            def new_engine() -> Engine:
                return engine_for(url)

        def open_one(*, backlog_limit: int = 1_000_000) -> Journal:
            journal = Journal(new_engine(), backlog_limit=backlog_limit)
            opened.append(journal)
            return journal

        yield open_one
        for journal in opened:
            await journal.close()


async def check_batch_outcomes(journal: Journal) -> None:
    """A batch spread over several INSERT statements: ids stored before, or earlier in the
    same batch, are duplicates; every other record is new and stored once, in order."""
    await journal.append(records(10))
    batch = [*records(150)[5:], records(150)[100]]  # 5 stored before; one new id sent twice

    outcomes = await journal.append(batch)

    assert outcomes == [False] * 5 + [True] * 140 + [False]
    assert [entry.event_id for entry in entries(journal)] == [record.event_id for record in records(150)]
    await journal.close()


async def test_a_large_batch_tells_new_records_from_duplicates(open_journal: OpenJournal) -> None:
    await check_batch_outcomes(open_journal())


async def test_records_are_read_back_in_order_with_their_time(open_journal: OpenJournal) -> None:
    journal = open_journal()
    dated = NewRecord("evt_dated", "user.created", 1_700_000_000.5, b'{"a":1}')
    undated = NewRecord("evt_undated", "user.deleted", None, b'{"b":2}')
    before = time.time()

    assert await journal.append([dated, undated]) == [True, True]

    first, second = entries(journal)
    assert (first.event_id, first.event_type, first.time, first.json) == (
        "evt_dated", "user.created", 1_700_000_000.5, b'{"a":1}',
    )  # fmt: skip
    assert second.time >= before - 1  # no created_at: when it was received
    assert second.seq > first.seq
    assert journal.read_after(first.seq, 10) == [second]
    assert journal.pending(first.seq) == 1
    assert journal.oldest_after(first.seq) == pytest.approx(second.time)
    assert journal.stats().events == 2


async def test_concurrent_single_appends_share_a_write_and_each_gets_its_own_outcome(
    open_journal: OpenJournal,
) -> None:
    journal = open_journal()
    first, again, other = records(2)[0], records(2)[0], records(2)[1]

    outcomes = await asyncio.gather(
        journal.append_one(first), journal.append_one(again), journal.append_one(other)
    )

    assert outcomes == [True, False, True]  # the same id twice in one write: stored once
    assert [entry.event_id for entry in entries(journal)] == ["event_0000", "event_0001"]


def colliding_ids() -> tuple[str, str]:
    """Two ids with one dedup key when created in the same second (a birthday search over
    31 bits: about 65,000 hashes)."""
    seen: dict[int, str] = {}
    for i in itertools.count():
        event_id = f"event_{i:026d}"
        key = dedup_key(event_id, 0)
        if key in seen:
            return seen[key], event_id
        seen[key] = event_id
    raise AssertionError("unreachable")


async def test_ids_sharing_a_dedup_key_are_both_stored_and_each_deduplicated(
    open_journal: OpenJournal,
) -> None:
    """The key is not unique: a match counts as a duplicate only when the stored id is the same."""
    journal = open_journal()
    first, second = colliding_ids()
    created = 1_765_000_000.25
    assert dedup_key(first, created) == dedup_key(second, created)

    assert await journal.append([NewRecord(first, "user.created", created, b"{}")]) == [True]
    assert await journal.append(
        [NewRecord(second, "user.created", created, b"{}"), NewRecord(first, "user.created", created, b"{}")]
    ) == [True, False]
    assert await journal.append([NewRecord(second, "user.created", created, b"{}")]) == [False]
    assert [entry.event_id for entry in entries(journal)] == [first, second]


async def test_source_state_is_written_with_the_records(open_journal: OpenJournal) -> None:
    journal = open_journal()
    await journal.append(records(2), state={"events_api.cursor": "evt_2"})
    await journal.append(records(2), state={"events_api.cursor": "evt_3"})  # duplicates, new state

    assert journal.get_state("events_api.cursor") == "evt_3"
    assert journal.get_state("unknown") is None


async def test_a_cursor_starts_at_zero_and_never_moves_back(open_journal: OpenJournal) -> None:
    """A replica that lost its lease may save an older cursor after the new holder saved a newer one."""
    journal = open_journal()
    await journal.register_sinks(["datadog", "jsonl"])
    assert journal.cursors() == {"datadog": 0, "jsonl": 0}

    await journal.set_cursor("datadog", 20)
    await journal.set_cursor("datadog", 12)
    await journal.register_sinks(["datadog", "jsonl"])  # a restart keeps the cursors

    assert journal.cursors() == {"datadog": 20, "jsonl": 0}


async def test_cursors_are_shared_by_replicas_of_one_journal(open_journal: OpenJournal) -> None:
    first, second = open_journal(), open_journal()
    await first.register_sinks(["datadog"])
    await first.append(records(3))
    await first.set_cursor("datadog", 2)

    assert second.cursors() == {"datadog": 2}
    assert [entry.event_id for entry in second.read_after(2, 10)] == ["event_0002"]


async def test_prune_removes_only_records_every_sink_has_delivered_and_that_are_old(
    open_journal: OpenJournal,
) -> None:
    journal = open_journal()
    await journal.register_sinks(["datadog", "prometheus"])
    await journal.append(records(25))
    seqs = [entry.seq for entry in entries(journal)]
    await journal.set_cursor("datadog", seqs[19])
    await journal.set_cursor("prometheus", seqs[9])

    assert await journal.prune(older_than_s=3600) == 0  # delivered, but younger than the retention
    assert await journal.prune(older_than_s=0, batch=4) == 10  # in several rounds
    assert [entry.seq for entry in entries(journal)] == seqs[10:]  # prometheus has not had these
    assert journal.stats().head == seqs[-1]


async def test_prune_keeps_what_a_reader_holding_retention_has_not_read(open_journal: OpenJournal) -> None:
    """The detection engine's position holds retention as a sink's cursor does, and holds
    everything until it is saved; it never counts for the backlog limit."""
    journal, other_replica = open_journal(backlog_limit=25), open_journal()
    await journal.register_sinks(["datadog"])
    journal.hold_retention("detections.position")
    await journal.append(records(25))
    seqs = [entry.seq for entry in entries(journal)]
    await journal.set_cursor("datadog", seqs[-1])  # the sink has delivered everything

    assert await journal.prune(older_than_s=0) == 0  # no position saved: nothing read yet

    await other_replica.append([], state={"detections.position": str(seqs[14])})  # saved by either replica
    assert await journal.prune(older_than_s=0) == 15
    assert [entry.seq for entry in entries(journal)] == seqs[15:]

    # 30 past the position, over the limit of 25 if it counted: accepted, as only sinks count
    # (once the sinks' backlog is counted again after the delivery).
    await asyncio.sleep(BACKLOG_RECOUNT_S)
    await journal.append(records(20, start=25))
    assert journal.backlog() == 20


async def test_a_full_backlog_refuses_new_records_but_not_other_writes(open_journal: OpenJournal) -> None:
    journal = open_journal(backlog_limit=10)
    await journal.register_sinks(["datadog"])
    await journal.append(records(8))

    with pytest.raises(BacklogFull, match=r"8 records wait for delivery \(limit 10\)"):
        await journal.append(records(3, start=8))
    await journal.set_cursor("datadog", entries(journal)[-1].seq)  # the sink caught up

    assert journal.backlog() == 0
    # The limit is checked against a count at most BACKLOG_RECOUNT_S old: refused until the
    # next count, never longer.
    with pytest.raises(BacklogFull):
        await journal.append(records(3, start=8))
    await asyncio.sleep(BACKLOG_RECOUNT_S)
    assert await journal.append(records(3, start=8)) == [True] * 3


async def test_dead_letters_are_kept_counted_replayed_and_forgotten(open_journal: OpenJournal) -> None:
    journal = open_journal()
    await journal.append(records(3))
    first, second, third = entries(journal)
    await journal.dead_letter("datadog", [first, second], "400: field too long", attempts=5)
    await journal.dead_letter("jsonl", [third], "disk full", attempts=1)
    await journal.dead_letter("datadog", [first], "400: still too long", attempts=2)  # failed again

    letters = journal.dead_letters(sink="datadog")
    assert [(d.event_id, d.reason, d.attempts, d.state) for d in letters] == [
        ("event_0000", "400: still too long", 7, "dead"),
        ("event_0001", "400: field too long", 5, "dead"),
    ]
    assert letters[0].record == first.json
    assert journal.dead_letter_counts() == {"datadog": 2, "jsonl": 1}

    assert await journal.request_replay(sink="datadog", event_id="event_0001") == 1
    assert [d.event_id for d in journal.dead_letters(state="replay")] == ["event_0001"]
    assert await journal.request_replay() == 2  # everything still dead
    await journal.finish_replay([d.id for d in journal.dead_letters(sink="datadog")])

    assert journal.dead_letter_counts() == {"jsonl": 1}


async def test_one_process_at_a_time_holds_a_sinks_lease(open_journal: OpenJournal) -> None:
    first, second = open_journal(), open_journal()

    lease = first.claim("datadog")
    assert lease is not None and lease.alive()
    assert second.claim("datadog") is None  # held by the other replica
    other = second.claim("jsonl")  # a lease per sink
    assert other is not None

    lease.release()
    taken = second.claim("datadog")
    assert taken is not None
    taken.release()
    other.release()


async def test_a_probe_writes_nothing(open_journal: OpenJournal) -> None:
    journal = open_journal()
    await journal.probe()
    assert journal.get_state("probe") is None
    assert journal.last_error is None and journal.writer_alive


async def test_a_closed_journal_refuses_writes(open_journal: OpenJournal) -> None:
    journal = open_journal()
    await journal.close()

    with pytest.raises(JournalUnavailable, match="not running"):
        await journal.append(records(1))
    assert journal.ensure_writer() is False  # closed on purpose: not restarted


async def test_a_write_stuck_behind_a_lock_is_answered_by_its_deadline(tmp_path: Path) -> None:
    """Another process holds the write lock: the caller gets JournalUnavailable (a webhook: 503)
    by the deadline instead of waiting for the lock; the write lands later, and a retry of it
    is a duplicate, so the event is stored once."""
    journal = Journal(tmp_path / "journal.sqlite3", write_deadline_s=0.5)
    blocker = sqlite3.connect(tmp_path / "journal.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    record = records(1)[0]
    started = time.monotonic()

    with pytest.raises(JournalUnavailable, match=r"did not finish within 0.5 s"):
        await journal.append_one(record)

    assert time.monotonic() - started < 2.0
    blocker.execute("ROLLBACK")
    blocker.close()
    assert await journal.append_one(record) is False  # the first write committed after all
    assert [entry.event_id for entry in entries(journal)] == [record.event_id]
    await journal.close()


async def test_postgres_dedup_lookup_is_an_index_scan_on_a_table_never_analyzed() -> None:
    """A commit's duplicate check stays an index lookup on PostgreSQL without statistics.

    A table autovacuum never analyzed (it is off on some servers; a migrated journal's new
    column has none until it runs) got an ``IN`` list planned as a sequential scan of the whole
    table, JIT-compiled, on every commit: 1 s commits on 3,000,000 records.
    """
    with journal_schema_or_skip("forwarder_plan") as (url, _):
        journal = Journal(engine_for(url))
        try:
            engine = journal.engine
            conn = engine.connect(writer=True)
            conn.execute("ALTER TABLE events SET (autovacuum_enabled = false)")
            conn.execute(
                "INSERT INTO events (event_key, event_id, event_type, created_at, received_at, record)"
                " SELECT n, 'event_' || n, 'user.created', n, n, '{}'::bytea"
                " FROM generate_series(1, 200000) AS n"
            )
            keys = list(range(1, 33))

            def plan(statement: str) -> str:
                rows = conn.execute("EXPLAIN " + engine.sql(statement), keys).fetchall()
                return "\n".join(row[0] for row in rows)

            # Blind: without statistics the planner takes 32 keys for thousands of rows (here
            # 20,000 of 200,000; 5,500,000 of 3,000,000 on the week's journal: a full scan).
            in_list = f"SELECT event_key, event_id FROM events WHERE event_key IN ({', '.join('?' * 32)})"
            guessed = int(plan(in_list).split(" rows=", 1)[1].split()[0])
            assert guessed > 1000, "the planner has statistics: this test no longer tests anything"
            lookup = plan(engine.stored_ids(32))
            assert "Nested Loop" in lookup and "Index Cond: (event_key = " in lookup, lookup
            assert "Seq Scan on events" not in lookup and "JIT" not in lookup, lookup
            conn.close()
            assert await journal.append(records(3)) == [True] * 3  # and it still finds duplicates
            assert await journal.append(records(3)) == [False] * 3
        finally:
            await journal.close()
