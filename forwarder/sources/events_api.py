"""The WorkOS Events API as a second way into the journal: the poller in ``serve``, and its settings.

Webhooks can be missed (the forwarder was down longer than WorkOS retries, the endpoint was
misconfigured) and some types are never sent by webhook at all. The Events API serves the same
events under the same ids, so its pages go into the same id-keyed journal: an event that came
by webhook already is a no-op, one that did not is stored with ``workos.delivery = "api"`` and
counted in ``workos_reconciled_events_total{path="api_only"}``.

This module is the ``events_api`` source (``create``, the ``workos_forwarder.sources`` entry
point): the settings (``WORKOS_API_KEY``, ``WORKOS_EVENTS`` globs, ...) and the poller that runs
a sync every interval. The HTTP requests are ``events_api_client``'s; where in the list to ask
next and how the position is kept durable is ``events_sync``'s, shared with ``backfill``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forwarder import failpoints, metrics
from forwarder.catalog import KNOWN_EVENT_TYPES
from forwarder.config import ConfigError, duration, max_retry_after
from forwarder.journal import Journal, JournalUnavailable
from forwarder.logs import RateLimitedLog
from forwarder.masking import mask_url
from forwarder.normalize import NormalizeOptions
from forwarder.sources.events_api_client import (
    DEFAULT_API_URL,
    ApiRejected,
    ApiUnavailable,
    EventsApiClient,
    iso_ms,
)
from forwarder.sources.events_sync import EventsSync

logger = logging.getLogger("forwarder.events_api")

POLL_STATE_KEY = "events_api:poll"

# A refused request (bad key, missing permission) needs an operator; asking again every
# minute would only fill the logs, but the poller must notice the fix without a restart.
_REJECTED_RETRY_S = 300.0
_GLOB_CHARS = frozenset("*?[")


# -- settings -------------------------------------------------------------------------------


def event_types(spec: str | None, variable: str) -> tuple[str, ...]:
    """The ``events`` filter from comma-separated types and globs; empty means every known type.

    The API wants an explicit list, so globs (``authentication.*``) expand over the catalog.
    A plain name the catalog does not know passes as is: WorkOS adds types over time and the
    API, not this list, is the judge.
    """
    patterns = [part.strip() for part in (spec or "").split(",") if part.strip()]
    if not patterns:
        return tuple(sorted(KNOWN_EVENT_TYPES))
    chosen: set[str] = set()
    for pattern in patterns:
        if _GLOB_CHARS.isdisjoint(pattern):
            chosen.add(pattern)
            continue
        matched = {name for name in KNOWN_EVENT_TYPES if fnmatch.fnmatchcase(name, pattern)}
        if not matched:
            raise ConfigError(
                variable,
                f"{pattern!r} matches no known event type; use types or globs such as "
                "authentication.*,dsync.user.*",
            )
        chosen |= matched
    return tuple(sorted(chosen))


@dataclass(frozen=True, slots=True)
class ApiSettings:
    url: str
    api_key: str
    types: tuple[str, ...]
    organization_id: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiSettings | None:
        """The Events API settings, or None when ``WORKOS_API_KEY`` is not set."""
        api_key = env.get("WORKOS_API_KEY", "").strip()
        if not api_key:
            return None
        if not api_key.startswith("sk_"):
            if api_key.startswith("client_"):
                what = "a client id (client_...), not a secret key"
            else:
                what = f"not a secret key (it starts with {api_key[:3]!r})"
            raise ConfigError(
                "WORKOS_API_KEY",
                f"the value is {what}. The Events API needs a secret key, which starts with sk_ "
                "(WorkOS dashboard > API Keys; the key of the environment that sends your webhooks)",
            )
        url = env.get("WORKOS_API_URL", "").strip() or DEFAULT_API_URL
        if not url.startswith(("https://", "http://")):
            raise ConfigError(
                "WORKOS_API_URL", f"{mask_url(url)!r} is not an http(s) URL (default {DEFAULT_API_URL})"
            )
        return cls(
            url=url.rstrip("/"),
            api_key=api_key,
            types=event_types(env.get("WORKOS_EVENTS"), "WORKOS_EVENTS"),
            organization_id=env.get("WORKOS_ORGANIZATION_ID", "").strip() or None,
        )


# -- the poller in ``serve`` ----------------------------------------------------------------


class EventsApiPoller:
    """Polls from the durable cursor every interval; API refusals never stop the service."""

    name = "events_api"

    def __init__(self, client: EventsApiClient, sync: EventsSync, *, interval_s: float) -> None:
        self._client = client
        self._sync = sync
        self._interval = interval_s
        self._state = "starting"
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_success_at: float | None = None
        self._fetched = self._new = self._known = self._skipped = 0

    async def run(self) -> None:
        try:
            while True:
                wait = self._interval
                try:
                    await self._poll()
                except ApiRejected as exc:
                    wait = max(self._interval, _REJECTED_RETRY_S)
                    self._failed("rejected", str(exc), logging.ERROR, wait)
                except (ApiUnavailable, JournalUnavailable) as exc:
                    self._failed("unavailable", str(exc), logging.WARNING, wait)
                except Exception as exc:  # a bug here must not end reconciliation for good
                    # Handled here rather than by the supervisor, which would restart run()
                    # with the client closed by the finally below; counted the same way.
                    logger.exception("Events API poll failed unexpectedly")
                    metrics.TASK_RESTARTS.labels(f"source:{self.name}").inc()
                    self._failed("error", f"{type(exc).__name__}: {exc}", logging.DEBUG, wait)
                await asyncio.sleep(wait)
        finally:
            await self._client.aclose()

    async def _poll(self) -> None:
        failpoints.hit("poller.poll")
        new = 0
        async for result in self._sync.pages():
            new += result.new
            self._fetched += result.fetched
            self._new += result.new
            self._known += result.known
            self._skipped += result.skipped
        if self._state != "ok" and self._last_error is not None:
            logger.info("Events API polls work again", extra={"after_error": self._last_error})
        self._state = "ok"
        self._last_success_at = time.time()
        if new:
            logger.info(
                "events reached the journal through the Events API only (missed or late webhooks)",
                extra={"count": new, "cursor": self._cursor_id()},
            )

    def _failed(self, state: str, error: str, level: int, retry_in_s: float) -> None:
        if (state, error) != (self._state, self._last_error):
            logger.log(level, "Events API poll failed", extra={"error": error, "retry_in_s": retry_in_s})
        self._state = state
        self._last_error = error
        self._last_error_at = time.time()

    def _cursor_id(self) -> str | None:
        cursor = self._sync.state.cursor
        return cursor.id if cursor else None

    def status(self) -> dict[str, Any]:
        state = self._sync.state
        return {
            "url": self._client.url,
            "interval_s": self._interval,
            "state": self._state,
            "last_error": self._last_error,
            "last_error_at": self._last_error_at,
            "last_success_at": self._last_success_at,
            "cursor": self._cursor_id(),
            "cursor_created_at": iso_ms(state.cursor.ms) if state.cursor else None,
            "order": state.order,
            "sweeping": state.sweep_from is not None,
            "fetched": self._fetched,
            "api_only": self._new,
            "already_known": self._known,
            "skipped": self._skipped,
        }


def api_client(
    env: Mapping[str, str], settings: ApiSettings, log: logging.Logger, message: str
) -> EventsApiClient:
    """A WorkOS API client whose retry waits are logged as ``message``, one line per reason per
    minute: a long 5xx spell must not flood the logs (the poller and the membership lookups)."""
    waits = RateLimitedLog(log, interval_s=60.0)

    def on_wait(reason: str, seconds: float) -> None:
        waits.warning(reason, message, reason=reason, in_s=seconds)

    return EventsApiClient(
        settings.url, settings.api_key, on_wait=on_wait, max_retry_after_s=max_retry_after(env)
    )


def create(env: Mapping[str, str], journal: Journal, options: NormalizeOptions) -> EventsApiPoller | None:
    """The poller when ``WORKOS_API_KEY`` is set and ``WORKOS_POLL_INTERVAL`` is not 0."""
    settings = ApiSettings.from_env(env)
    interval = duration(env, "WORKOS_POLL_INTERVAL", "60s")
    lookback = duration(env, "WORKOS_POLL_LOOKBACK", "1h")
    if settings is None or interval == 0:
        return None
    client = api_client(env, settings, logger, "Events API request will be retried")
    sync = EventsSync(
        client,
        journal,
        options,
        key=POLL_STATE_KEY,
        types=settings.types,
        organization_id=settings.organization_id,
        start_ms=round((time.time() - lookback) * 1000),
        follow_new_types=KNOWN_EVENT_TYPES.issubset(settings.types),
    )
    return EventsApiPoller(client, sync, interval_s=interval)
