"""The durable journal: every accepted event, per-sink cursors and the dead-letter table.

SQLite in WAL mode. All writes go through one writer thread that takes whatever is queued
and commits it in a single transaction (group commit): under load many webhook requests
share one fsync, while each request still waits for the commit that holds its event.
Reads use one connection per thread and never block the writer (WAL).

The public surface is deliberately small (append, cursors, dead letters, state, reads) so
that another engine can stand behind it without touching sources, normalization or sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("forwarder.journal")


class JournalUnavailable(Exception):
    """The journal cannot take the write now; the caller answers 503 with Retry-After."""

    retry_after_s = 5


class BacklogFull(JournalUnavailable):
    """Sinks are too far behind: accepting more would grow the journal without bound."""

    retry_after_s = 30


@dataclass(frozen=True, slots=True)
class NewRecord:
    event_id: str
    event_type: str
    created_at: float | None
    record: bytes


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    event_id: str
    event_type: str
    received_at: float
    record: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    sink: str
    event_id: str
    event_type: str
    reason: str
    attempts: int
    failed_at: float
    state: str
    record: bytes


@dataclass(frozen=True, slots=True)
class Stats:
    events: int
    bytes: int
    head: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    created_at REAL,
    received_at REAL NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_received_at ON events (received_at);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    record BLOB NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'dead',
    UNIQUE (sink, event_id)
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""

_STOP = object()


@dataclass(slots=True)
class _Op:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative/path`` or ``sqlite:////absolute/path`` to a filesystem path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return Path(url[len(prefix) :])


class Journal:
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "full",
        max_bytes: int = 0,
        backlog_limit: int = 1_000_000,
    ) -> None:
        self.path = path
        self._synchronous = synchronous.upper()
        self._max_bytes = max_bytes
        self._backlog_limit = backlog_limit
        self._local = threading.local()
        self._ops: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._sinks: dict[str, int] = {}
        self._subscribers: list[asyncio.Event] = []
        self.last_error: str | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_conn = self._connect(writer=True)
        self._writer_conn.executescript(_SCHEMA)
        self._writer = threading.Thread(target=self._write_loop, name="journal-writer", daemon=True)
        self._writer.start()

    # -- connections ---------------------------------------------------------------------

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        if writer and self._max_bytes:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={max(self._max_bytes // page_size, 1)}")
        if not writer:
            conn.execute("PRAGMA query_only=1")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(writer=False)
            self._local.conn = conn
        return conn

    # -- the writer thread ---------------------------------------------------------------

    async def _submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._ops.put(_Op(fn, future, loop))
        return await future

    def _write_loop(self) -> None:
        while True:
            first = self._ops.get()
            if first is _STOP:
                return
            batch: list[_Op] = [first]
            stop_after = False
            while True:
                try:
                    op = self._ops.get_nowait()
                except queue.Empty:
                    break
                if op is _STOP:
                    stop_after = True
                    break
                batch.append(op)
            self._commit(batch)
            if stop_after:
                return

    def _commit(self, batch: list[_Op]) -> None:
        conn = self._writer_conn
        outcomes: list[tuple[_Op, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                try:
                    outcomes.append((op, op.fn(conn), None))
                except BacklogFull as exc:
                    outcomes.append((op, None, exc))
            conn.execute("COMMIT")
            self.last_error = None
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            logger.error("journal write failed", extra={"error": str(exc), "operations": len(batch)})
            self.last_error = str(exc)
            failure = JournalUnavailable(f"journal write failed: {exc}")
            outcomes = [(op, None, failure) for op in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Op, Any, BaseException | None]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, settled in by_loop.items():
            # A loop that closed while we committed has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._settle, settled)

    def _settle(self, outcomes: list[tuple[_Op, Any, BaseException | None]]) -> None:
        for op, result, exc in outcomes:
            if op.future.done():
                continue
            if exc is None:
                op.future.set_result(result)
            else:
                op.future.set_exception(exc)
        for event in self._subscribers:
            event.set()

    async def close(self) -> None:
        """Finish queued writes, then stop the writer thread."""
        self._ops.put(_STOP)
        await asyncio.to_thread(self._writer.join)
        self._writer_conn.close()

    # -- writes --------------------------------------------------------------------------

    async def append(
        self, records: Sequence[NewRecord], *, state: Mapping[str, str] | None = None
    ) -> list[bool]:
        """Store records not seen before; True for each that is new, False for a duplicate id.

        ``state`` (key -> value) is written in the same transaction, so a source's cursor
        can never run ahead of, or behind, the events it stands for.
        """
        return await self._submit(lambda conn: self._append(conn, records, state))

    def _append(
        self, conn: sqlite3.Connection, records: Sequence[NewRecord], state: Mapping[str, str] | None
    ) -> list[bool]:
        if self._sinks:
            slowest = min(self._sinks.values())
            backlog = conn.execute("SELECT COUNT(*) FROM events WHERE seq > ?", (slowest,)).fetchone()[0]
            if backlog + len(records) > self._backlog_limit:
                raise BacklogFull(f"{backlog} records wait for delivery (limit {self._backlog_limit})")
        now = time.time()
        fresh: list[bool] = []
        for rec in records:
            cur = conn.execute(
                "INSERT OR IGNORE INTO events (event_id, event_type, created_at, received_at, record)"
                " VALUES (?, ?, ?, ?, ?)",
                (rec.event_id, rec.event_type, rec.created_at, now, rec.record),
            )
            fresh.append(cur.rowcount == 1)
        if state:
            conn.executemany(
                "INSERT INTO state (key, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                [(key, value, now) for key, value in state.items()],
            )
        return fresh

    async def register_sinks(self, names: Iterable[str]) -> dict[str, int]:
        """Create cursors for new sinks (at the start of what the journal holds) and return all cursors.

        Only registered sinks count for the backlog limit and retention, so a sink that was
        removed from the configuration does not hold the journal back forever.
        """
        names = list(names)

        def register(conn: sqlite3.Connection) -> dict[str, int]:
            now = time.time()
            conn.executemany(
                "INSERT OR IGNORE INTO cursors (sink, seq, updated_at) VALUES (?, 0, ?)",
                [(name, now) for name in names],
            )
            cursors = dict(conn.execute("SELECT sink, seq FROM cursors").fetchall())
            self._sinks = {name: cursors[name] for name in names}
            return dict(self._sinks)

        return await self._submit(register)

    async def set_cursor(self, sink: str, seq: int) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE cursors SET seq = ?, updated_at = ? WHERE sink = ?", (seq, time.time(), sink)
            )
            if sink in self._sinks:
                self._sinks[sink] = seq

        await self._submit(update)

    async def dead_letter(self, sink: str, entries: Sequence[Entry], reason: str, attempts: int) -> None:
        """Keep a copy of each record with the reason; a later replay re-sends it to ``sink``."""
        now = time.time()
        await self._submit(
            lambda conn: conn.executemany(
                "INSERT INTO dead_letters"
                " (sink, event_id, event_type, record, reason, attempts, failed_at, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'dead') ON CONFLICT (sink, event_id) DO UPDATE SET"
                " reason = excluded.reason, attempts = dead_letters.attempts + excluded.attempts,"
                " failed_at = excluded.failed_at, state = 'dead'",
                [(sink, e.event_id, e.event_type, e.record, reason, attempts, now) for e in entries],
            )
        )

    async def request_replay(self, *, sink: str | None = None, event_id: str | None = None) -> int:
        """Mark dead letters for replay; the running service's delivery loop re-sends them."""
        clauses, params = ["state = 'dead'"], []
        if sink:
            clauses.append("sink = ?")
            params.append(sink)
        if event_id:
            clauses.append("event_id = ?")
            params.append(event_id)
        sql = f"UPDATE dead_letters SET state = 'replay' WHERE {' AND '.join(clauses)}"
        return await self._submit(lambda conn: conn.execute(sql, params).rowcount)

    async def finish_replay(self, ids: Sequence[int]) -> None:
        """Forget dead letters that a replay delivered."""
        await self._submit(
            lambda conn: conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])
        )

    async def prune(self, older_than_s: float, *, batch: int = 10_000) -> int:
        """Delete records every registered sink has delivered and that are older than the retention."""
        if not self._sinks:
            return 0
        low = min(self._sinks.values())
        cutoff = time.time() - older_than_s
        removed = 0
        while True:
            count = await self._submit(
                lambda conn: (
                    conn.execute(
                        "DELETE FROM events WHERE seq IN"
                        " (SELECT seq FROM events WHERE seq <= ? AND received_at < ? ORDER BY seq LIMIT ?)",
                        (low, cutoff, batch),
                    ).rowcount
                )
            )
            removed += count
            if count < batch:
                return removed

    def subscribe(self) -> asyncio.Event:
        """An event set after every commit made by this process (other processes: poll)."""
        event = asyncio.Event()
        self._subscribers.append(event)
        return event

    # -- reads (blocking; call through asyncio.to_thread from async code) ---------------

    def read_after(self, seq: int, limit: int) -> list[Entry]:
        rows = self._reader().execute(
            "SELECT seq, event_id, event_type, received_at, record FROM events"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [Entry(*row) for row in rows]

    def cursors(self) -> dict[str, int]:
        return dict(self._reader().execute("SELECT sink, seq FROM cursors").fetchall())

    def oldest_after(self, seq: int) -> float | None:
        """When the oldest record after ``seq`` was received, for lag in seconds."""
        row = self._reader().execute(
            "SELECT received_at FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (seq,)
        )
        found = row.fetchone()
        return found[0] if found else None

    def dead_letters(
        self, *, sink: str | None = None, state: str | None = None, limit: int = 1000
    ) -> list[DeadLetter]:
        clauses, params = ["1 = 1"], []
        if sink:
            clauses.append("sink = ?")
            params.append(sink)
        if state:
            clauses.append("state = ?")
            params.append(state)
        rows = self._reader().execute(
            "SELECT id, sink, event_id, event_type, reason, attempts, failed_at, state, record"
            f" FROM dead_letters WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
            [*params, limit],
        )
        return [DeadLetter(*row) for row in rows]

    def dead_letter_counts(self) -> dict[str, int]:
        rows = self._reader().execute("SELECT sink, COUNT(*) FROM dead_letters GROUP BY sink")
        return dict(rows.fetchall())

    def get_state(self, key: str) -> str | None:
        row = self._reader().execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def pending(self, cursor: int) -> int:
        """Records after ``cursor``: a sink's lag in events."""
        return self._reader().execute("SELECT COUNT(*) FROM events WHERE seq > ?", (cursor,)).fetchone()[0]

    def stats(self) -> Stats:
        conn = self._reader()
        count, head = conn.execute("SELECT COUNT(*), MAX(seq) FROM events").fetchone()
        pages = (
            conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        )
        wal = self.path.with_name(self.path.name + "-wal")
        size = pages + (wal.stat().st_size if wal.exists() else 0)
        return Stats(events=count, bytes=size, head=head or 0)

    def backlog(self) -> int:
        """Records the slowest registered sink has not delivered yet."""
        if not self._sinks:
            return 0
        return self.pending(min(self._sinks.values()))

    @property
    def backlog_limit(self) -> int:
        return self._backlog_limit

    async def probe(self) -> None:
        """A real write the size of a few events, rolled back: raises JournalUnavailable if it fails.

        Readiness uses it after a failed write, to notice when the disk has room again.
        """

        def write_and_undo(conn: sqlite3.Connection) -> None:
            conn.execute("SAVEPOINT probe")
            try:
                conn.execute(
                    "INSERT INTO state (key, value, updated_at) VALUES ('probe', ?, 0)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    ("x" * 8192,),
                )
            finally:
                conn.execute("ROLLBACK TO probe")
                conn.execute("RELEASE probe")

        await self._submit(write_and_undo)
