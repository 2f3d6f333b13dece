"""Walking the Events API list into the journal: the cursor and sweep state machine.

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

Where to ask next (``next_request``) and how a page moves the state (``advance``) are plain
functions of the state; ``EventsSync`` adds the API calls (through ``PageFetcher``, which a
test can serve from memory) and the journal.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from forwarder import catalog, metrics
from forwarder.journal import Journal
from forwarder.normalize import MAX_TEXT_CHARS, InvalidEvent, NormalizeOptions, journal_record
from forwarder.records import NewRecord
from forwarder.sources.events_api_client import ApiRejected, Page, iso_ms

# The poller's logger: the sync's lines are the poller's and backfill's, under one name.
logger = logging.getLogger("forwarder.events_api")

_REPORTED_MAX = 10_000
"""Skipped events remembered so that each is logged and counted once (sweeps fetch some again)."""


class PageFetcher(Protocol):
    """What the sync needs from the API: one page of the list per call (``EventsApiClient``).

    Raises ``ApiRejected`` when the API refuses the request.
    """

    async def list_events(
        self,
        *,
        types: Sequence[str],
        after: str | None,
        range_start: str | None,
        range_end: str | None,
        organization_id: str | None,
    ) -> Page: ...


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
    """Events on the page, skipped ones included."""
    new: int
    known: int
    skipped: int
    """Events of the page skipped for the first time (logged with their reason, counted)."""
    newest: str | None
    done: bool


@dataclass(frozen=True, slots=True)
class Skipped:
    """An event of a page that is not stored: the others of its page are, and the walk goes on.

    ``reason`` is the metric's label: ``undecodable`` (its JSON cannot be decoded, e.g. nested
    past the decoder's 1,024 levels) or ``invalid`` (decoded, but normalization refuses it).
    ``mark`` is its place in the list when its id and time can be read, so the cursor moves
    past it instead of asking for it again at every poll.
    """

    key: str
    event_id: str | None
    mark: Mark | None
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Request:
    """Where the next page is asked from: forward from ``forward`` (the cursor), or a sweep
    (``forward`` None) from ``range_start``, resumed at ``after``."""

    forward: Mark | None
    after: str | None
    range_start: str | None


def next_request(state: WalkState, start_ms: int, *, forward_refused: bool) -> Request:
    """Walk forward from the cursor only where that is known to work (an oldest-first list),
    otherwise sweep; a sweep that is due starts here (in ``state``), from the cursor's time, or
    ``start_ms`` without a cursor."""
    cursor = state.cursor
    if cursor is not None and state.sweep_from is None and state.order == "asc" and not forward_refused:
        return Request(forward=cursor, after=cursor.id, range_start=None)
    if state.sweep_from is None:
        state.sweep_from = cursor.ms - 1 if cursor else start_ms
        state.sweep_after = state.sweep_top = None
    return Request(forward=None, after=state.sweep_after, range_start=iso_ms(state.sweep_from))


def advance(state: WalkState, request: Request, page: Page, newest: Mark | None, seen: str | None) -> bool:
    """Move ``state`` past ``page`` (asked as ``request``; ``newest`` its newest event, ``seen``
    the order it came in). True when the list has nothing more now."""
    forward = request.forward
    done = page.after is None or not page.events
    if forward is not None:
        if seen == "desc" or (newest is not None and newest < forward):
            # Newest-first: ``after`` walks back in time. Keep what came (the journal dedupes),
            # leave the cursor, and sweep from it on the next round.
            state.order = "desc"
            return False
        if newest is not None and newest > forward:
            state.cursor = newest
        elif newest is None and page.after is not None:
            # Nothing usable in the page (invalid events): step past it by the server's token.
            state.cursor = Mark(forward.ms, page.after)
        return done
    if seen is not None:
        state.order = seen
    if newest is not None and (state.sweep_top is None or newest > state.sweep_top):
        state.sweep_top = newest
    if done:
        top = state.sweep_top
        if top is not None and (state.cursor is None or top > state.cursor):
            state.cursor = top
        state.sweep_from = state.sweep_after = state.sweep_top = None
    else:
        state.sweep_after = page.after
    return done


class EventsSync:
    """Walks the API list for one query into the journal, its position kept under ``key``.

    ``start_ms`` is where a walk begins when the state has no cursor; ``end_ms`` bounds it
    (``range_end``). Both the poller and ``backfill`` use it, each with its own key. ``once``
    (backfill): the state is marked done at the end, and a walk over a done state starts over.
    """

    def __init__(
        self,
        client: PageFetcher,
        journal: Journal,
        options: NormalizeOptions,
        *,
        key: str,
        types: Sequence[str],
        organization_id: str | None,
        start_ms: int,
        end_ms: int | None = None,
        once: bool = False,
        follow_new_types: bool = False,
    ) -> None:
        """``follow_new_types``: also ask for the types outside the catalog that arrived since
        start (``catalog.UNKNOWN_TYPES``); for a poller that asks for every known type."""
        self._client = client
        self._journal = journal
        self._options = options
        self.key = key
        self._types = tuple(types)
        self._organization_id = organization_id
        self._start_ms = start_ms
        self._end = iso_ms(end_ms) if end_ms is not None else None
        self._once = once
        self._follow_new_types = follow_new_types
        # The added types stay out of the digest: a wider list still holds the cursor's event.
        self.query = query_digest(self._types, organization_id)
        self.state = WalkState(query=self.query)
        self._reported: dict[str, None] = {}

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
            request = next_request(state, self._start_ms, forward_refused=forward_refused)
            new_types = tuple(
                t for t in catalog.UNKNOWN_TYPES.pollable() if self._follow_new_types and t not in self._types
            )
            try:
                page = await self._client.list_events(
                    types=self._types + new_types,
                    after=request.after,
                    range_start=request.range_start,
                    range_end=self._end,
                    organization_id=self._organization_id,
                )
            except ApiRejected as exc:
                if new_types and exc.status in (400, 422):
                    # A type WorkOS sent by webhook that its Events API refuses must not stop polling.
                    self._follow_new_types = False
                    logger.warning(
                        "Events API refused the request with types outside the catalog; polling "
                        "the known types only",
                        extra={"types": ",".join(new_types), "error": str(exc)},
                    )
                    continue
                # The cursor event may have aged out of the API's retention: sweep from its time.
                if request.forward is not None and exc.status in (400, 404, 422):
                    forward_refused = True
                    continue
                raise
            marked, records, received, skipped = self._prepare(page)
            newest = max(marked) if marked else None
            done = advance(state, request, page, newest, _order(received))
            state.done = done and self._once
            first_seen = self._report(skipped)
            yield await self._store(page, records, state, first_seen, newest, done=done)
            if done:
                return

    def _prepare(
        self, page: Page
    ) -> tuple[list[Mark], list[NewRecord], list[tuple[int, str]], list[Skipped]]:
        """Normalize a page and sort it by creation time, then id (never trusting the API's order).

        The marks include those of skipped events, so the position moves past them too.
        """
        rows: list[tuple[tuple[int, str], NewRecord]] = []
        skipped = [
            Skipped(
                key=bad.event_id or bad.digest,
                event_id=bad.event_id,
                mark=_mark(bad.event_id, bad.created_at),
                reason="undecodable",
                detail=bad.reason,
            )
            for bad in page.undecodable
        ]
        for event in page.events:
            try:
                record = journal_record(event, self._options, delivery="api")
            except InvalidEvent as exc:
                skipped.append(_invalid(event, str(exc)))
                continue
            created = record.created_at
            rows.append(((round(created * 1000) if created is not None else 0, record.event_id), record))
        received = [key for key, _ in rows]
        rows.sort(key=lambda row: row[0])
        marks = [Mark(ms, event_id) for (ms, event_id), _ in rows if ms > 0]
        marks += [skip.mark for skip in skipped if skip.mark is not None]
        return marks, [record for _, record in rows], received, skipped

    def _report(self, skipped: list[Skipped]) -> int:
        """Log and count each skipped event the first time this walk meets it; how many were new."""
        first_seen = 0
        for skip in skipped:
            if skip.key in self._reported:
                continue
            self._reported[skip.key] = None
            if len(self._reported) > _REPORTED_MAX:
                del self._reported[next(iter(self._reported))]
            first_seen += 1
            metrics.EVENTS_API_SKIPPED.labels(skip.reason).inc()
            # The id and reason in the message too: backfill's terminal shows messages, not extras.
            logger.error(
                "Events API event %s skipped, the rest of its page is stored: %s",
                _shown(skip.event_id),
                skip.detail,
                extra={"event_id": skip.event_id, "reason": skip.reason, "error": skip.detail},
            )
        return first_seen

    async def _store(
        self,
        page: Page,
        records: list[NewRecord],
        state: WalkState,
        skipped: int,
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
                if record.event_type not in catalog.KNOWN_EVENT_TYPES:
                    metrics.UNCATALOGUED_EVENTS.inc()
                    catalog.UNKNOWN_TYPES.stored(record.event_type)
        if new:
            metrics.RECONCILED_EVENTS.labels("api_only").inc(new)
        return PageResult(
            fetched=len(page.events) + len(page.undecodable),
            new=new,
            known=len(records) - new,
            skipped=skipped,
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


def _invalid(event: Any, detail: str) -> Skipped:
    """A decoded event that normalization refused; told apart by its id, else by the reason."""
    fields = event if isinstance(event, dict) else {}
    event_id = fields.get("id")
    created_at = fields.get("created_at")
    event_id = event_id if isinstance(event_id, str) else None
    return Skipped(
        key=event_id or detail,
        event_id=event_id,
        mark=_mark(event_id, created_at if isinstance(created_at, str) else None),
        reason="invalid",
        detail=detail,
    )


def _shown(event_id: str | None) -> str:
    """The id for a log line: escaped unless it is a printable WorkOS-sized id."""
    if event_id is None:
        return "without a readable id"
    if len(event_id) <= MAX_TEXT_CHARS and event_id.isprintable():
        return event_id
    return ascii(event_id[:MAX_TEXT_CHARS])


def _mark(event_id: str | None, created_at: str | None) -> Mark | None:
    """The place of a skipped event, when its id could be a cursor (``after=<id>``) and its time reads."""
    if not event_id or not created_at or len(event_id) > MAX_TEXT_CHARS or not event_id.isprintable():
        return None
    try:
        created = datetime.fromisoformat(created_at)
    except ValueError:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    try:
        ms = round(created.timestamp() * 1000)
    except (OverflowError, ValueError):
        return None
    return Mark(ms, event_id) if ms > 0 else None
