"""The detection loop: an internal consumer of the journal, like a sink's delivery loop.

It never touches the webhook path: webhooks are acknowledged once journaled, and this loop
reads the journal afterwards, from its own position, under its own lease (``journal.claim``),
so that of several replicas on one PostgreSQL journal exactly one evaluates at a time.

Its position and its whole window state are one checkpoint, written to the journal's
``state`` table every few seconds (and at shutdown). After a ``SIGKILL``, or when another
replica takes the lease, evaluation resumes from the last checkpoint and processes the
entries after it again: the engine is deterministic, so it finds the same firings with
the same ids, and the journal keeps the ones it already has. Firings are written before
the loop reads further; one that could not be written is retried, never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import zlib
from typing import Any

from forwarder import metrics
from forwarder.detections.engine import BUILT_IN, Engine
from forwarder.detections.firing import Firing, firing_record, is_late
from forwarder.detections.settings import DetectionSettings
from forwarder.engines import Lease
from forwarder.journal import Journal, JournalUnavailable
from forwarder.normalize import NormalizeOptions
from forwarder.read_thread import ReadThread
from forwarder.records import NewRecord

logger = logging.getLogger("forwarder.detections")

LEASE = "detection-engine"
"""The lease's name: not a valid sink name, so it never contends with a sink's."""
CHECKPOINT_KEY = "detections.checkpoint"
POSITION_KEY = "detections.position"
"""The checkpoint's sequence number as plain digits, saved with it: retention keeps every
record after it (``Journal.hold_retention``) without decoding the checkpoint."""
_BATCH = 1000
_CHECKPOINT_INTERVAL_S = 30.0
_POLL_INTERVAL_S = 1.0
"""How long the loop rests once caught up. It is not woken by each commit, as delivery loops
are: a wake-up per group commit, each reading a handful of records, cost more than judging
them (+64% instructions per webhook under callgrind). A second of detection latency is
nothing next to the minutes of a window."""
_STANDBY_RETRY_S = 5.0
_JOURNAL_RETRY_S = 2.0
_SHED_LOG_INTERVAL_S = 60.0


class DetectionLoop:
    def __init__(self, settings: DetectionSettings, journal: Journal, normalize: NormalizeOptions) -> None:
        self.settings = settings
        self.journal = journal
        self.engine = Engine(settings.rules, settings.limits)
        self.role = "starting"
        self._service = normalize.service
        self._env = normalize.env
        self._stopping = asyncio.Event()
        self._lease: Lease | None = None
        self._reads = ReadThread("detections")
        """Every blocking call of the loop (lease, read, evaluation, checkpoint): the engine is
        used from this one thread (``forwarder.read_thread``)."""
        self._pending: list[tuple[Firing, NewRecord, bool]] = []
        """Firings found and not yet journaled: (firing, its record, late)."""
        self._evaluated = 0
        """The last sequence number evaluated with its firings journaled (``/status``)."""
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        self._last_shed_log = float("-inf")
        journal.hold_retention(POSITION_KEY)
        for about in (*(r.about for r in settings.rules.correlations.values()), *BUILT_IN):
            _zero_series(about.name, about.severity)
        for rule in settings.rules.base.values():
            if rule.standalone:
                _zero_series(rule.about.name, rule.about.severity)

    def stop(self) -> None:
        """Finish: write what is pending and a checkpoint, then return."""
        self._stopping.set()

    def position(self) -> int:
        """The last sequence number evaluated: this process's while it evaluates, else the one
        the evaluating replica saved. Blocking (a journal read): call it from a thread."""
        return self._evaluated if self.role == "active" else self.journal.saved_position(POSITION_KEY)

    def status(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "cursor": self._evaluated,
            "state_events": self.engine.events,
            "state_groups": self.engine.groups,
            "pending_firings": len(self._pending),
            "rules": [*self.settings.rules.correlations, *(about.name for about in BUILT_IN)],
        }

    async def run(self) -> None:
        """Evaluate until ``stop``; run under ``forwarder.supervisor``, which restarts it after a bug."""
        try:
            while True:
                try:
                    if not await self._hold_lease():
                        if await _wait(self._stopping, _STANDBY_RETRY_S):
                            return
                        continue
                    if self._pending:
                        await self._write_pending()
                    read = functools.partial(self.journal.read_after, self.engine.seq, _BATCH)
                    entries = await self._reads.run(read)
                    if entries:
                        firings = await self._reads.run(functools.partial(self.engine.process, entries))
                        self._dirty = True
                        now = time.time()
                        self._pending = [
                            (
                                firing,
                                firing_record(firing, service=self._service, env=self._env, now=now),
                                is_late(firing, now),
                            )
                            for firing in firings
                        ]
                        self._report()
                        await self._write_pending()
                        self._evaluated = entries[-1].seq
                    elif self._stopping.is_set():
                        await self._checkpoint()
                        return
                    if self._dirty and time.monotonic() - self._last_checkpoint >= _CHECKPOINT_INTERVAL_S:
                        await self._checkpoint()  # also while a backlog is read, batch after batch
                    if len(entries) < _BATCH:
                        await _wait(self._stopping, _POLL_INTERVAL_S)
                except JournalUnavailable as exc:
                    logger.warning("detections cannot use the journal now", extra={"error": str(exc)})
                    if await _wait(self._stopping, _JOURNAL_RETRY_S):
                        return
        finally:
            self._reads.stop()
            if self._lease is not None:
                self._lease.release()
                self._lease = None

    async def _write_pending(self) -> None:
        """Journal the firings found (they reach every sink from there); raises until it can."""
        if not self._pending:
            return
        pending = self._pending
        due = time.monotonic() - self._last_checkpoint >= _CHECKPOINT_INTERVAL_S
        state = await self._checkpoint_state() if due else None
        fresh = await self.journal.append([record for _, record, _ in pending], state=state)
        self._pending = []
        if state is not None:
            self._saved()
        for (firing, record, late), is_new in zip(pending, fresh, strict=True):
            if is_new:
                # Late firings apart: an alert on the counter would otherwise page for the
                # attacks of last week when detections first read a retained journal.
                counter = metrics.DETECTIONS_LATE if late else metrics.DETECTIONS
                counter.labels(firing.about.name, firing.about.severity).inc()
                logger.info(
                    "detection fired",
                    extra={
                        "rule": firing.about.name,
                        "severity": firing.about.severity,
                        "id": record.event_id,
                        "late": late,
                    },
                )

    async def _checkpoint(self) -> None:
        await self.journal.append([], state=await self._checkpoint_state())
        self._saved()

    async def _checkpoint_state(self) -> dict[str, str]:
        snapshot = await self._reads.run(self.engine.snapshot)
        # The engine only moves in this loop, so its position is the snapshot's.
        return {CHECKPOINT_KEY: snapshot, POSITION_KEY: str(self.engine.seq)}

    def _saved(self) -> None:
        self._dirty = False
        self._last_checkpoint = time.monotonic()

    def _report(self) -> None:
        metrics.DETECTION_STATE_EVENTS.set(self.engine.events)
        metrics.DETECTION_STATE_GROUPS.set(self.engine.groups)
        shed = self.engine.take_shed()
        if not (shed.groups or shed.events):
            return
        metrics.DETECTION_STATE_SHED.labels("groups").inc(shed.groups)
        metrics.DETECTION_STATE_SHED.labels("events").inc(shed.events)
        now = time.monotonic()
        if now - self._last_shed_log >= _SHED_LOG_INTERVAL_S:
            self._last_shed_log = now
            limits = self.settings.limits
            logger.warning(
                "detection state at its bound: dropped the least recently used groups and the oldest"
                " events (attacks among them may go unseen); raise FORWARDER_DETECTION_MAX_GROUPS or"
                " FORWARDER_DETECTION_MAX_EVENTS if this is not a flood",
                extra={
                    "groups_dropped": shed.groups,
                    "events_dropped": shed.events,
                    "max_groups": limits.max_groups,
                    "max_events": limits.max_events,
                },
            )

    async def _hold_lease(self) -> bool:
        """Whether this process evaluates; taking the lease (again) reloads the checkpoint."""
        if self._lease is not None:
            if await self._reads.run(self._lease.alive):
                return True
            with contextlib.suppress(Exception):
                self._lease.release()
            self._lease = None
            logger.warning("lost the detection lease; standing by")
        lease = await self._reads.run(functools.partial(self.journal.claim, LEASE))
        if lease is None:
            if self.role != "standby":
                logger.info("another process evaluates detections; standing by")
            self.role = "standby"
            return False
        self._lease = lease
        self.engine = Engine(self.settings.rules, self.settings.limits)
        self._pending = []
        saved = await self._reads.run(functools.partial(self.journal.get_state, CHECKPOINT_KEY))
        if saved is not None:
            try:
                await self._reads.run(functools.partial(self.engine.restore, saved))
            except (ValueError, KeyError, TypeError, zlib.error) as exc:
                # A checkpoint this release cannot read: evaluate the journal again from its
                # start. Firings found before keep their ids, so they are not repeated.
                logger.error(
                    "cannot read the detection checkpoint; evaluating from the start",
                    extra={"error": str(exc)},
                )
                self.engine = Engine(self.settings.rules, self.settings.limits)
        self._report()
        self._evaluated = self.engine.seq
        # Saved again at the next checkpoint even if nothing new comes: a checkpoint of an
        # earlier release has no position, and retention keeps every record until one is saved.
        self._dirty = True
        self.role = "active"
        logger.info(
            "evaluating detections", extra={"cursor": self.engine.seq, "state_groups": self.engine.groups}
        )
        return True


def _zero_series(rule: str, severity: str) -> None:
    """A 0 series for each rule in both counters, so that a rate or an increase over them
    sees the first firing."""
    metrics.DETECTIONS.labels(rule, severity)
    metrics.DETECTIONS_LATE.labels(rule, severity)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True
