"""The SQLite journal's write-ahead log stays within its budget, even while readers hold it.

A passive checkpoint (what SQLite runs on its own every ``wal_autocheckpoint`` pages) cannot
start the WAL over while a reader still reads an older snapshot from it; delivery loops read
all the time, so under a steady load the WAL could grow without end. These tests write a
steady stream into a real SQLite journal while two readers, like delivery loops holding their
snapshot while they send a batch, take turns so that one of them nearly always holds one, and
measure the files on disk the whole time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from forwarder.engines import WAL_RESERVE_UNCAPPED, SQLiteEngine, WalBudget
from forwarder.journal import Journal
from forwarder.records import NewRecord

MiB = 1024 * 1024
PAYLOAD = b"x" * 1_800
COMMITS = 400
PER_COMMIT = 10
"""7 MB of records in 400 commits: twice the uncapped WAL bound, eight times its checkpoint."""
HOLD_S = 0.004
"""How long a reader keeps its snapshot per batch (a delivery loop sending what it read)."""


@dataclass
class DiskPeaks:
    """The largest WAL and journal (database, WAL and index) seen by a thread sampling them."""

    path: Path
    wal: int = 0
    total: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        sizes = {}
        for suffix in ("", "-wal", "-shm"):
            try:
                sizes[suffix] = self.path.with_name(self.path.name + suffix).stat().st_size
            except FileNotFoundError:
                sizes[suffix] = 0
        self.wal = max(self.wal, sizes["-wal"])
        self.total = max(self.total, sum(sizes.values()))
        self.samples += 1

    def run(self) -> None:
        while not self._stop.wait(0.001):
            self.sample()

    def stop(self) -> None:
        self._stop.set()


def deliver_holding_snapshots(engine: SQLiteEngine, stop: threading.Event, offset_s: float) -> None:
    """A delivery loop: read the next batch in a read transaction and keep it while sending."""
    conn = engine.connect(writer=False)
    time.sleep(offset_s)
    cursor = 0
    try:
        while not stop.is_set():
            conn.execute("BEGIN")
            rows = conn.execute(
                "SELECT seq, record FROM events WHERE seq > ? ORDER BY seq LIMIT 50", (cursor,)
            ).fetchall()
            time.sleep(HOLD_S)
            conn.execute("COMMIT")
            if rows:
                cursor = rows[-1][0]
    finally:
        conn.close()


async def write_steadily(journal: Journal, engine: SQLiteEngine, peaks: DiskPeaks) -> None:
    stop = threading.Event()
    readers = [
        threading.Thread(target=deliver_holding_snapshots, args=(engine, stop, offset), daemon=True)
        for offset in (0.0, HOLD_S / 2)
    ]
    sampler = threading.Thread(target=peaks.run, daemon=True)
    for thread in [*readers, sampler]:
        thread.start()
    try:
        number = 0
        for _ in range(COMMITS):
            batch = [
                NewRecord(f"event_{number + i:06d}", "user.created", time.time(), PAYLOAD)
                for i in range(PER_COMMIT)
            ]
            number += PER_COMMIT
            assert all(await journal.append(batch))
            peaks.sample()
            await asyncio.sleep(0)
    finally:
        stop.set()
        peaks.stop()
        for thread in [*readers, sampler]:
            thread.join(5)


@pytest.mark.parametrize("max_bytes", [0, 16 * MiB], ids=["uncapped", "capped-16MiB"])
async def test_the_wal_stays_within_its_reserve_while_delivery_loops_hold_snapshots(
    tmp_path: Path, max_bytes: int
) -> None:
    path = tmp_path / "journal.sqlite3"
    peaks = DiskPeaks(path)
    engine = SQLiteEngine(path, max_bytes=max_bytes)
    budget = WalBudget.of(max_bytes)
    journal = Journal(engine)
    try:
        await write_steadily(journal, engine, peaks)
        stored = journal.stats().head
    finally:
        await journal.close()

    assert stored == COMMITS * PER_COMMIT
    assert peaks.samples > COMMITS
    assert peaks.wal <= budget.reserve, f"WAL peaked at {peaks.wal:,} bytes, reserve {budget.reserve:,}"
    if max_bytes:
        assert peaks.total <= max_bytes, f"journal peaked at {peaks.total:,} bytes, cap {max_bytes:,}"
    else:
        assert budget.reserve == WAL_RESERVE_UNCAPPED


def test_the_cap_is_split_between_the_database_and_its_wal(tmp_path: Path) -> None:
    """``max_page_count`` leaves the WAL's reserve free; every writer connection gets the bounds."""
    cap = 16 * MiB
    engine = SQLiteEngine(tmp_path / "journal.sqlite3", max_bytes=cap)
    conn = engine.connect(writer=True)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        max_pages = conn.execute("PRAGMA max_page_count").fetchone()[0]
        checkpoint_pages = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        size_limit = conn.execute("PRAGMA journal_size_limit").fetchone()[0]
    finally:
        conn.close()
    budget = engine.budget
    assert (budget.reserve, budget.database) == (4 * MiB, 12 * MiB)
    assert max_pages * page_size == budget.database
    assert checkpoint_pages * page_size == size_limit == budget.checkpoint == 1 * MiB
    assert WalBudget.of(0).database == 0
    assert WalBudget.of(10 * 1024 * MiB).reserve == 64 * MiB


def test_a_full_database_refuses_the_insert_not_the_wal(tmp_path: Path) -> None:
    """At the cap the refusal is SQLite's own "database or disk is full", as before."""
    engine = SQLiteEngine(tmp_path / "journal.sqlite3", max_bytes=1 * MiB)
    conn = engine.connect(writer=True)
    try:
        conn.execute("CREATE TABLE filler (blob BLOB)")
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for _ in range(1_000):
                conn.execute("INSERT INTO filler VALUES (?)", (PAYLOAD,))
    finally:
        conn.close()
