"""The membership map kept in the journal: learned as events are stored, shared by replicas.

``organization_membership.created`` / ``.updated`` / ``.deleted`` and ``session.created``
tie a user to an organization. When one of them is stored (webhook, Events API or backfill),
its (user, organization) row is written in the same transaction (``Journal.on_store``), and
the process's ``MembershipMap`` takes it once that committed, before the event is
acknowledged: the user's next event is attributed. A row is never deleted when a membership
ends; it is marked inactive, so other replicas see the end too.

Replicas share the table. Every row change takes the next ``version`` (writers are serialized,
one transaction at a time, on both engines), so each process reads the rows changed since the
last version it saw, every ``FORWARDER_MEMBERSHIPS_REFRESH`` (1 s): a membership learned by one
replica attributes events on all of them within about a second.

Events arrive out of order: a row changes only for news at least as recent as what it holds
(``changed_at``, the event's creation time). Every sign-in creates a session, so a row the map
holds active, seen within the hour, is not written again for an event saying the same. Size is
bounded: past ``FORWARDER_MEMBERSHIPS_MAX`` rows, the least recently seen are deleted (checked
every minute, every 5 s while the map is full; counted).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from forwarder import metrics
from forwarder.config import duration, integer
from forwarder.group_commit import JournalUnavailable, Transaction
from forwarder.journal import Journal
from forwarder.memberships import (
    LEARNED_TYPES,
    LearningRecord,
    MembershipMap,
    Row,
    Said,
    memberships_in,
)
from forwarder.read_thread import PERIODIC_READS
from forwarder.records import NewRecord

logger = logging.getLogger("forwarder.memberships")

_REFRESH_BATCH = 5_000
_RESEEN_S = 3600.0
"""A row the map holds active, seen less than this ago, is not written again for another event
saying the same (every sign-in creates a session): its ``seen_at``, what eviction goes by, is
exact to this much."""
_EVICTION_INTERVAL_S = 60.0
_FULL_EVICTION_INTERVAL_S = 5.0
"""How often the table's size is checked while the map is full (it may be over its bound)."""

_UPSERT = (
    "INSERT INTO memberships"
    " (user_id, organization_id, source, active, changed_at, seen_at, version)"
    # The next version, read in the statement: writers are serialized, so versions grow in commit
    # order, and each row of a transaction sees the ones written before it.
    " VALUES (?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(version), 0) + 1 FROM memberships))"
    " ON CONFLICT (user_id, organization_id) DO UPDATE SET"
    # A session never demotes an active membership's source: that is the firmer word.
    " source = CASE WHEN memberships.active = 1 AND excluded.active = 1"
    " AND memberships.source = 'membership' THEN memberships.source ELSE excluded.source END,"
    " active = excluded.active, changed_at = excluded.changed_at, seen_at = excluded.seen_at,"
    " version = excluded.version"
    " WHERE excluded.changed_at >= memberships.changed_at"
    " RETURNING user_id, organization_id, source, active, seen_at"
)


@dataclass(frozen=True, slots=True)
class MembershipSettings:
    max_rows: int
    refresh_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MembershipSettings:
        return cls(
            max_rows=integer(env, "FORWARDER_MEMBERSHIPS_MAX", 100_000),
            refresh_s=duration(env, "FORWARDER_MEMBERSHIPS_REFRESH", "1s"),
        )


def learned_rows(record: NewRecord) -> list[Said]:
    """What a stored record of ``LEARNED_TYPES`` says (worked out when it was normalized)."""
    if type(record) is LearningRecord:
        return record.memberships
    try:  # built elsewhere than ``journal_record``: read it from the record
        data = orjson.loads(record.json)["workos"]["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return []
    return memberships_in(record.event_type, data) if type(data) is dict else []


class MembershipStore:
    """The journal side of the map: learns rows on store, loads, refreshes and evicts."""

    def __init__(self, journal: Journal, memberships: MembershipMap, settings: MembershipSettings) -> None:
        self.journal = journal
        self.memberships = memberships
        self.settings = settings
        self._version = 0
        self._refreshing = threading.Lock()
        self._evicted_at = 0.0
        journal.on_store = self.learn

    # -- writes (the journal's writer thread) ----------------------------------------------

    def learn(self, tx: Transaction, records: Sequence[NewRecord], fresh: list[bool]) -> None:
        """``Journal.on_store``: the rows of the new membership and session events, in ``tx``."""
        rows: list[tuple[str, str, str, bool, float]] = []
        for record, is_new in zip(records, fresh, strict=True):
            if record.event_type in LEARNED_TYPES and is_new:
                now = time.time()
                changed_at = record.created_at if record.created_at is not None else now
                for user_id, organization_id, source, active in learned_rows(record):
                    if not (
                        active
                        and self.memberships.seen_since(user_id, organization_id, source, now - _RESEEN_S)
                    ):
                        rows.append((user_id, organization_id, source, active, changed_at))
        if rows:
            self.write_rows(tx, rows)

    def write_rows(self, tx: Transaction, rows: Sequence[tuple[str, str, str, bool, float]]) -> None:
        """Upsert (user, organization, source, active, changed_at) rows; the map takes those that
        changed once ``tx`` commits (before the events are acknowledged)."""
        now = time.time()
        changed: list[Row] = []
        for user_id, organization_id, source, active, changed_at in rows:
            cursor = tx.execute(_UPSERT, (user_id, organization_id, source, int(active), changed_at, now))
            changed.extend(
                Row(user, org, how, bool(on), seen) for user, org, how, on, seen in cursor.fetchall()
            )
        if changed:
            tx.after_commit.append(lambda: self.apply(changed))

    def apply(self, rows: list[Row]) -> None:
        """Rows this process committed, into the map. Under the refresh lock: a refresh that read
        the table before the commit applies its older state first, never after."""
        with self._refreshing:
            self.memberships.apply(rows)

    async def store(self, rows: Sequence[tuple[str, str, str, bool, float]]) -> None:
        """Write rows learned elsewhere (the API fill) in their own commit."""
        await self.journal.write(lambda tx: self.write_rows(tx, rows))

    # -- reads -------------------------------------------------------------------------------

    def refresh(self) -> int:
        """Apply rows changed since the last refresh (any replica's); blocking. Answers how many.

        One refresh at a time, reading in version order: the map never takes an older state of
        a row after a newer one (the writer thread refreshes after its commit, the task every
        second)."""
        with self._refreshing:
            return self._refresh()

    def _refresh(self) -> int:
        total = 0
        while True:
            rows = self.journal.query(
                "SELECT user_id, organization_id, source, active, seen_at, version FROM memberships"
                " WHERE version > ? ORDER BY version LIMIT ?",
                (self._version, _REFRESH_BATCH),
            )
            if not rows:
                return total
            self.memberships.apply(
                Row(user, org, how, bool(on), seen) for user, org, how, on, seen, _ in rows
            )
            self._version = max(self._version, int(rows[-1][5]))
            total += len(rows)
            if len(rows) < _REFRESH_BATCH:
                return total

    async def evict(self) -> int:
        """Delete the least recently seen rows past ``max_rows``; answers how many."""
        ((count,),) = await asyncio.to_thread(self.journal.query, "SELECT COUNT(*) FROM memberships")
        excess = int(count) - self.settings.max_rows
        metrics.MEMBERSHIPS.set(count)
        if excess <= 0:
            return 0

        def delete(tx: Transaction) -> list[Any]:
            return list(
                tx.execute(
                    "DELETE FROM memberships WHERE (user_id, organization_id) IN"
                    " (SELECT user_id, organization_id FROM memberships ORDER BY seen_at LIMIT ?)"
                    " RETURNING user_id, organization_id",
                    (excess,),
                )
            )

        deleted = await self.journal.write(delete)
        with self._refreshing:
            self.memberships.forget((user, organization) for user, organization in deleted)
        metrics.MEMBERSHIP_EVICTIONS.inc(len(deleted))
        metrics.MEMBERSHIPS.set(int(count) - len(deleted))
        logger.info(
            "memberships evicted, least recently seen first",
            extra={"count": len(deleted), "limit": self.settings.max_rows},
        )
        return len(deleted)

    async def run(self) -> None:
        """Refresh every ``refresh_s``; evict every minute. Journal errors wait for the next round."""
        failures: tuple[type[BaseException], ...] = (JournalUnavailable, *self.journal.engine.errors)
        while True:
            try:
                await PERIODIC_READS.run(self.refresh)
                metrics.MEMBERSHIP_USERS.set(len(self.memberships))
                full = len(self.memberships) >= self.settings.max_rows
                since = time.monotonic() - self._evicted_at
                if since >= _EVICTION_INTERVAL_S or (full and since >= _FULL_EVICTION_INTERVAL_S):
                    self._evicted_at = time.monotonic()
                    await self.evict()
            except failures as exc:
                logger.warning("the membership map could not be refreshed now", extra={"error": str(exc)})
            await asyncio.sleep(self.settings.refresh_s)


def open_memberships(env: Mapping[str, str], journal: Journal) -> MembershipStore | None:
    """The store over ``journal``, its map loaded from the table; None when
    ``FORWARDER_MEMBERSHIPS_MAX`` is 0 (no learning, no attribution)."""
    settings = MembershipSettings.from_env(env)
    if settings.max_rows == 0:
        return None
    store = MembershipStore(journal, MembershipMap(settings.max_rows), settings)
    try:
        store.refresh()
    except JournalUnavailable as exc:  # the refresh task tries again every second
        logger.warning("the membership map could not be loaded now", extra={"error": str(exc)})
    return store
