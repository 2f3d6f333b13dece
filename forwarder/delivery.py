"""One delivery loop per sink: read from the sink's own cursor, send, advance.

The cursor only moves after ``send`` returned (or the failed records were dead-lettered),
so every sink sees every record at least once. Loops share nothing but the journal: a sink
that is slow or down only holds back its own cursor.

New records and dead-letter replays go through the same ``_deliver``/``_send`` path under
one ``RetryPolicy`` (``forwarder.retry_policy``): a retryable error is retried for as long
as it takes; a batch the sink refuses (``PermanentError`` without event ids) is halved at
once, and one that fails otherwise (a bug in the sink) is tried ``max_attempts`` times
first, until the records that fail on their own are found (``forwarder.isolation``), so one
record a sink cannot take never holds back the others; those go to dead letters with their
reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from forwarder import failpoints, metrics
from forwarder.backoff import CAP_S
from forwarder.engines import Lease
from forwarder.errors import JournalUnavailable, PermanentError, RetryableError
from forwarder.isolation import Refused, halve
from forwarder.journal import Journal
from forwarder.normalize import event_time
from forwarder.read_thread import ReadThread
from forwarder.records import Entry
from forwarder.retry_after import DEFAULT_CAP_S
from forwarder.retry_policy import RetryPolicy, SinkHealth, SinkStatus
from sinks.base import Sink

logger = logging.getLogger("forwarder.delivery")

_REPLAY_CHECK_INTERVAL_S = 1.0
_STANDBY_RETRY_S = 5.0
_JOURNAL_RETRY_S = 2.0
_DEFAULT_LINGER_S = 0.05
_DEFAULT_SEND_TIMEOUT_S = 300.0
"""A ``send`` that has not returned by then is abandoned and retried: no wait is unbounded."""


@dataclass(slots=True)
class _Failed:
    """A ``send`` that did not deliver ``entries``; ``isolated`` when the sink named them itself."""

    entries: list[Entry]
    reason: str
    isolated: bool
    refused: bool = False
    """A ``PermanentError`` without event ids: the sink refused the batch, retrying will not help."""


class _Stopped(Exception):
    """Raised inside the loop when shutdown interrupts a retry wait."""


class DeliveryLoop:
    def __init__(
        self,
        sink: Sink,
        journal: Journal,
        *,
        max_attempts: int,
        poll_interval_s: float = 0.5,
        backoff_cap_s: float = CAP_S,
        max_retry_after_s: float = DEFAULT_CAP_S,
    ) -> None:
        self.sink = sink
        self.journal = journal
        self.status = SinkStatus(name=sink.name)
        self.policy = RetryPolicy(max_attempts, backoff_cap_s, max_retry_after_s)
        self._health = SinkHealth(self.status)
        self._poll_interval = poll_interval_s
        self._linger = getattr(sink, "linger_s", _DEFAULT_LINGER_S)
        self._send_timeout = getattr(sink, "send_timeout_s", _DEFAULT_SEND_TIMEOUT_S)
        self._wake = journal.subscribe()
        self._stopping = asyncio.Event()
        self._next_replay_check = 0.0
        self._lease: Lease | None = None
        self._reads = ReadThread(f"delivery-{sink.name}")
        """Every blocking journal call of the loop, the lease and the read of each batch first
        (``forwarder.read_thread``: not to_thread)."""

    def stop(self) -> None:
        """Ask the loop to finish: it drains what is already journaled, then returns."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Deliver until ``stop``; run under ``forwarder.supervisor``, which restarts it after a bug."""
        try:
            while True:
                self._wake.clear()
                failpoints.hit("delivery.loop")
                try:
                    if not await self._hold_lease():
                        if await self._wait(self._stopping, _STANDBY_RETRY_S):
                            return
                        continue
                    await self._replay_requested()
                    read = functools.partial(self.journal.read_after, self.status.cursor, self.sink.max_batch)
                    entries = await self._reads.run(read)
                    if not entries:
                        if not self.status.cursor_saved:
                            await self._save_cursor()
                        if self._stopping.is_set():
                            return
                        await self._wait(self._wake, self._poll_interval)
                        continue
                    events = self.sink.events
                    wanted = (
                        entries
                        if events.matches_everything
                        else [entry for entry in entries if events.matches(entry.event_type)]
                    )
                    if wanted:
                        await self._deliver(wanted)
                    self.status.cursor = entries[-1].seq
                    await self._save_cursor()
                    if len(entries) < self.sink.max_batch:
                        # Caught up: let a few commits' worth of records gather before the
                        # next read. Without this, every group commit woke every loop for a
                        # batch of a few records, and one HTTP request per commit cost a
                        # remote sink more CPU than the webhooks themselves. A full batch
                        # means a backlog: read on at once.
                        await self._wait(self._stopping, self._linger)
                except JournalUnavailable as exc:
                    # The records stay where they are; pick up from the same cursor once it answers.
                    self._health.failed("journal", str(exc), 0, unhealthy=False)
                    await self._pause(_JOURNAL_RETRY_S)
        except _Stopped:
            return
        finally:
            self._reads.stop()
            if self._lease is not None:
                self._lease.release()
                self._lease = None

    async def _save_cursor(self) -> None:
        """Persist the cursor; while the journal cannot write (a full disk), keep it in memory.

        The batch is delivered either way. Reading again from the saved cursor would send it
        again on every retry: a full disk turned 200 events into 1,001 deliveries in 12 s.
        The saved cursor catches up once the journal writes again; a crash meanwhile
        re-sends from the saved one (at least once, never lost).
        """
        status = self.status
        try:
            await self.journal.set_cursor(self.sink.name, status.cursor)
        except JournalUnavailable as exc:
            if status.cursor_saved:
                logger.warning(
                    "cannot save the delivery cursor; keeping it in memory until the journal writes again",
                    extra={"sink": self.sink.name, "cursor": status.cursor, "error": str(exc)},
                )
            status.cursor_saved = False
            return
        if not status.cursor_saved:
            logger.info(
                "delivery cursor saved again", extra={"sink": self.sink.name, "cursor": status.cursor}
            )
        status.cursor_saved = True

    def crashed(self, reason: str) -> None:
        """The supervisor's report of a failure that escaped the loop: red until a send succeeds."""
        self._health.failed("crash", f"delivery loop failed: {reason}", 0, unhealthy=True)

    async def _hold_lease(self) -> bool:
        """Whether this process delivers to the sink; another replica may hold its lease.

        Checked before every batch: a replica whose lease connection was cut must stop before
        its next send, since a standby may already hold the lease (checking every 5 s let both
        deliver for up to 10 s). Taking the lease (again) reloads the cursor, which the
        previous holder advanced.
        """
        if self._lease is not None:
            if await self._reads.run(self._lease.alive):
                return True
            with contextlib.suppress(Exception):
                self._lease.release()
            self._lease = None
            logger.warning("lost the delivery lease; standing by", extra={"sink": self.sink.name})
        lease = await self._reads.run(functools.partial(self.journal.claim, self.sink.name))
        if lease is None:
            if self.status.role != "standby":
                logger.info(
                    "another process delivers to this sink; standing by", extra={"sink": self.sink.name}
                )
            self.status.role = "standby"
            return False
        self._lease = lease
        cursors = await self._reads.run(self.journal.cursors)
        saved = cursors.get(self.sink.name, 0)
        # A cursor this process could not save is still true: what it passed was delivered.
        self.status.cursor = saved if self.status.cursor_saved else max(saved, self.status.cursor)
        self.status.role = "active"
        return True

    async def _deliver(self, entries: Sequence[Entry]) -> list[Entry]:
        """Deliver ``entries``; answers those that went to dead letters instead (see the module)."""
        attempts = 0
        while True:
            failed = await self._send(entries)
            if failed is None:
                return []
            attempts += 1
            if failed.isolated:
                await self._dead_letter(failed.entries, failed.reason, attempts)
                return failed.entries
            self._health.failed("permanent", failed.reason, len(entries), unhealthy=False)
            # A sink's PermanentError says retrying will not help: look for its records at once.
            # Anything else (a bug in the sink) may pass: try the batch again first.
            delay = None if failed.refused else self.policy.after_failure(attempts)
            if delay is None:
                break
            await self._pause(delay)
        dead = await halve(list(entries), self._attempt, failed.reason)
        for reason in dict.fromkeys(why for _, why in dead):
            await self._dead_letter([entry for entry, why in dead if why == reason], reason, attempts)
        return [entry for entry, _ in dead]

    async def _attempt(self, entries: Sequence[Entry]) -> Refused[Entry] | None:
        """One part of a batch being halved (``forwarder.isolation``): each is sent once."""
        failed = await self._send(entries)
        if failed is None:
            return None
        self._health.failed("permanent", failed.reason, len(failed.entries), unhealthy=False)
        if failed.isolated:
            return Refused(failed.reason, [(entry, failed.reason) for entry in failed.entries])
        return Refused(failed.reason)

    async def _send(self, entries: Sequence[Entry]) -> _Failed | None:
        """One ``send`` until the destination answers: None when delivered, else what failed.

        Retryable errors are retried here, with backoff and any requested wait up to the
        cap, for as long as it takes: the records wait in the journal, nothing is dropped.
        """
        retries = 0
        while True:
            try:
                # asyncio.timeout, not wait_for: wait_for runs send in a task of its own, and a
                # failed send's exception would sit in a reference cycle with that task,
                # holding the batch until a full garbage collection.
                async with asyncio.timeout(self._send_timeout):
                    await self.sink.send(entries)
            except RetryableError as exc:
                retries += 1
                self._health.failed("retryable", exc.reason, len(entries), unhealthy=exc.unhealthy)
                await self._pause(self.policy.after_retryable(exc, retries))
                continue
            except TimeoutError:
                retries += 1
                reason = f"{self.sink.name}: send did not finish within {self._send_timeout:g} s"
                self._health.failed("retryable", reason, len(entries), unhealthy=True)
                await self._pause(self.policy.after_timeout(retries))
                continue
            except PermanentError as exc:
                if exc.event_ids is None:
                    return _Failed(list(entries), exc.reason, isolated=False, refused=True)
                refused = set(exc.event_ids)
                rejected = [entry for entry in entries if entry.event_id in refused]
                self._health.succeeded(len(entries) - len(rejected))
                return _Failed(rejected, exc.reason, isolated=True) if rejected else None
            except Exception as exc:  # a bug in a sink must not stall the pipeline silently
                return self._unexpected(entries, exc)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # shutdown
                return self._unexpected(entries, exc)  # leaked by the sink: nobody cancelled us
            self._health.succeeded(len(entries))
            return None

    def _unexpected(self, entries: Sequence[Entry], exc: BaseException) -> _Failed:
        logger.error("sink raised an unexpected error", exc_info=exc, extra={"sink": self.sink.name})
        return _Failed(list(entries), f"{type(exc).__name__}: {exc}", isolated=False)

    async def _replay_requested(self) -> None:
        """Re-send dead letters an operator marked for replay (``workos-forwarder dlq replay``).

        They go through the same path as new records: what fails again is dead-lettered
        again with its new reason, and the rest leaves the dead-letter table.
        """
        now = time.monotonic()
        if now < self._next_replay_check:
            return
        self._next_replay_check = now + _REPLAY_CHECK_INTERVAL_S
        letters = await self._reads.run(
            functools.partial(
                self.journal.dead_letters, sink=self.sink.name, state="replay", limit=self.sink.max_batch
            )
        )
        if not letters:
            return
        # A dead letter keeps the record but not its time: the record's own date tells.
        entries = [
            Entry(0, dead.event_id, dead.event_type, event_time(orjson.loads(dead.record)), dead.record)
            for dead in letters
        ]
        still_dead = {entry.event_id for entry in await self._deliver(entries)}
        await self.journal.finish_replay(
            [letter.id for letter in letters if letter.event_id not in still_dead]
        )
        replayed = len(letters) - len(still_dead)
        if replayed:
            logger.info("replayed dead letters", extra={"sink": self.sink.name, "count": replayed})

    async def _dead_letter(self, entries: Sequence[Entry], reason: str, attempts: int) -> None:
        await self.journal.dead_letter(self.sink.name, entries, reason, attempts)
        metrics.SINK_DEAD_LETTERED.labels(self.sink.name).inc(len(entries))
        logger.error(
            "records dead-lettered",
            extra={
                "sink": self.sink.name,
                "count": len(entries),
                "event_ids": [entry.event_id for entry in entries[:10]],
                "reason": reason,
                "attempts": attempts,
            },
        )

    async def _pause(self, seconds: float) -> None:
        """Wait before a retry; shutdown cuts the wait short and leaves the batch in the journal."""
        if await self._wait(self._stopping, seconds):
            raise _Stopped

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> bool:
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return False
        return True
