"""The durable journal: every accepted event, per-sink cursors and the dead-letter table.

``Journal`` is the store's operations: deduplicating inserts, cursors, dead letters and
source state, retention, probes, leases and statistics. Writes run through one
``GroupCommitWriter`` (``forwarder.group_commit``), so many webhook requests share one
commit; reads use one connection per thread. The SQL is written once;
``forwarder.engines`` supplies SQLite (embedded default, WAL) or PostgreSQL (several
replicas on one journal).

The public surface is deliberately small (append, cursors, dead letters, state, leases,
reads), so sources, normalization and sinks never see which engine is behind it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from forwarder import failpoints, metrics
from forwarder.dedup_key import dedup_key
from forwarder.engines import Engine, Lease, SQLiteEngine
from forwarder.errors import BacklogFull, JournalUnavailable
from forwarder.group_commit import WRITE_DEADLINE_S, GroupCommitWriter, Operation, Transaction
from forwarder.read_connections import ReadConnections
from forwarder.read_thread import PERIODIC_READS
from forwarder.records import DeadLetter, Entry, NewRecord, Stats

logger = logging.getLogger("forwarder.journal")
_MAX_INSERT_ROWS = 64
BACKLOG_RECOUNT_S = 1.0
"""How old the backlog count the limit is checked against may be (``Journal._estimated_backlog``)."""

OnStore = Callable[[Transaction, Sequence[NewRecord], list[bool]], None]
"""Called inside the transaction that stores records, with each one's "is new" flag."""


@functools.cache
def _insert_events(rows: int) -> str:
    """One INSERT for ``rows`` records.

    A statement per batch rather than per record: with PostgreSQL each statement is a round
    trip (30 records a commit took 30 of them), with SQLite a GIL hand-off.
    """
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO events (event_key, event_id, event_type, created_at, received_at, record)"
        f" VALUES {values}"
    )


def _chunks(count: int) -> Iterator[tuple[int, int]]:
    """(start, size) covering ``count`` items in power-of-two sizes of at most
    ``_MAX_INSERT_ROWS``: a few statement shapes to cache, a few statements a commit."""
    start = 0
    while start < count:
        size = min(_MAX_INSERT_ROWS, 1 << ((count - start).bit_length() - 1))
        yield start, size
        start += size


class Journal:
    def __init__(
        self,
        engine: Engine | Path,
        *,
        backlog_limit: int = 1_000_000,
        write_deadline_s: float = WRITE_DEADLINE_S,
    ) -> None:
        self.engine: Engine = SQLiteEngine(engine) if isinstance(engine, Path) else engine
        self.location = self.engine.location
        self._backlog_limit = backlog_limit
        self._reads = ReadConnections(self.engine)
        self._sinks: list[str] = []
        self._backlog_estimate = 0
        self._backlog_recount_at = 0.0
        """When ``_estimated_backlog`` counts again (monotonic); 0 forces a count."""
        self._retention_holds: list[str] = []
        """State keys holding a reader's position (``hold_retention``)."""
        self._waiting: list[tuple[NewRecord, asyncio.Future[bool]]] = []
        self.on_store: OnStore | None = None
        """What else is written with stored records, in their transaction (the membership map)."""
        conn = self.engine.connect(writer=True)
        self.engine.create_schema(conn)
        self._repair_sequence(Transaction(conn, self.engine.sql), begin=True)
        self._writer = GroupCommitWriter(
            self.engine, conn, write_deadline_s=write_deadline_s, refusals=(BacklogFull,)
        )

    # -- the writer's health -------------------------------------------------------------

    @property
    def last_error(self) -> str | None:
        """Why the last write failed; None once a write succeeds again."""
        return self._writer.last_error

    @property
    def writer_alive(self) -> bool:
        return self._writer.alive

    def ensure_writer(self) -> bool:
        """Start a new writer thread if the last one died; True if it had to (it is counted)."""
        return self._writer.ensure_running()

    async def close(self) -> None:
        """Finish queued writes, then stop the writer thread (bounded: it is a daemon thread)."""
        await self._writer.close()

    # -- sequence numbers ----------------------------------------------------------------

    def _repair_sequence(self, tx: Transaction, *, begin: bool = False) -> tuple[int, int]:
        """Raise the sequence above every record and cursor; answers (floor, high water before).

        A sink's cursor says "delivered up to here"; a record numbered at or below it would
        never be read. Sequence numbers must therefore only grow, whatever retention or a
        person deletes: this is checked when the journal opens and, through ``check_sequence``,
        while it runs.
        """
        if begin:
            tx.execute(self.engine.begin)
            self.engine.serialize_writers(tx.conn)
        try:
            floor = int(
                tx.execute(
                    "SELECT MAX(high) FROM (SELECT MAX(seq) AS high FROM events"
                    " UNION ALL SELECT MAX(seq) AS high FROM cursors) AS highs"
                ).fetchone()[0]
                or 0
            )
            high_water = self.engine.sequence_high_water(tx.conn)
            if high_water < floor:
                self.engine.raise_sequence(tx.conn, floor)
                logger.error(
                    "journal sequence was behind the delivery cursors;"
                    " raised it so new records are delivered",
                    extra={"journal": self.location, "high_water": high_water, "cursor": floor},
                )
        except BaseException:
            if begin:
                tx.execute("ROLLBACK")
            raise
        if begin:
            tx.execute("COMMIT")
        return floor, high_water

    def sequence_behind(self) -> tuple[int, int] | None:
        """(highest cursor, sequence high water) when a cursor is above the sequence, else None."""
        ((cursor,),) = self._reads.query("SELECT MAX(seq) FROM cursors")
        high_water = self._reads.run(self.engine.sequence_high_water)
        return (int(cursor), high_water) if cursor is not None and cursor > high_water else None

    async def check_sequence(self) -> bool:
        """Repair, loudly, a sequence found below a delivery cursor while running; True if it was.

        That only happens when someone emptied or recreated the journal's tables by hand (or
        restarted the sequence): without the repair, every new record would be numbered below
        the cursors and silently skipped by every sink.
        """
        behind = await PERIODIC_READS.run(self.sequence_behind)  # every second: the lean hop
        if behind is None:
            return False
        floor, high_water = await self._writer.submit(self._repair_sequence)
        if high_water < floor:
            metrics.JOURNAL_SEQUENCE_REPAIRS.inc()
        return True

    # -- writes --------------------------------------------------------------------------

    async def append(
        self, records: Sequence[NewRecord], *, state: Mapping[str, str] | None = None
    ) -> list[bool]:
        """Store records not seen before; True for each that is new, False for a duplicate id.

        ``state`` (key -> value) is written in the same transaction, so a source's cursor
        can never run ahead of, or behind, the events it stands for.
        """
        return await self._writer.submit(lambda tx: self._append(tx, records, state))

    async def append_one(self, record: NewRecord) -> bool:
        """``append`` for a single record; callers in the same event-loop turn share one write.

        Every webhook request stores one record. Handing the writer thread one operation per
        loop turn instead of one per request spares it a queue hand-off, a wake-up and a
        result to settle for each of them; each request still waits for its own commit.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((record, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._submit_waiting, loop)
        return await future

    def _submit_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        waiting, self._waiting = self._waiting, []
        records = [record for record, _ in waiting]
        self._writer.enqueue(lambda tx: self._append(tx, records, None), _EachWaiting(waiting), loop)

    def _append(
        self, tx: Transaction, records: Sequence[NewRecord], state: Mapping[str, str] | None
    ) -> list[bool]:
        if self._sinks:
            backlog = self._estimated_backlog(tx)
            if backlog + len(records) > self._backlog_limit:
                raise BacklogFull(f"{backlog} records wait for delivery (limit {self._backlog_limit})")
            self._backlog_estimate = backlog + len(records)
        now = time.time()
        keys = [dedup_key(rec.event_id, rec.created_at) for rec in records]
        # Writers are serialized (one transaction at a time), so what this reads stays true
        # until the commit: a key match is a duplicate only if the stored id is the same.
        stored: set[tuple[int, str]] = set()
        for start, size in _chunks(len(records)):
            stored.update(tx.execute(self.engine.stored_ids(size), keys[start : start + size]).fetchall())
        fresh: list[bool] = []
        new: list[tuple[int, NewRecord]] = []
        for key, rec in zip(keys, records, strict=True):
            is_new = (key, rec.event_id) not in stored
            if is_new:
                stored.add((key, rec.event_id))  # the same id twice in one batch: the first is new
                new.append((key, rec))
            fresh.append(is_new)
        for start, size in _chunks(len(new)):
            params: list[Any] = []
            for key, rec in new[start : start + size]:
                params += (key, rec.event_id, rec.event_type, rec.created_at, now, rec.json)
            tx.execute(_insert_events(size), params)
        if self.on_store is not None:
            self.on_store(tx, records, fresh)
        if state:
            tx.executemany(
                "INSERT INTO state (key, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                [(key, value, now) for key, value in state.items()],
            )
        return fresh

    def _estimated_backlog(self, tx: Transaction) -> int:
        """The backlog counted at most ``BACKLOG_RECOUNT_S`` ago, plus what was appended since.

        Counting is a query, and once per commit it cost a webhook 58,000 instructions (11% of
        the acknowledgement path at one event per commit). Between counts the estimate only
        grows: deliveries lower it at the next count, and the records of a commit rolled back
        over-count until then. So the limit refuses early by at most a second of deliveries,
        never late; only other replicas' appends (PostgreSQL) go unseen for up to that second.
        Runs on the writer thread only, like every ``_append``.
        """
        now = time.monotonic()
        if now >= self._backlog_recount_at:
            self._backlog_recount_at = now + BACKLOG_RECOUNT_S
            self._backlog_estimate = self._backlog(tx)
        return self._backlog_estimate

    def _backlog(self, tx: Transaction) -> int:
        """Sequence numbers between the slowest registered sink and the head.

        Sequence arithmetic instead of a row count keeps this O(1) however deep the backlog;
        ids consumed by duplicates make it over-count slightly, on the safe side.
        """
        head, slowest = tx.execute(
            "SELECT (SELECT MAX(seq) FROM events),"
            f" (SELECT MIN(seq) FROM cursors WHERE sink IN ({', '.join('?' * len(self._sinks))}))",
            self._sinks,
        ).fetchone()
        return max((head or 0) - (slowest or 0), 0)

    async def register_sinks(self, names: Iterable[str]) -> None:
        """Create cursors for new sinks, at the start of what the journal holds.

        Only registered sinks count for the backlog limit and retention, so a sink that was
        removed from the configuration does not hold the journal back forever.
        """
        names = list(names)
        await self._writer.submit(
            lambda tx: tx.executemany(
                "INSERT INTO cursors (sink, seq, updated_at) VALUES (?, 0, ?) ON CONFLICT (sink) DO NOTHING",
                [(name, time.time()) for name in names],
            )
        )
        self._sinks = names
        self._backlog_recount_at = 0.0  # other sinks: count again

    def hold_retention(self, state_key: str) -> None:
        """Keep every record after the sequence number saved under ``state_key`` from retention.

        For a reader that is not a sink (the detection engine): it saves its position with its
        own state, and retention keeps what it has not read, as it does for a sink's cursor.
        Until a position is saved, every record is kept. The backlog limit ignores it: a reader
        behind never makes webhooks wait.
        """
        if state_key not in self._retention_holds:
            self._retention_holds.append(state_key)

    async def set_cursor(self, sink: str, seq: int) -> None:
        """Advance ``sink``'s cursor to ``seq``; never moves it back.

        Two replicas can both deliver a sink for a moment after its lease moved; the one that
        lost it must not drag the shared cursor back over what the other delivered.
        """
        await self._writer.submit(
            lambda tx: tx.execute(
                "UPDATE cursors SET seq = CASE WHEN seq > ? THEN seq ELSE ? END, updated_at = ?"
                " WHERE sink = ?",
                (seq, seq, time.time(), sink),
            )
        )

    async def dead_letter(self, sink: str, entries: Sequence[Entry], reason: str, attempts: int) -> None:
        """Keep a copy of each record with the reason; a later replay re-sends it to ``sink``."""
        now = time.time()
        await self._writer.submit(
            lambda tx: tx.executemany(
                "INSERT INTO dead_letters"
                " (sink, event_id, event_type, record, reason, attempts, failed_at, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'dead') ON CONFLICT (sink, event_id) DO UPDATE SET"
                " reason = excluded.reason, attempts = dead_letters.attempts + excluded.attempts,"
                " failed_at = excluded.failed_at, state = 'dead'",
                [(sink, e.event_id, e.event_type, e.json, reason, attempts, now) for e in entries],
            )
        )

    async def request_replay(self, *, sink: str | None = None, event_id: str | None = None) -> int:
        """Mark dead letters for replay; the running service's delivery loop re-sends them."""
        where, params = _filters(state="dead", sink=sink, event_id=event_id)
        return await self._writer.submit(
            lambda tx: tx.execute(f"UPDATE dead_letters SET state = 'replay' WHERE {where}", params).rowcount
        )

    async def finish_replay(self, ids: Sequence[int]) -> None:
        """Forget dead letters that a replay delivered."""
        await self._writer.submit(
            lambda tx: tx.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])
        )

    async def prune(self, older_than_s: float, *, batch: int | None = None) -> int:
        """Delete records every registered sink has delivered (and every ``hold_retention``
        reader has read) and that are older than the retention.

        Records arrive in sequence order, so each round looks only at the ``batch`` lowest
        sequence numbers (default: the engine's ``prune_batch``) and stops at the first round
        that is not entirely old: no index on ``received_at`` is needed (it cost every insert
        a second B-tree update).
        A round starts only when the lowest record is old: that costs an index lookup, where the
        round's own scan read ``batch`` whole records inside the writer's transaction, every
        minute, for nothing (0.2 s of stalled commits on a journal of 3,000,000 records).
        A record received later but timestamped earlier (a clock stepped back) waits until
        the lowest one is old too: kept longer, never deleted early.
        """
        if not self._sinks:
            return 0
        batch = batch or self.engine.prune_batch
        failpoints.hit("retention.prune")
        low = await asyncio.to_thread(self._read_by_all)
        cutoff = time.time() - older_than_s
        removed = 0
        while True:
            oldest = await asyncio.to_thread(self.oldest_after, 0)
            if oldest is None or oldest >= cutoff:
                return removed
            count = await self._writer.submit(
                lambda tx: (
                    tx.execute(
                        "DELETE FROM events WHERE seq IN"
                        " (SELECT seq FROM events WHERE seq <= ? ORDER BY seq LIMIT ?) AND received_at < ?",
                        (low, batch, cutoff),
                    ).rowcount
                )
            )
            removed += count
            if count < batch:
                return removed

    async def probe(self) -> None:
        """A real write the size of a few events, rolled back: raises JournalUnavailable if it fails.

        Readiness uses it after a failed write, to notice when the store takes writes again.
        """

        def write_and_undo(tx: Transaction) -> None:
            tx.execute("SAVEPOINT probe")
            try:
                tx.execute(
                    "INSERT INTO state (key, value, updated_at) VALUES ('probe', ?, 0)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    ("x" * 8192,),
                )
            finally:
                tx.execute("ROLLBACK TO SAVEPOINT probe")
                tx.execute("RELEASE SAVEPOINT probe")

        await self._writer.submit(write_and_undo)

    async def write(self, operation: Operation) -> Any:
        """Run ``operation`` in the next group commit (a table beside the events: memberships)."""
        return await self._writer.submit(operation)

    def subscribe(self) -> asyncio.Event:
        """An event set after every commit made by this process (other processes: poll)."""
        return self._writer.subscribe()

    def claim(self, sink: str) -> Lease | None:
        """The delivery lease for ``sink``: exactly one process delivers to it at a time."""
        try:
            return self.engine.claim(sink)
        except self.engine.errors as exc:
            raise JournalUnavailable(f"cannot take the lease of sink {sink!r}: {exc}") from exc

    # -- reads (blocking; call through asyncio.to_thread from async code) ---------------

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read-only statement, on this thread's read connection."""
        return self._reads.query(statement, params)

    def read_after(self, seq: int, limit: int) -> list[Entry]:
        rows = self._reads.query(
            "SELECT seq, event_id, event_type, COALESCE(created_at, received_at), record FROM events"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [Entry(*row) for row in rows]

    def cursors(self) -> dict[str, int]:
        return dict(self._reads.query("SELECT sink, seq FROM cursors"))

    def oldest_after(self, seq: int) -> float | None:
        """When the oldest record after ``seq`` was received, for lag in seconds."""
        rows = self._reads.query("SELECT received_at FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (seq,))
        return rows[0][0] if rows else None

    def dead_letters(
        self, *, sink: str | None = None, state: str | None = None, limit: int = 1000
    ) -> list[DeadLetter]:
        where, params = _filters(state=state, sink=sink)
        rows = self._reads.query(
            "SELECT id, sink, event_id, event_type, reason, attempts, failed_at, state, record"
            f" FROM dead_letters WHERE {where} ORDER BY id LIMIT ?",
            [*params, limit],
        )
        return [DeadLetter(*row) for row in rows]

    def dead_letter_counts(self) -> dict[str, int]:
        return dict(self._reads.query("SELECT sink, COUNT(*) FROM dead_letters GROUP BY sink"))

    def get_state(self, key: str) -> str | None:
        rows = self._reads.query("SELECT value FROM state WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def saved_position(self, state_key: str) -> int:
        """The sequence number a reader saved under ``state_key`` (``hold_retention``); 0, the
        start of the journal, while none is saved."""
        saved = self.get_state(state_key)
        return int(saved) if saved is not None and saved.isdigit() else 0

    def _read_by_all(self) -> int:
        """The highest sequence number every registered sink and every ``hold_retention``
        reader has passed: retention's limit."""
        cursors = self.cursors()
        positions = [cursors.get(name, 0) for name in self._sinks]
        positions += [self.saved_position(key) for key in self._retention_holds]
        return min(positions)

    def lag(self, cursor: int) -> tuple[int, float]:
        """A reader at ``cursor``: the records after it, and how long ago the oldest of them was
        received (seconds, 0.0 when there is none)."""
        oldest = self.oldest_after(cursor)
        return self.pending(cursor), round(max(time.time() - oldest, 0.0), 3) if oldest else 0.0

    def pending(self, cursor: int) -> int:
        """Records after ``cursor`` (a sink's lag), from sequence numbers.

        Counting rows would scan the whole backlog (over half a second per million rows),
        and it is read every second; the sequence range costs an index lookup. Ids consumed
        by duplicate inserts make it over-count slightly while a backlog exists; it is exact
        (zero) once the sink has caught up.
        """
        return max(self._head() - cursor, 0)

    def _head(self) -> int:
        return self._reads.query("SELECT MAX(seq) FROM events")[0][0] or 0

    def stats(self) -> Stats:
        """Journal size; ``events`` is the sequence range held, see ``pending``."""
        # Two scalar subqueries: SQLite answers a lone MIN or MAX from the end of the key, but
        # "MIN(seq), MAX(seq)" in one SELECT scanned the whole table, every second (the
        # housekeeping gauges), so a journal of millions of records slowed everything down.
        ((low, high),) = self._reads.query(
            "SELECT (SELECT MIN(seq) FROM events), (SELECT MAX(seq) FROM events)"
        )
        events = high - low + 1 if high is not None else 0
        head, size = self._reads.run(
            lambda conn: (self.engine.sequence_high_water(conn), self.engine.size_bytes(conn))
        )
        return Stats(events=events, bytes=size, head=head)

    def backlog(self) -> int:
        """Records the slowest registered sink has not delivered yet."""
        if not self._sinks:
            return 0
        cursors = self.cursors()
        return self.pending(min(cursors.get(name, 0) for name in self._sinks))

    @property
    def backlog_limit(self) -> int:
        return self._backlog_limit


class _EachWaiting:
    """The outcome of one write shared by several ``append_one`` callers: each gets its record's.

    The writer settles it on the event loop, as it would a future, and it settles each
    caller's future at once: an intermediate future cost a done-callback and a loop turn.
    """

    __slots__ = ("_settled", "_waiting")

    def __init__(self, waiting: list[tuple[NewRecord, asyncio.Future[bool]]]) -> None:
        self._waiting = waiting
        self._settled = False

    def done(self) -> bool:
        return self._settled

    def set_result(self, fresh: list[bool]) -> None:
        self._settled = True
        for (_, future), is_new in zip(self._waiting, fresh, strict=True):
            if not future.done():  # done: the request went away (client disconnect)
                future.set_result(is_new)

    def set_exception(self, error: BaseException) -> None:
        self._settled = True
        for _, future in self._waiting:
            if not future.done():
                future.set_exception(error)


def _filters(**equal: str | None) -> tuple[str, list[str]]:
    """A WHERE clause (and its parameters) for the columns whose value is given."""
    given = {column: value for column, value in equal.items() if value}
    where = " AND ".join(f"{column} = ?" for column in given) or "1 = 1"
    return where, list(given.values())
