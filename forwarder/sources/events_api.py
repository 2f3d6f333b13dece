"""The WorkOS Events API as a second way into the journal: the poller in ``serve`` and ``backfill``.

Webhooks can be missed (the forwarder was down longer than WorkOS retries, the endpoint was
misconfigured) and some types are never sent by webhook at all. The Events API serves the same
events under the same ids, so its pages go into the same id-keyed journal: an event that came
by webhook already is a no-op, one that did not is stored with ``workos.delivery = "api"`` and
counted in ``workos_reconciled_events_total{path="api_only"}``.

The position in the API's list is durable: each page's events and the position after that
page are written in one journal transaction (``Journal.append(..., state=...)``), so a crash
between pages neither skips nor repeats a page, and a restart resumes where it stopped.

The API's ``order`` parameter is reported to be ignored, so nothing here relies on it:

* An oldest-first list (what the live API serves) is walked forward with ``after=<last id>``.
  The last id is the newest event stored; when ``list_metadata.after`` comes back null it stays
  the cursor, so the next poll asks for what came after it.
* In a newest-first list, ``after=<last id>`` pages *back* in time, and newer events would never
  be seen. So when a page shows newest-first order, the walk becomes a *sweep*: from the top of
  the list down to ``range_start`` = the cursor's time, resumed mid-way from the server's
  ``list_metadata.after``. The cursor moves to the newest event only when the sweep reaches the
  bottom: a crash mid-sweep resumes the sweep instead of leaving a gap under a cursor that
  already points at the top.

A sweep is correct in either order, so it is also how a walk starts while the order is not
known yet (no cursor). Mistaking one order for the other only costs a few repeated events.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from forwarder import failpoints, metrics
from forwarder.backoff import backoff_delay
from forwarder.catalog import KNOWN_EVENT_TYPES
from forwarder.config import ConfigError, duration, max_retry_after
from forwarder.journal import Journal, JournalUnavailable, NewRecord
from forwarder.masking import mask_url
from forwarder.normalize import InvalidEvent, NormalizeOptions, journal_record
from forwarder.retry_after import DEFAULT_CAP_S, retry_after_seconds

logger = logging.getLogger("forwarder.events_api")

DEFAULT_API_URL = "https://api.workos.com"
PAGE_LIMIT = 100
RETENTION_DAYS = 30
POLL_STATE_KEY = "events_api:poll"

# A refused request (bad key, missing permission) needs an operator; asking again every
# minute would only fill the logs, but the poller must notice the fix without a restart.
_REJECTED_RETRY_S = 300.0
_GLOB_CHARS = frozenset("*?[")

WaitNotice = Callable[[str, float], None]
"""Called before each retry wait with the reason and the seconds about to be waited."""


class ApiRejected(Exception):
    """The API refused the request (400/401/403/404/422): asking again will not help.

    The message names the status, the server's own words and the likely cause.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApiUnavailable(Exception):
    """The API kept failing (5xx, timeouts, refused connections) through every retry."""


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


# -- the HTTP client ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Any]
    after: str | None


class EventsApiClient:
    """``GET /events`` with the retries the API documents; one instance per process."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        max_attempts: int = 6,
        timeout_s: float = 30.0,
        on_wait: WaitNotice | None = None,
        max_retry_after_s: float = DEFAULT_CAP_S,
    ) -> None:
        """``max_retry_after_s`` caps a 429's ``Retry-After`` (``FORWARDER_MAX_RETRY_AFTER``, 5m default)."""
        self.url = mask_url(url)
        """For messages and ``/status``: the URL without a password (requests use the real one)."""
        self._max_attempts = max_attempts
        self._max_retry_after_s = max_retry_after_s
        self._on_wait = on_wait
        self._http = httpx.AsyncClient(
            base_url=url,
            headers={
                "authorization": f"Bearer {api_key}",
                "accept": "application/json",
                "user-agent": "workos-forwarder",
            },
            timeout=timeout_s,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_events(
        self,
        *,
        types: Sequence[str],
        after: str | None = None,
        range_start: str | None = None,
        range_end: str | None = None,
        organization_id: str | None = None,
    ) -> Page:
        """One page. 429 waits as ``Retry-After`` says (as often as needed); 5xx and network
        errors back off with jitter, ``max_attempts`` times; 4xx raise ``ApiRejected``."""
        params: dict[str, str | int] = {"events": ",".join(types), "limit": PAGE_LIMIT, "order": "asc"}
        optional = {
            "after": after,
            "range_start": range_start,
            "range_end": range_end,
            "organization_id": organization_id,
        }
        params.update({name: value for name, value in optional.items() if value is not None})
        failures = limited = 0
        while True:
            try:
                response = await self._http.get("/events", params=params)
            except httpx.TransportError as exc:
                reason = f"cannot reach {self.url}: {type(exc).__name__} {exc}".rstrip()
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return _parse_page(response)
                    except ValueError as exc:
                        reason = f"unexpected answer from {self.url}/events: {exc}"
                elif status == 429:
                    limited += 1
                    header = response.headers.get("retry-after")
                    wait = retry_after_seconds(header, cap=self._max_retry_after_s)
                    if wait is None:
                        await self._wait("rate limited (429) without Retry-After", backoff_delay(limited))
                    else:
                        await self._wait(f"rate limited (429), Retry-After: {header}", wait)
                    continue
                elif status >= 500 or status == 408:
                    reason = f"Events API answered {status}"
                else:
                    raise ApiRejected(status, _explain(status, response, self.url))
            failures += 1
            if failures >= self._max_attempts:
                raise ApiUnavailable(f"{reason}; gave up after {failures} attempts")
            await self._wait(reason, backoff_delay(failures, base=1.0, cap=60.0))

    async def _wait(self, reason: str, seconds: float) -> None:
        if self._on_wait is not None:
            self._on_wait(reason, seconds)
        await asyncio.sleep(seconds)


def _parse_page(response: httpx.Response) -> Page:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ValueError('no "data" list in the body')
    metadata = body.get("list_metadata")
    after = metadata.get("after") if isinstance(metadata, dict) else None
    return Page(events=body["data"], after=after if isinstance(after, str) and after else None)


def _explain(status: int, response: httpx.Response, url: str) -> str:
    """The refusal in one line: what the API said and what to change."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    said = ""
    if isinstance(body, dict):
        said = str(body.get("message") or body.get("error") or "")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            said = f"{said} {orjson.dumps(errors[:3]).decode()}".strip()
    said = said[:300] or response.reason_phrase
    if status == 401:
        cause = (
            "WORKOS_API_KEY was not accepted: it is wrong, revoked, or belongs to another WorkOS "
            "environment (staging and production keys differ). Copy a secret key (sk_...) from the "
            "WorkOS dashboard, API Keys"
        )
    elif status == 403:
        cause = (
            "WORKOS_API_KEY is valid but may not read events: give the key permission to read events "
            "(WorkOS dashboard, API Keys) or use a key of the environment that owns the events"
        )
    elif status == 404:
        cause = f"there is no Events API at {url}/events: check WORKOS_API_URL (default {DEFAULT_API_URL})"
    else:
        cause = (
            "the request was refused; likely a bad filter: an event type the API does not know "
            "(WORKOS_EVENTS / --events), a malformed organization id (WORKOS_ORGANIZATION_ID / "
            "--organization, org_...), or a date range the API will not serve (--since/--until: "
            f"within the last {RETENTION_DAYS} days, at most {RETENTION_DAYS} days apart)"
        )
    return f"Events API answered {status} ({said}): {cause}"


# -- walking the list into the journal ----------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Mark:
    """A position in the list: an event's creation time (epoch milliseconds) and id, in that
    order, so marks compare as events sort."""

    ms: int
    id: str


@dataclass(slots=True)
class WalkState:
    """What is kept under a state key, as JSON, written with each page's events.

    ``cursor``: every event up to and including it is stored. ``order``: the order pages were
    last seen in. ``sweep_*``: an unfinished sweep (its ``range_start``, the server's token to
    resume it and the newest event it has seen). ``query``: digest of the filter the state is
    for. ``done``: a backfill that reached the end.
    """

    cursor: Mark | None = None
    order: str | None = None
    sweep_from: int | None = None
    sweep_after: str | None = None
    sweep_top: Mark | None = None
    query: str = ""
    done: bool = False

    def dumps(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def loads(cls, raw: str) -> WalkState:
        fields = orjson.loads(raw)
        for name in ("cursor", "sweep_top"):
            if fields.get(name) is not None:
                fields[name] = Mark(**fields[name])
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class PageResult:
    fetched: int
    new: int
    known: int
    invalid: int
    newest: str | None
    done: bool


def iso_ms(ms: int) -> str:
    """``range_start``/``range_end`` form: UTC with a ``Z`` (the API refuses ``+00:00``)."""
    moment = datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)
    return f"{moment.isoformat(timespec='milliseconds')}Z"


class EventsSync:
    """Walks the API list for one query into the journal, its position kept under ``key``.

    ``start_ms`` is where a walk begins when the state has no cursor; ``end_ms`` bounds it
    (``range_end``). Both the poller and ``backfill`` use it, each with its own key. ``once``
    (backfill): the state is marked done at the end, and a walk over a done state starts over.
    """

    def __init__(
        self,
        client: EventsApiClient,
        journal: Journal,
        options: NormalizeOptions,
        *,
        key: str,
        types: Sequence[str],
        organization_id: str | None,
        start_ms: int,
        end_ms: int | None = None,
        once: bool = False,
    ) -> None:
        self._client = client
        self._journal = journal
        self._options = options
        self.key = key
        self._types = tuple(types)
        self._organization_id = organization_id
        self._start_ms = start_ms
        self._end = iso_ms(end_ms) if end_ms is not None else None
        self._once = once
        self.query = query_digest(self._types, organization_id)
        self.state = WalkState(query=self.query)

    def saved_state(self) -> WalkState | None:
        """The state as last committed (blocking: call through ``asyncio.to_thread``)."""
        raw = self._journal.get_state(self.key)
        return WalkState.loads(raw) if raw else None

    async def pages(self) -> AsyncIterator[PageResult]:
        """Fetch and store pages until the list has nothing more now, one result per page."""
        saved = await asyncio.to_thread(self.saved_state)
        if saved is None or saved.done:
            state = WalkState(query=self.query)
        elif saved.query != self.query:
            # Another filter is another list: an id cursor means nothing in it. Its time does,
            # so the new list is swept from there (older events of new types: use backfill).
            state = WalkState(cursor=saved.cursor, query=self.query)
        else:
            state = saved
        self.state = state
        forward_refused = False
        while True:
            # Walk forward from the cursor only where that is known to work: an oldest-first list.
            forward = (
                state.cursor
                if state.sweep_from is None and state.order == "asc" and not forward_refused
                else None
            )
            after: str | None
            range_start: str | None
            if forward is not None:
                after, range_start = forward.id, None
            else:
                if state.sweep_from is None:
                    state.sweep_from = state.cursor.ms - 1 if state.cursor else self._start_ms
                    state.sweep_after = state.sweep_top = None
                after, range_start = state.sweep_after, iso_ms(state.sweep_from)
            try:
                page = await self._client.list_events(
                    types=self._types,
                    after=after,
                    range_start=range_start,
                    range_end=self._end,
                    organization_id=self._organization_id,
                )
            except ApiRejected as exc:
                # The cursor event may have aged out of the API's retention: sweep from its time.
                if forward is not None and exc.status in (400, 404, 422):
                    forward_refused = True
                    continue
                raise
            marked, records, received, invalid = self._prepare(page.events)
            newest = max(marked) if marked else None
            seen = _order(received)
            if forward is not None:
                if seen == "desc" or (newest is not None and newest < forward):
                    # Newest-first: ``after`` walks back in time. Keep what came (the journal
                    # dedupes), leave the cursor, and sweep from it on the next round.
                    state.order = "desc"
                    yield await self._store(page, records, state, invalid, newest, done=False)
                    continue
                if newest is not None and newest > forward:
                    state.cursor = newest
                elif newest is None and page.after is not None:
                    # Nothing usable in the page (invalid events): step past it by the server's token.
                    state.cursor = Mark(forward.ms, page.after)
                done = page.after is None or not page.events
            else:
                if seen is not None:
                    state.order = seen
                if newest is not None and (state.sweep_top is None or newest > state.sweep_top):
                    state.sweep_top = newest
                done = page.after is None or not page.events
                if done:
                    top = state.sweep_top
                    if top is not None and (state.cursor is None or top > state.cursor):
                        state.cursor = top
                    state.sweep_from = state.sweep_after = state.sweep_top = None
                else:
                    state.sweep_after = page.after
            state.done = done and self._once
            yield await self._store(page, records, state, invalid, newest, done=done)
            if done:
                return

    def _prepare(self, events: list[Any]) -> tuple[list[Mark], list[NewRecord], list[tuple[int, str]], int]:
        """Normalize a page and sort it by creation time, then id (never trusting the API's order)."""
        rows: list[tuple[tuple[int, str], NewRecord]] = []
        invalid = 0
        for event in events:
            try:
                record = journal_record(event, self._options, delivery="api")
            except InvalidEvent as exc:
                invalid += 1
                # The reason in the message too: backfill's terminal shows messages, not extra fields.
                logger.error(
                    "Events API returned something that is not an event: %s", exc, extra={"error": str(exc)}
                )
                continue
            created = record.created_at
            rows.append(((round(created * 1000) if created is not None else 0, record.event_id), record))
        received = [key for key, _ in rows]
        rows.sort(key=lambda row: row[0])
        marks = [Mark(ms, event_id) for (ms, event_id), _ in rows if ms > 0]
        return marks, [record for _, record in rows], received, invalid

    async def _store(
        self,
        page: Page,
        records: list[NewRecord],
        state: WalkState,
        invalid: int,
        newest: Mark | None,
        *,
        done: bool,
    ) -> PageResult:
        fresh = await self._journal.append(records, state={self.key: state.dumps()})
        now = time.time()
        new = 0
        for record, is_new in zip(records, fresh, strict=True):
            if is_new:
                new += 1
                if record.created_at is not None:
                    metrics.ARRIVAL_DELAY.labels("api").observe(max(now - record.created_at, 0.0))
        if new:
            metrics.RECONCILED_EVENTS.labels("api_only").inc(new)
        return PageResult(
            fetched=len(page.events),
            new=new,
            known=len(records) - new,
            invalid=invalid,
            newest=iso_ms(newest.ms) if newest else None,
            done=done,
        )


def query_digest(types: Sequence[str], organization_id: str | None) -> str:
    text = orjson.dumps({"types": sorted(types), "organization_id": organization_id})
    return hashlib.sha256(text).hexdigest()[:16]


def _order(keys: list[tuple[int, str]]) -> str | None:
    """``asc``/``desc`` from the order the API sent a page in; None when it cannot tell."""
    if len(keys) < 2 or keys[0] == keys[-1]:
        return None
    return "asc" if keys[0] < keys[-1] else "desc"


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
        self._fetched = self._new = self._known = 0

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
        }


def create(env: Mapping[str, str], journal: Journal, options: NormalizeOptions) -> EventsApiPoller | None:
    """The poller when ``WORKOS_API_KEY`` is set and ``WORKOS_POLL_INTERVAL`` is not 0."""
    settings = ApiSettings.from_env(env)
    interval = duration(env, "WORKOS_POLL_INTERVAL", "60s")
    lookback = duration(env, "WORKOS_POLL_LOOKBACK", "1h")
    if settings is None or interval == 0:
        return None
    last_logged: dict[str, float] = {}

    def on_wait(reason: str, seconds: float) -> None:
        # One line per reason per minute: a long 5xx spell must not flood the logs.
        now = time.monotonic()
        if now - last_logged.get(reason, -60.0) >= 60.0:
            last_logged[reason] = now
            logger.warning("Events API request will be retried", extra={"reason": reason, "in_s": seconds})

    client = EventsApiClient(
        settings.url, settings.api_key, on_wait=on_wait, max_retry_after_s=max_retry_after(env)
    )
    sync = EventsSync(
        client,
        journal,
        options,
        key=POLL_STATE_KEY,
        types=settings.types,
        organization_id=settings.organization_id,
        start_ms=round((time.time() - lookback) * 1000),
    )
    return EventsApiPoller(client, sync, interval_s=interval)
