"""The membership map filled from the WorkOS API: users seen before their membership events.

A user whose membership was created before the forwarder ran has no membership event in the
journal, so their sign-ins could never be attributed. With ``WORKOS_API_KEY`` set, such a user
is looked up: ``GET /user_management/organization_memberships?user_id=...&statuses=active``,
every page of it. Never on the acknowledgement path: ``normalize`` only queues the user
(``MembershipMap.on_miss``, a dict lookup), and this task asks the API in the background, at
most ``WORKOS_MEMBERSHIP_LOOKUP_RATE`` requests a second. What it finds is written to the
journal's membership table (source ``api``) like a learned membership, so the user's *later*
events are attributed, on every replica. Every answer is remembered for
``WORKOS_MEMBERSHIP_LOOKUP_TTL``, an empty one (no active membership, or 404) included, so a
user is asked about at most once per TTL whatever their traffic.

The requests, retries and the wait a 429's ``Retry-After`` asks for are the Events API
client's (``EventsApiClient.get_list``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from forwarder import metrics
from forwarder.config import ConfigError, duration
from forwarder.memberships import MembershipMap
from forwarder.memberships_store import MembershipStore
from forwarder.sources.events_api import ApiSettings, api_client
from forwarder.sources.events_api_client import ApiRejected, ApiUnavailable, EventsApiClient

logger = logging.getLogger("forwarder.memberships")

PATH = "/user_management/organization_memberships"
MAX_QUEUED = 10_000
"""Users waiting for a lookup at most; past it, more are dropped until the queue drains
(they are queued again on their next event)."""
_REJECTED_PAUSE_S = 300.0
_FAILED_RETRY_S = 60.0


def lookup_rate(env: Mapping[str, str]) -> float:
    """``WORKOS_MEMBERSHIP_LOOKUP_RATE``: API requests per second (default 2; 0 turns lookups off)."""
    raw = env.get("WORKOS_MEMBERSHIP_LOOKUP_RATE", "").strip() or "2"
    try:
        rate = float(raw)
    except ValueError:
        rate = math.nan
    if not 0 <= rate <= 100:
        raise ConfigError(
            "WORKOS_MEMBERSHIP_LOOKUP_RATE",
            f"{raw!r} is not a number of requests per second between 0 (off) and 100 (default 2)",
        )
    return rate


class MembershipLookups:
    """The queue of users to look up and the task that works through it."""

    name = "memberships_api"

    def __init__(
        self,
        client: EventsApiClient,
        store: MembershipStore,
        *,
        rate_per_s: float,
        ttl_s: float,
    ) -> None:
        self._client = client
        self._store = store
        self._memberships: MembershipMap = store.memberships
        self._interval = 1.0 / rate_per_s
        self._ttl = ttl_s
        self._queued: dict[str, None] = {}
        self._answered: dict[str, float] = {}  # user -> when (monotonic) they may be asked again
        self._max_answered = store.settings.max_rows
        self._state = "idle"
        self._last_error: str | None = None
        self._counts = {"found": 0, "none": 0, "rejected": 0, "failed": 0}
        self._memberships.on_miss = self.enqueue

    def enqueue(self, user_id: str) -> None:
        """Queue ``user_id`` unless asked about within the TTL (the acknowledgement path: cheap)."""
        if user_id in self._queued or len(self._queued) >= MAX_QUEUED:
            return
        again = self._answered.get(user_id)
        if again is not None and again > time.monotonic():
            return
        self._queued[user_id] = None

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval)
                if self._queued:
                    user_id = next(iter(self._queued))
                    del self._queued[user_id]
                    if self._memberships.get(user_id) is None:  # not learned meanwhile
                        await self._look_up(user_id)
        finally:
            self._memberships.on_miss = None
            await self._client.aclose()

    async def _look_up(self, user_id: str) -> None:
        ttl = self._ttl
        try:
            organizations = await self._organizations(user_id)
        except ApiRejected as exc:
            if exc.status != 404:  # a bad key or permission: nothing to learn until an operator acts
                self._failed("rejected", str(exc), logging.ERROR)
                await asyncio.sleep(_REJECTED_PAUSE_S)
                return
            organizations = []  # no such user (any more): nothing to attribute, remembered as such
        except ApiUnavailable as exc:
            self._failed("failed", str(exc), logging.WARNING)
            ttl = min(ttl, _FAILED_RETRY_S)
            organizations = None
        self._remember(user_id, ttl)
        if organizations is None:
            return
        self._state, self._last_error = "ok", None
        result = "found" if organizations else "none"
        self._counts[result] += 1
        metrics.MEMBERSHIP_LOOKUPS.labels(result).inc()
        if organizations:
            now = time.time()
            await self._store.store([(user_id, org, "api", True, now) for org in organizations])

    async def _organizations(self, user_id: str) -> list[str]:
        """The user's active organizations, every page (each one a request within the rate)."""
        organizations: list[str] = []
        params: dict[str, str | int] = {"user_id": user_id, "statuses": "active", "limit": 100}
        while True:
            page = await self._client.get_list(PATH, params)
            for membership in page.events:
                if isinstance(membership, dict) and membership.get("status", "active") == "active":
                    organization_id = membership.get("organization_id")
                    if isinstance(organization_id, str) and organization_id:
                        organizations.append(organization_id)
            if page.after is None or not page.events:
                return organizations
            params["after"] = page.after
            await asyncio.sleep(self._interval)

    def _remember(self, user_id: str, ttl: float) -> None:
        self._answered.pop(user_id, None)
        self._answered[user_id] = time.monotonic() + ttl
        while len(self._answered) > self._max_answered:
            del self._answered[next(iter(self._answered))]

    def _failed(self, state: str, error: str, level: int) -> None:
        self._counts[state] += 1
        metrics.MEMBERSHIP_LOOKUPS.labels(state).inc()
        if (state, error) != (self._state, self._last_error):
            logger.log(level, "membership lookup failed", extra={"error": error})
        self._state, self._last_error = state, error

    def status(self) -> dict[str, Any]:
        return {
            "url": self._client.url,
            "state": self._state,
            "last_error": self._last_error,
            "queued": len(self._queued),
            "remembered": len(self._answered),
            **self._counts,
        }


def create(env: Mapping[str, str], store: MembershipStore) -> MembershipLookups | None:
    """The lookups when ``WORKOS_API_KEY`` is set and ``WORKOS_MEMBERSHIP_LOOKUP_RATE`` is not 0."""
    settings = ApiSettings.from_env(env)
    rate = lookup_rate(env)
    ttl = duration(env, "WORKOS_MEMBERSHIP_LOOKUP_TTL", "1h")
    if settings is None or rate == 0:
        return None
    client = api_client(env, settings, logger, "membership lookup will be retried")
    return MembershipLookups(client, store, rate_per_s=rate, ttl_s=ttl)
