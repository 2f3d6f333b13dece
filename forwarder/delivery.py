"""One delivery loop per sink: read from the sink's own cursor, send, advance.

The cursor only moves after ``send`` returned (or the failed records were dead-lettered),
so every sink sees every record at least once. Loops share nothing but the journal: a sink
that is slow or down only holds back its own cursor.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from forwarder import metrics
from forwarder.engines import Lease
from forwarder.journal import Entry, Journal, JournalUnavailable
from forwarder.normalize import event_time
from sinks.base import PermanentError, RetryableError, Sink

logger = logging.getLogger("forwarder.delivery")

_FAILURE_LOG_INTERVAL_S = 60.0
_REPLAY_CHECK_INTERVAL_S = 1.0
_LEASE_CHECK_INTERVAL_S = 5.0
_STANDBY_RETRY_S = 5.0
_JOURNAL_RETRY_S = 2.0
_DEFAULT_LINGER_S = 0.05


@dataclass(slots=True)
class SinkStatus:
    """What ``/status`` and ``/readyz`` report for one sink."""

    name: str
    role: str = "starting"
    """``active`` while this process delivers to the sink, ``standby`` while another one does."""
    cursor: int = 0
    healthy: bool = True
    failing_since: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


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
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.sink = sink
        self.journal = journal
        self.status = SinkStatus(name=sink.name)
        self._max_attempts = max_attempts
        self._poll_interval = poll_interval_s
        self._backoff_cap = backoff_cap_s
        self._linger = getattr(sink, "linger_s", _DEFAULT_LINGER_S)
        self._wake = journal.subscribe()
        self._stopping = asyncio.Event()
        self._last_failure_log = 0.0
        self._next_replay_check = 0.0
        self._lease: Lease | None = None
        self._next_lease_check = 0.0
        metrics.SINK_HEALTHY.labels(sink.name).set(1)

    def stop(self) -> None:
        """Ask the loop to finish: it drains what is already journaled, then returns."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                try:
                    if not await self._hold_lease():
                        if await self._wait(self._stopping, _STANDBY_RETRY_S):
                            return
                        continue
                    await self._replay_requested()
                    entries = await asyncio.to_thread(
                        self.journal.read_after, self.status.cursor, self.sink.max_batch
                    )
                    if not entries:
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
                    await self.journal.set_cursor(self.sink.name, entries[-1].seq)
                    self.status.cursor = entries[-1].seq
                    if len(entries) < self.sink.max_batch:
                        # Caught up: let a few commits' worth of records gather before the
                        # next read. Without this, every group commit woke every loop for a
                        # batch of a few records, and one HTTP request per commit cost a
                        # remote sink more CPU than the webhooks themselves. A full batch
                        # means a backlog: read on at once.
                        await self._wait(self._stopping, self._linger)
                except JournalUnavailable as exc:
                    # The records stay where they are; pick up from the same cursor once it answers.
                    self._failed("journal", str(exc), (), unhealthy=False)
                    await self._pause(_JOURNAL_RETRY_S)
        except _Stopped:
            return
        finally:
            if self._lease is not None:
                self._lease.release()

    async def _hold_lease(self) -> bool:
        """Whether this process delivers to the sink; another replica may hold its lease.

        Taking the lease (again) reloads the cursor, which the previous holder advanced.
        """
        now = time.monotonic()
        if self._lease is not None:
            if now < self._next_lease_check:
                return True
            self._next_lease_check = now + _LEASE_CHECK_INTERVAL_S
            if await asyncio.to_thread(self._lease.alive):
                return True
            self._lease = None
            logger.warning("lost the delivery lease; standing by", extra={"sink": self.sink.name})
        lease = await asyncio.to_thread(self.journal.claim, self.sink.name)
        if lease is None:
            if self.status.role != "standby":
                logger.info(
                    "another process delivers to this sink; standing by", extra={"sink": self.sink.name}
                )
            self.status.role = "standby"
            return False
        self._lease = lease
        self._next_lease_check = now + _LEASE_CHECK_INTERVAL_S
        cursors = await asyncio.to_thread(self.journal.cursors)
        self.status.cursor = cursors.get(self.sink.name, 0)
        self.status.role = "active"
        return True

    async def _deliver(self, entries: Sequence[Entry]) -> None:
        retries = 0
        permanent_failures = 0
        while True:
            try:
                await self.sink.send(entries)
            except RetryableError as exc:
                retries += 1
                self._failed("retryable", exc.reason, entries, unhealthy=exc.unhealthy)
                cap = self._backoff_cap * 4 if exc.unhealthy else self._backoff_cap
                delay = max(exc.retry_after or 0.0, backoff_delay(retries, cap=cap))
                await self._pause(delay)
                continue
            except PermanentError as exc:
                if exc.event_ids is not None:
                    failed = set(exc.event_ids)
                    rejected = [entry for entry in entries if entry.event_id in failed]
                    self._failed("permanent", exc.reason, rejected, unhealthy=False)
                    await self._dead_letter(rejected, exc.reason, permanent_failures + 1)
                    self._succeeded(len(entries) - len(rejected))
                    return
                reason = exc.reason
            except Exception as exc:  # a bug in a sink must not stall the pipeline silently
                logger.exception("sink raised an unexpected error", extra={"sink": self.sink.name})
                reason = f"{type(exc).__name__}: {exc}"
            else:
                self._succeeded(len(entries))
                return
            permanent_failures += 1
            self._failed("permanent", reason, entries, unhealthy=False)
            if permanent_failures >= self._max_attempts:
                await self._dead_letter(entries, reason, permanent_failures)
                return
            await self._pause(backoff_delay(permanent_failures, cap=self._backoff_cap))

    async def _replay_requested(self) -> None:
        """Re-send dead letters an operator marked for replay (``workos-forwarder dlq replay``)."""
        now = time.monotonic()
        if now < self._next_replay_check:
            return
        self._next_replay_check = now + _REPLAY_CHECK_INTERVAL_S
        letters = await asyncio.to_thread(
            self.journal.dead_letters, sink=self.sink.name, state="replay", limit=self.sink.max_batch
        )
        if not letters:
            return
        # A dead letter keeps the record but not its time: the record's own date tells.
        entries = [
            Entry(0, dead.event_id, dead.event_type, event_time(orjson.loads(dead.record)), dead.record)
            for dead in letters
        ]
        try:
            await self.sink.send(entries)
        except RetryableError as exc:
            self._failed("retryable", exc.reason, letters, unhealthy=exc.unhealthy)
            return
        except PermanentError as exc:
            failed = (
                set(exc.event_ids) if exc.event_ids is not None else {letter.event_id for letter in letters}
            )
            still_dead = [entry for entry in entries if entry.event_id in failed]
            await self.journal.dead_letter(self.sink.name, still_dead, f"replay failed: {exc.reason}", 1)
            letters = [letter for letter in letters if letter.event_id not in failed]
        await self.journal.finish_replay([letter.id for letter in letters])
        if letters:
            self._succeeded(len(letters))
            logger.info("replayed dead letters", extra={"sink": self.sink.name, "count": len(letters)})

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

    def _succeeded(self, count: int) -> None:
        status = self.status
        if status.failing_since is not None:
            logger.info(
                "sink recovered",
                extra={"sink": status.name, "failed_for_s": round(time.time() - status.failing_since, 1)},
            )
        status.healthy = True
        status.failing_since = None
        status.last_success_at = time.time()
        metrics.SINK_HEALTHY.labels(status.name).set(1)
        metrics.SINK_DELIVERED.labels(status.name).inc(count)

    def _failed(self, kind: str, reason: str, entries: Sequence[object], *, unhealthy: bool) -> None:
        status = self.status
        now = time.time()
        first = status.failing_since is None
        if first:
            status.failing_since = now
        status.last_error = reason
        status.last_error_at = now
        if unhealthy:
            status.healthy = False
            metrics.SINK_HEALTHY.labels(status.name).set(0)
        metrics.SINK_FAILURES.labels(status.name, kind).inc()
        if first or now - self._last_failure_log >= _FAILURE_LOG_INTERVAL_S:
            self._last_failure_log = now
            logger.warning(
                "sink send failed",
                extra={"sink": status.name, "kind": kind, "reason": reason, "records": len(entries)},
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
