"""The journal's periodic reads cost the same on a week of records as on an empty journal.

The housekeeping gauges read ``stats``, the lags and the backlog every second, and ``/status``
on demand. One of those statements once scanned the whole ``events`` table
(``SELECT MIN(seq), MAX(seq)``: SQLite answers a lone MIN or MAX from the end of the key,
not both at once), so a journal of 3,000,000 records read 80 KB per webhook and acknowledged
a third less. Timing would be a flaky test; SQLite's query plan says the same thing exactly.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from forwarder.engines import SQLiteEngine
from forwarder.journal import Journal
from forwarder.records import NewRecord


class _RecordingEngine(SQLiteEngine):
    """The real SQLite engine, remembering every statement its connections run."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.statements: list[str] = []

    def connect(self, *, writer: bool) -> sqlite3.Connection:
        conn = super().connect(writer=writer)
        conn.set_trace_callback(self.statements.append)
        return conn


def _scans_of_events(path: Path, statements: list[str]) -> list[str]:
    plans = []
    with sqlite3.connect(path) as conn:
        for statement in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            for *_, detail in conn.execute(f"EXPLAIN QUERY PLAN {statement}"):
                if detail.startswith("SCAN events"):
                    plans.append(f"{statement}: {detail}")
    return plans


async def test_stats_lags_and_backlog_never_scan_the_events_table(tmp_path: Path) -> None:
    engine = _RecordingEngine(tmp_path / "journal.sqlite3")
    journal = Journal(engine)
    try:
        await journal.register_sinks(["one", "two"])
        await journal.append([NewRecord(f"event_{i:04d}", "user.created", None, b"{}") for i in range(50)])
        await journal.set_cursor("one", 10)
        engine.statements.clear()
        journal.stats()
        journal.backlog()
        journal.pending(10)
        journal.oldest_after(10)
        journal.cursors()
        journal.sequence_behind()
        journal.read_after(10, 100)
        assert engine.statements
        assert _scans_of_events(engine.path, engine.statements) == []
    finally:
        await journal.close()


async def test_retention_reads_one_record_while_nothing_is_old_enough(tmp_path: Path) -> None:
    """The prune's round reads its whole batch in the writer's transaction: only worth it if
    the lowest record is old (0.2 s of stalled commits a minute on 3,000,000 records)."""
    engine = _RecordingEngine(tmp_path / "journal.sqlite3")
    journal = Journal(engine)
    try:
        await journal.register_sinks(["one"])
        await journal.append([NewRecord(f"event_{i:04d}", "user.created", None, b"{}") for i in range(50)])
        await journal.set_cursor("one", 50)
        engine.statements.clear()
        assert await journal.prune(older_than_s=3600) == 0
        assert not [s for s in engine.statements if s.lstrip().upper().startswith("DELETE")]
        assert await journal.prune(older_than_s=0) == 50
    finally:
        await journal.close()
