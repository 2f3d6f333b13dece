"""Who belongs to which organization, in memory: what attributes an event at ingest.

Password, magic-auth, MFA, OAuth, passkey and email-verification sign-ins carry a user id but
no organization, so per-organization monitors only ever saw SSO. The forwarder learns the
mapping from the events it stores (``forwarder.memberships_store`` keeps it in the journal)
and, optionally, from the WorkOS API (``forwarder.sources.memberships_api``). This module is
the map those fill and ``normalize`` reads, and the rule that writes the record's fields:

* an event that names its organization keeps it; a sign-in among them also gets
  ``workos.organization_ids = [it]`` and ``workos.attribution = "event"``;
* an event of a user with no organization of its own gets the user's organizations
  (``workos.organization_ids``, and ``workos.organization_id`` when there is exactly one) and
  where they were learned (``workos.attribution``: ``membership``, ``session`` or ``api``);
* a user the map does not know gets nothing: never a guess.

The lookup is on the acknowledgement path, so it is one dict lookup of a precomputed answer.
Writers (the journal's writer thread, the refresh task) take a lock; readers do not: a
dict's ``get`` and item assignment are atomic under the GIL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from forwarder.records import NewRecord

Source = Literal["membership", "session", "api"]
Attribution = Literal["event", "membership", "session", "api"]

_PRECEDENCE: dict[str, int] = {"membership": 0, "session": 1, "api": 2}
"""Which source names a user's attribution when their organizations came from several: an
organization membership event is the firmest word, a session the next, a lookup the last."""


LEARNED_TYPES = frozenset(
    {
        "organization_membership.created",
        "organization_membership.updated",
        "organization_membership.deleted",
        "session.created",
    }
)
"""The event types that tie a user to an organization."""

Said = tuple[str, str, str, bool]
"""(user, organization, source, active): what one event says about one membership."""


def memberships_in(event_type: str, data: dict[str, Any]) -> list[Said]:
    """What an event of ``LEARNED_TYPES`` says: a session ties its user to its organization; a
    membership does while ``active`` (``inactive``, ``pending`` and a deletion end it)."""
    user_id, organization_id = data.get("user_id"), data.get("organization_id")
    if type(user_id) is not str or type(organization_id) is not str or not user_id or not organization_id:
        return []
    if event_type == "session.created":
        return [(user_id, organization_id, "session", True)]
    active = event_type != "organization_membership.deleted" and data.get("status") == "active"
    return [(user_id, organization_id, "membership", active)]


@dataclass(slots=True)
class LearningRecord(NewRecord):
    """A record of one of ``LEARNED_TYPES``, with what it says worked out while the event was
    decoded anyway (normalizing), so the journal's writer thread need not decode it again."""

    memberships: list[Said]


class Row(NamedTuple):
    """One (user, organization) of the journal's ``memberships`` table, as learned or refreshed."""

    user_id: str
    organization_id: str
    source: str
    active: bool
    seen_at: float = 0.0
    """When an event last said so (epoch seconds)."""


class Known(NamedTuple):
    """What the map answers for a user: their organizations (sorted) and where they came from."""

    organization_ids: tuple[str, ...]
    attribution: str


class MembershipMap:
    """user id -> ``Known``, bounded to ``max_users`` (the least recently changed go first)."""

    def __init__(self, max_users: int) -> None:
        self.max_users = max_users
        self._known: dict[str, Known] = {}
        self._rows: dict[str, dict[str, tuple[str, float]]] = {}  # user -> {org: (source, seen_at)}, active
        self._lock = threading.Lock()
        self.get: Callable[[str], Known | None] = self._known.get
        """The lookup of the acknowledgement path: the user's ``Known``, or None."""
        self.on_miss: Callable[[str], None] | None = None
        """Called with a user the map did not know (the API fill queues a lookup)."""

    def __len__(self) -> int:
        return len(self._known)

    def apply(self, rows: Iterable[Row]) -> None:
        """Take rows as the journal now holds them: active ones add, inactive ones remove.

        Past ``max_users`` the least recently changed users are dropped: the journal's table is
        bounded the same way (``MembershipStore.evict``), this keeps the map within it meanwhile."""
        with self._lock:
            changed: dict[str, None] = {}  # in the order of the rows: the last is the newest
            for row in rows:
                organizations = self._rows.get(row.user_id)
                if row.active:
                    if organizations is None:
                        organizations = self._rows[row.user_id] = {}
                    organizations[row.organization_id] = (row.source, row.seen_at)
                elif organizations is not None:
                    organizations.pop(row.organization_id, None)
                changed[row.user_id] = None
            for user_id in changed:
                self._known.pop(user_id, None)  # re-inserted last: the most recently changed
                organizations = self._rows.get(user_id)
                if not organizations:
                    self._rows.pop(user_id, None)
                    continue
                best = min((source for source, _ in organizations.values()), key=_PRECEDENCE.__getitem__)
                self._known[user_id] = Known(tuple(sorted(organizations)), best)
            while len(self._known) > self.max_users:
                oldest = next(iter(self._known))
                del self._known[oldest]
                self._rows.pop(oldest, None)

    def seen_since(self, user_id: str, organization_id: str, source: str, since: float) -> bool:
        """Whether the map holds (user, organization) active, from ``source`` or a firmer one, seen
        at or after ``since``: writing it again would change nothing but its time."""
        organizations = self._rows.get(user_id)
        held = organizations.get(organization_id) if organizations is not None else None
        return held is not None and held[1] >= since and _PRECEDENCE[held[0]] <= _PRECEDENCE[source]

    def forget(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Drop (user, organization) pairs the journal evicted."""
        self.apply(Row(user_id, organization_id, "", False) for user_id, organization_id in pairs)


def attribute(
    workos: dict[str, Any],
    organization_id: str | None,
    user_id: str | None,
    sign_in: bool,
    memberships: MembershipMap | None,
) -> None:
    """Write the attribution fields of one record's ``workos`` object (the rules above).

    Called for sign-ins (``sign_in``) and for events with a user but no organization.
    """
    if organization_id:
        if sign_in:
            workos["organization_ids"] = [organization_id]
            workos["attribution"] = "event"
        return
    if memberships is None or not user_id:
        return
    known = memberships.get(user_id)
    if known is None:
        on_miss = memberships.on_miss
        if on_miss is not None:
            on_miss(user_id)
        return
    organization_ids = known.organization_ids
    if len(organization_ids) == 1:
        workos["organization_id"] = organization_ids[0]
    workos["organization_ids"] = list(organization_ids)
    workos["attribution"] = known.attribution
