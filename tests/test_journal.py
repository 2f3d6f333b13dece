"""The journal on a real SQLite file: which records are new, what is pruned, and what must stay."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from forwarder.journal import Journal, JournalUnavailable, NewRecord


def records(count: int) -> list[NewRecord]:
    return [NewRecord(f"event_{i:04d}", "user.created", None, b"{}") for i in range(count)]


async def test_prune_removes_only_records_every_sink_has_delivered_and_that_are_old(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    await journal.register_sinks(["datadog", "prometheus"])
    await journal.append(records(25))
    await journal.set_cursor("datadog", 20)
    await journal.set_cursor("prometheus", 10)

    assert await journal.prune(older_than_s=3600) == 0  # delivered, but younger than the retention
    assert await journal.prune(older_than_s=0, batch=4) == 10  # in several rounds

    remaining = journal.read_after(0, 100)
    assert [entry.seq for entry in remaining] == list(range(11, 26))  # prometheus has not had these
    await journal.close()


async def test_concurrent_single_appends_share_a_write_and_each_gets_its_own_outcome(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    first, again, other = records(2)[0], records(2)[0], records(2)[1]

    outcomes = await asyncio.gather(
        journal.append_one(first), journal.append_one(again), journal.append_one(other)
    )

    assert outcomes == [True, False, True]  # the same id twice in one write: stored once
    assert [entry.event_id for entry in journal.read_after(0, 10)] == ["event_0000", "event_0001"]
    await journal.close()


async def check_batch_outcomes(journal: Journal) -> None:
    """A batch spread over several INSERT statements: ids stored before, or earlier in the
    same batch, are duplicates; every other record is new and stored once, in order."""
    await journal.append(records(10))
    batch = [*records(150)[5:], records(150)[100]]  # 5 stored before; one new id sent twice

    outcomes = await journal.append(batch)

    assert outcomes == [False] * 5 + [True] * 140 + [False]
    stored = [entry.event_id for entry in journal.read_after(0, 1000)]
    assert stored == [record.event_id for record in records(150)]
    await journal.close()


async def test_a_large_batch_tells_new_records_from_duplicates(tmp_path: Path) -> None:
    await check_batch_outcomes(Journal(tmp_path / "journal.sqlite3"))


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
    assert [entry.event_id for entry in journal.read_after(0, 10)] == [record.event_id]
    await journal.close()


async def test_a_cursor_never_moves_back(tmp_path: Path) -> None:
    """A replica that lost its lease may save an older cursor after the new holder saved a newer one."""
    journal = Journal(tmp_path / "journal.sqlite3")
    await journal.register_sinks(["datadog"])
    await journal.set_cursor("datadog", 20)
    await journal.set_cursor("datadog", 12)
    assert journal.cursors() == {"datadog": 20}
    await journal.close()
