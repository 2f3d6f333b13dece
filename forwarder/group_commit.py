"""Group commit: one writer thread commits whatever is queued as a single transaction.

Under load many webhook requests share one fsync, while each caller still waits for the
commit that holds its write. The writer knows nothing of what it writes: a caller submits
a function of a ``Transaction`` and awaits its result. The writer owns the failure
handling every write needs: a deadline on each wait, a rollback and a pause after an
error, and a restart if its thread ever dies.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from forwarder import failpoints, metrics
from forwarder.engines import Engine
from forwarder.errors import JournalUnavailable

logger = logging.getLogger("forwarder.journal")

WRITE_DEADLINE_S = 10.0
"""How long a caller waits for its write before it gets JournalUnavailable (a webhook: 503)."""
_WRITER_BACKOFF_S = (0.1, 5.0)
_DEADLINE_CHECK_S = 0.25
_STOP = object()


class Transaction:
    """One write transaction, shared by every operation of a group commit."""

    __slots__ = ("_sql", "after_commit", "conn")

    def __init__(self, conn: Any, sql: Callable[[str], str]) -> None:
        self.conn = conn
        self._sql = sql
        self.after_commit: list[Callable[[], object]] = []
        """Run by the writer thread once the transaction committed, before any caller hears of
        it (the membership map learns what was stored): never after a rollback."""

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(self._sql(statement), params)

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        cursor = self.conn.cursor()
        cursor.executemany(self._sql(statement), list(rows))
        cursor.close()


Operation = Callable[[Transaction], Any]


class Outcome(Protocol):
    """Where an operation's result goes: an ``asyncio.Future``, or anything settled like one.

    Settled on the caller's event loop, never on the writer thread.
    """

    def done(self) -> bool: ...

    def set_result(self, result: Any, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


@dataclass(slots=True)
class _Op:
    fn: Operation
    future: Outcome
    loop: asyncio.AbstractEventLoop
    deadline: float = 0.0


_Outcome = tuple[_Op, Any, BaseException | None]


class GroupCommitWriter:
    """The writer thread over ``conn`` (a writer connection of ``engine``, schema in place).

    An operation that raises one of ``refusals`` fails alone: its caller gets the exception
    and the rest of the batch commits (the journal refuses records with a full backlog so).
    Any other error fails the whole batch with JournalUnavailable.
    """

    def __init__(
        self,
        engine: Engine,
        conn: Any,
        *,
        write_deadline_s: float = WRITE_DEADLINE_S,
        refusals: tuple[type[Exception], ...] = (),
    ) -> None:
        self.engine = engine
        self.write_deadline_s = write_deadline_s
        self.last_error: str | None = None
        """Why the last commit failed; None once a commit succeeds again."""
        self._refusals = refusals
        self._commit_seconds = metrics.JOURNAL_COMMIT.labels()  # bound once, not looked up per commit
        self._conn: Any = conn
        self._ops: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._in_flight: collections.deque[_Op] = collections.deque()
        self._subscribers: list[asyncio.Event] = []
        self._closing = False
        self._closed = threading.Event()
        self._running = False
        self._thread = self._start()
        threading.Thread(target=self._watch_deadlines, name="journal-deadlines", daemon=True).start()

    # -- submitting ------------------------------------------------------------------------

    async def submit(self, fn: Operation) -> Any:
        """Run ``fn`` in the next group commit; answers its result once that committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.enqueue(fn, future, loop)
        return await future

    def enqueue(self, fn: Operation, future: Outcome, loop: asyncio.AbstractEventLoop) -> None:
        """Queue ``fn``; ``future`` (of ``loop``) gets its result, or the write's error by the deadline."""
        if not self._running:
            future.set_exception(JournalUnavailable("the journal writer is not running"))
            return
        op = _Op(fn, future, loop, time.monotonic() + self.write_deadline_s)
        self._in_flight.append(op)
        self._ops.put(op)

    def subscribe(self) -> asyncio.Event:
        """An event set after every commit made by this process (other processes: poll)."""
        event = asyncio.Event()
        self._subscribers.append(event)
        return event

    # -- the thread ------------------------------------------------------------------------

    def _start(self) -> threading.Thread:
        self._running = True
        thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        thread.start()
        return thread

    @property
    def alive(self) -> bool:
        return self._running

    def ensure_running(self) -> bool:
        """Start a new writer thread if the last one died; True if it had to (it is counted).

        The writer survives every exception raised while it writes; this is the last line of
        defence, for what escapes that (a BaseException), checked by the service every second.
        """
        if self._closing or self._running:
            return False
        logger.error(
            "the journal writer thread had died; starting a new one", extra={"journal": self.engine.location}
        )
        metrics.TASK_RESTARTS.labels("journal-writer").inc()
        self._thread = self._start()
        return True

    async def close(self) -> None:
        """Finish queued writes, then stop the writer thread (bounded: it is a daemon thread)."""
        self._closing = True
        self._ops.put(_STOP)
        await asyncio.to_thread(self._thread.join, self.write_deadline_s)
        self._closed.set()

    def _watch_deadlines(self) -> None:
        """Thread: answer JournalUnavailable to every caller whose write outlived the deadline.

        The deadline is the only bound on what a caller awaits: a writer that is stuck (a
        disk that stopped answering, a lock held elsewhere) answers 503 in bounded time
        instead of holding every request open. A write that commits after its caller gave up
        is harmless: the sender retries, and the event id deduplicates it. One thread checking
        the oldest writes four times a second costs the hot path a deque append; a timer per
        write cost about 2,600 instructions per webhook.
        """
        in_flight = self._in_flight
        while not self._closed.is_set():
            # Not self._closed.wait(): Event.wait runs threading's Condition in Python, about
            # 15,000 instructions a wake-up against 3,300 for a sleep, four times a second at
            # rest too. The thread notices ``close`` up to a check later; it is a daemon.
            time.sleep(_DEADLINE_CHECK_S)
            now = time.monotonic()
            while in_flight:
                op = in_flight[0]
                if not op.future.done() and op.deadline > now:
                    break  # deadlines are in queue order: the rest are later
                in_flight.popleft()
                if not op.future.done():
                    with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits
                        op.loop.call_soon_threadsafe(_expire, op.future, self.write_deadline_s)

    def _run(self) -> None:
        try:
            self._write_loop()
        finally:
            # Read on every write instead of Thread.is_alive(), which takes a lock.
            self._running = False

    def _write_loop(self) -> None:
        """Take what is queued, commit it as one transaction, repeat until ``close``.

        Every exception is caught here: the batch's callers get JournalUnavailable, the
        failure is logged with its traceback and counted as a restart, and the loop goes on
        after a backoff. A writer that died would leave every later write waiting.
        """
        failures = 0
        while True:
            batch, stop_after = self._take_batch()
            try:
                failpoints.hit("journal.writer")
                self._commit(batch)
                failures = 0
            except Exception as exc:
                failures += 1
                logger.exception(
                    "journal writer failed; it goes on after a pause", extra={"journal": self.engine.location}
                )
                metrics.TASK_RESTARTS.labels("journal-writer").inc()
                self._abandon_transaction()
                self.last_error = f"journal writer failed: {type(exc).__name__}: {exc}"
                failure = JournalUnavailable(self.last_error)
                self._deliver_outcomes([(op, None, failure) for op in batch])
                low, high = _WRITER_BACKOFF_S
                time.sleep(min(high, low * 2 ** (failures - 1)))
            if stop_after:
                break
        if self._conn is not None:
            self._conn.close()

    def _take_batch(self) -> tuple[list[_Op], bool]:
        """Everything queued now (waiting for the first); True if ``close`` came after it."""
        ops = self._ops
        batch: list[_Op] = []
        first = ops.get()
        if first is _STOP:
            return batch, True
        batch.append(first)
        # This thread is the only consumer: what empty() says is there stays there. Ending on
        # queue.Empty instead raised and caught an exception per commit.
        while not ops.empty():
            op = ops.get_nowait()
            if op is _STOP:
                return batch, True
            batch.append(op)
        return batch, False

    def _commit(self, batch: list[_Op]) -> None:
        outcomes: list[_Outcome] = []
        engine = self.engine
        started = time.perf_counter()
        try:
            if self._conn is None:
                self._conn = engine.connect(writer=True)
            conn = self._conn
            conn.execute(engine.begin)
            engine.serialize_writers(conn)
            tx = Transaction(conn, engine.sql)
            for op in batch:
                try:
                    outcomes.append((op, op.fn(tx), None))
                except self._refusals as exc:
                    outcomes.append((op, None, exc))
            conn.execute("COMMIT")
            self._commit_seconds.observe(time.perf_counter() - started)
            self.last_error = None
            for callback in tx.after_commit:
                try:
                    callback()
                except Exception:  # committed: the callers' writes succeeded whatever this did
                    logger.exception("an after-commit step failed", extra={"journal": engine.location})
        except engine.errors as exc:
            self._abandon_transaction()
            logger.error(
                "journal write failed",
                extra={"error": str(exc), "operations": len(batch), "journal": engine.location},
            )
            self.last_error = str(exc)
            failure = JournalUnavailable(f"journal write failed: {exc}")
            self._deliver_outcomes([(op, None, failure) for op in batch])
            return
        self._deliver_outcomes(outcomes)
        engine.after_commit(conn)  # after the answers: the callers do not wait for upkeep

    def _deliver_outcomes(self, outcomes: list[_Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, settled in by_loop.items():
            # Not contextlib.suppress: an object and two Python calls per commit.
            try:
                loop.call_soon_threadsafe(self._settle, settled)
            except RuntimeError:  # the loop closed while we committed: nobody waits any more
                continue

    def _abandon_transaction(self) -> None:
        """Roll back; a connection that cannot even do that is dropped and reopened next time."""
        if self._conn is None:
            return
        try:
            self._conn.execute("ROLLBACK")
        except self.engine.errors:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _settle(self, outcomes: list[_Outcome]) -> None:
        for op, result, exc in outcomes:
            if op.future.done():
                continue
            if exc is None:
                op.future.set_result(result)
            else:
                op.future.set_exception(exc)
        for event in self._subscribers:
            event.set()


def _expire(future: Outcome, deadline: float) -> None:
    if not future.done():
        future.set_exception(JournalUnavailable(f"journal write did not finish within {deadline:g} s"))
