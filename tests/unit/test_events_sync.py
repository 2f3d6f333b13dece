"""The Events API sync against an API served from memory, into a real SQLite journal.

``FakeEventsApi`` implements the sync's ``PageFetcher`` the way the reference describes the
API (``GET /events``: ``after`` pages on from an event id in the served list, ``range_start``
and ``range_end`` bound creation times, ``list_metadata.after`` null on the last page), and it
can serve the list oldest-first (what the live API does) or newest-first (what its ``order``
parameter promises but reportedly ignores). A test reads what a user relies on: every event of
the list is in the journal once, the durable position, and how much was fetched again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder import catalog, metrics
from forwarder.catalog import KNOWN_EVENT_TYPES
from forwarder.journal import Journal
from forwarder.normalize import NormalizeOptions
from forwarder.sources.events_api_client import PAGE_LIMIT, ApiRejected, Page
from forwarder.sources.events_page import decode_page
from forwarder.sources.events_sync import EventsSync, Mark, PageResult, WalkState
from tests.doubles.workos_api import api_events, too_deep

KEY = "events_api:test"
TYPES = tuple(sorted(KNOWN_EVENT_TYPES))
START = 1_780_000_000.0  # the events' epoch seconds; walks start an hour before
START_MS = round((START - 3600) * 1000)
MAX_REQUESTS = 100  # a walk that loops fails its test instead of hanging the suite


class Crash(Exception):
    """The process dying between two pages: nothing after the last committed page survives."""


@dataclass(frozen=True, slots=True)
class Asked:
    types: tuple[str, ...]
    after: str | None
    range_start: str | None
    range_end: str | None


def _ms(event: dict[str, Any]) -> int:
    return round(datetime.fromisoformat(event["created_at"].replace("Z", "+00:00")).timestamp() * 1000)


def _parse_ms(raw: str) -> int:
    assert raw.endswith("Z"), f"the API refuses times without Z: {raw}"
    return round(datetime.fromisoformat(raw[:-1] + "+00:00").timestamp() * 1000)


class FakeEventsApi:
    """The Events API's list in memory; ``crash_at`` raises ``Crash`` on that request (1-based)."""

    def __init__(self, *, newest_first: bool = False) -> None:
        self.newest_first = newest_first
        self.events: list[dict[str, Any]] = []
        self.asked: list[Asked] = []
        self.served = 0
        self.crash_at: int | None = None
        self.refuse_unknown_types = True
        self.raw: dict[str, bytes] = {}
        """Events served as these bytes: a page holding one goes through the client's decoder."""

    def add(self, events: Sequence[dict[str, Any]]) -> None:
        self.events.extend(events)

    async def list_events(
        self,
        *,
        types: Sequence[str],
        after: str | None,
        range_start: str | None,
        range_end: str | None,
        organization_id: str | None,
    ) -> Page:
        self.asked.append(Asked(tuple(types), after, range_start, range_end))
        assert len(self.asked) <= MAX_REQUESTS, "the walk does not end"
        if len(self.asked) == self.crash_at:
            raise Crash(f"request {len(self.asked)}")
        if self.refuse_unknown_types and not KNOWN_EVENT_TYPES.issuperset(types):
            raise ApiRejected(422, "Events API answered 422 (unknown event types)")
        start = _parse_ms(range_start) if range_start else None
        end = _parse_ms(range_end) if range_end else None
        listed = sorted(
            (
                event
                for event in self.events
                if event["event"] in types
                and (start is None or _ms(event) > start)
                and (end is None or _ms(event) < end)
            ),
            key=lambda event: (_ms(event), event["id"]),
            reverse=self.newest_first,
        )
        begin = 0
        if after is not None:
            ids = [event["id"] for event in listed]
            if after not in ids:
                raise ApiRejected(400, f"Events API answered 400 (after: no event {after!r})")
            begin = ids.index(after) + 1
        page = listed[begin : begin + PAGE_LIMIT]
        more = begin + len(page) < len(listed)
        self.served += len(page)
        after = page[-1]["id"] if page and more else None
        if any(event["id"] in self.raw for event in page):
            data = [orjson.Fragment(self.raw[e["id"]]) if e["id"] in self.raw else e for e in page]
            return decode_page(
                orjson.dumps({"object": "list", "data": data, "list_metadata": {"after": after}})
            )
        return Page(events=page, after=after)


@pytest.fixture
async def open_journal(tmp_path: Path) -> AsyncIterator[Callable[[], Journal]]:
    """Opens the journal of one SQLite file, again after a "crash"; all are closed at the end."""
    opened: list[Journal] = []

    def open_one() -> Journal:
        journal = Journal(tmp_path / "journal.sqlite3")
        opened.append(journal)
        return journal

    yield open_one
    for journal in opened:
        await journal.close()


def events(count: int, *, after: float = START) -> list[dict[str, Any]]:
    return api_events(count, start=after, spacing_s=0.01)


def make_sync(api: FakeEventsApi, journal: Journal, **options: Any) -> EventsSync:
    settings: dict[str, Any] = {"key": KEY, "types": TYPES, "organization_id": None, "start_ms": START_MS}
    return EventsSync(api, journal, NormalizeOptions(), **{**settings, **options})


async def walk(sync: EventsSync) -> list[PageResult]:
    return [result async for result in sync.pages()]


def stored(journal: Journal) -> list[str]:
    return [entry.event_id for entry in journal.read_after(0, 100_000)]


def saved(journal: Journal) -> WalkState:
    raw = journal.get_state(KEY)
    assert raw is not None, "no walk state saved"
    return WalkState.loads(raw)


async def first_walk(api: FakeEventsApi, journal: Journal) -> Mark:
    """Walk the list once, then forget what was asked and served; the cursor it left."""
    await walk(make_sync(api, journal))
    cursor = saved(journal).cursor
    assert cursor is not None
    api.asked.clear()
    api.served = 0
    return cursor


def newest_mark(listed: list[dict[str, Any]]) -> Mark:
    return max(Mark(_ms(event), event["id"]) for event in listed)


ORDERS = pytest.mark.parametrize("newest_first", [False, True], ids=["oldest-first", "newest-first"])


@ORDERS
async def test_a_first_walk_stores_every_event_once_and_keeps_the_newest_as_cursor(
    open_journal: Callable[[], Journal], newest_first: bool
) -> None:
    api = FakeEventsApi(newest_first=newest_first)
    listed = events(250)
    api.add(listed)
    journal = open_journal()

    results = await walk(make_sync(api, journal))

    assert sorted(stored(journal)) == sorted(event["id"] for event in listed)
    pages = [(r.fetched, r.new, r.done) for r in results]
    assert pages == [(100, 100, False), (100, 100, False), (50, 50, True)]
    # Without a cursor the order is unknown: a sweep from the start, whatever the order.
    assert api.asked[0].range_start is not None and api.asked[0].after is None
    state = saved(journal)
    assert state.cursor == newest_mark(listed)
    assert state.order == ("desc" if newest_first else "asc")
    assert state.sweep_from is None and not state.done


async def test_an_oldest_first_list_is_then_walked_forward_from_the_cursor(
    open_journal: Callable[[], Journal],
) -> None:
    api = FakeEventsApi()
    api.add(events(30))
    journal = open_journal()
    cursor = await first_walk(api, journal)
    later = events(120, after=START + 60)
    api.add(later)

    results = await walk(make_sync(api, journal))

    assert api.asked[0] == Asked(TYPES, cursor.id, None, None)
    assert api.served == 120, "only the events after the cursor are fetched"
    assert sum(r.new for r in results) == 120
    assert saved(journal).cursor == newest_mark(later)
    assert len(stored(journal)) == 150


async def test_a_newest_first_list_is_swept_down_to_the_cursor_time(
    open_journal: Callable[[], Journal],
) -> None:
    api = FakeEventsApi(newest_first=True)
    api.add(events(30))
    journal = open_journal()
    cursor = await first_walk(api, journal)
    later = events(120, after=START + 60)
    api.add(later)

    results = await walk(make_sync(api, journal))

    # ``after`` would page back in time here: the walk sweeps from just below the cursor's time.
    assert api.asked[0].after is None and api.asked[0].range_start is not None
    assert _parse_ms(api.asked[0].range_start) == cursor.ms - 1
    assert api.served == 121, "the new events, and the cursor's own event again (at-least-once)"
    assert sum(r.new for r in results) == 120
    assert saved(journal).cursor == newest_mark(later)
    assert len(stored(journal)) == 150


async def test_a_list_that_turns_newest_first_under_a_forward_walk_loses_nothing(
    open_journal: Callable[[], Journal],
) -> None:
    api = FakeEventsApi()
    api.add(events(30))
    journal = open_journal()
    await walk(make_sync(api, journal))
    assert saved(journal).order == "asc"
    api.newest_first = True
    later = events(250, after=START + 60)
    api.add(later)

    await walk(make_sync(api, journal))

    assert len(stored(journal)) == 280
    state = saved(journal)
    assert state.order == "desc"
    assert state.cursor == newest_mark(later)


@ORDERS
async def test_a_crash_between_pages_resumes_from_the_saved_position(
    open_journal: Callable[[], Journal], newest_first: bool
) -> None:
    api = FakeEventsApi(newest_first=newest_first)
    listed = events(350)
    api.add(listed)
    api.crash_at = 3
    journal = open_journal()

    with pytest.raises(Crash):
        await walk(make_sync(api, journal))

    # Two pages are committed with their position. Mid-sweep, the cursor does not move yet:
    # a sweep's events are not contiguous from the bottom until the sweep ends.
    assert len(stored(journal)) == 200
    state = saved(journal)
    assert state.cursor is None and state.sweep_after is not None and state.sweep_top is not None
    await journal.close()

    api.crash_at = None
    api.served = 0
    restarted = open_journal()
    results = await walk(make_sync(api, restarted))

    assert api.asked[3].after == state.sweep_after, "resumed from the server's token, not the top"
    assert api.served == 150, "no page is fetched twice"
    assert sum(r.new for r in results) == 150
    assert sorted(stored(restarted)) == sorted(event["id"] for event in listed)
    assert saved(restarted).cursor == newest_mark(listed)


async def test_a_crash_during_a_forward_walk_resumes_after_the_last_stored_page(
    open_journal: Callable[[], Journal],
) -> None:
    api = FakeEventsApi()
    api.add(events(10))
    journal = open_journal()
    await walk(make_sync(api, journal))
    later = events(250, after=START + 60)
    api.add(later)
    api.crash_at = len(api.asked) + 2

    with pytest.raises(Crash):
        await walk(make_sync(api, journal))

    page_one = sorted(later, key=lambda event: (_ms(event), event["id"]))[:100]
    assert saved(journal).cursor == newest_mark(page_one), "the cursor moved with the stored page"
    await journal.close()

    api.crash_at = None
    api.served = 0
    restarted = open_journal()
    await walk(make_sync(api, restarted))

    assert api.served == 150
    assert len(stored(restarted)) == 260
    assert saved(restarted).cursor == newest_mark(later)


async def test_a_backfill_window_stops_at_range_end_and_starts_over_once_done(
    open_journal: Callable[[], Journal],
) -> None:
    api = FakeEventsApi()
    listed = events(200)
    api.add(listed)
    journal = open_journal()
    end_ms = _ms(listed[149])  # range_end is exclusive: the first 149 events are in the window

    results = await walk(make_sync(api, journal, start_ms=_ms(listed[0]) - 1, end_ms=end_ms, once=True))

    assert all(asked.range_end is not None and _parse_ms(asked.range_end) == end_ms for asked in api.asked)
    assert sorted(stored(journal)) == sorted(event["id"] for event in listed[:149])
    assert results[-1].done and saved(journal).done

    # The same window again (a second ``backfill`` run): the walk starts over, storing nothing new.
    again = await walk(make_sync(api, journal, start_ms=_ms(listed[0]) - 1, end_ms=end_ms, once=True))

    assert sum(r.fetched for r in again) == 149
    assert sum(r.new for r in again) == 0
    assert len(stored(journal)) == 149


async def test_another_filter_sweeps_from_the_old_cursor_time(open_journal: Callable[[], Journal]) -> None:
    api = FakeEventsApi()
    api.add(events(20))
    journal = open_journal()
    cursor = await first_walk(api, journal)

    await walk(make_sync(api, journal, types=TYPES[:40]))

    # An id cursor means nothing in another list; its time does.
    assert api.asked[0].after is None and api.asked[0].range_start is not None
    assert _parse_ms(api.asked[0].range_start) == cursor.ms - 1


async def test_a_refused_forward_cursor_falls_back_to_a_sweep_from_its_time(
    open_journal: Callable[[], Journal],
) -> None:
    api = FakeEventsApi()
    api.add(events(20))
    journal = open_journal()
    cursor = await first_walk(api, journal)
    api.events = [event for event in api.events if event["id"] != cursor.id]  # aged out
    later = events(30, after=START + 60)
    api.add(later)

    await walk(make_sync(api, journal))

    assert api.asked[0].after == cursor.id
    assert api.asked[1].after is None and api.asked[1].range_start is not None
    assert len(stored(journal)) == 50
    assert saved(journal).cursor == newest_mark(later)


async def test_new_types_the_api_refuses_are_dropped_and_polling_goes_on(
    open_journal: Callable[[], Journal], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    unknown = catalog.UnknownTypes()
    monkeypatch.setattr(catalog, "UNKNOWN_TYPES", unknown)  # a fresh record, not the process's
    unknown.stored("widget.assembled")
    api = FakeEventsApi()
    api.add(events(20))
    journal = open_journal()
    sync = make_sync(api, journal, follow_new_types=True)

    with caplog.at_level(logging.WARNING, logger="forwarder.events_api"):
        await walk(sync)

    assert api.asked[0].types == (*TYPES, "widget.assembled")
    assert api.asked[1].types == TYPES
    assert "types outside the catalog" in caplog.text
    assert len(stored(journal)) == 20
    api.asked.clear()
    await walk(sync)
    assert all(asked.types == TYPES for asked in api.asked), "not asked again once refused"


def skipped_count(reason: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("workos_forwarder_events_api_skipped_total", {"reason": reason})
        or 0.0
    )


@ORDERS
async def test_an_undecodable_event_is_skipped_once_and_the_walk_steps_past_it(
    open_journal: Callable[[], Journal], newest_first: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """One event on the second page nested too deep to decode, and the newest one: every other
    event is stored, each bad one is logged and counted once, and polls go on past them."""
    api = FakeEventsApi(newest_first=newest_first)
    listed = events(250)
    bad = [listed[120], listed[-1]]
    api.add(listed)
    api.raw = {event["id"]: too_deep(event) for event in bad}
    journal = open_journal()
    sync = make_sync(api, journal)
    before = skipped_count("undecodable")

    results = await walk(sync)
    later = events(5, after=START + 60)
    api.add(later)
    again = await walk(sync)

    good = [event["id"] for event in listed + later if event not in bad]
    assert sorted(stored(journal)) == sorted(good)
    assert sum(r.fetched for r in results) == 250 and sum(r.skipped for r in results) == 2
    assert sum(r.skipped for r in again) == 0
    assert skipped_count("undecodable") - before == 2
    lines = [r.getMessage() for r in caplog.records if "skipped, the rest of its page" in r.getMessage()]
    assert len(lines) == 2 and all("depth limit exceeded" in line for line in lines)
    assert {bad[0]["id"], bad[1]["id"]} == {line.split()[3] for line in lines}
    assert saved(journal).cursor == newest_mark(later)
    if not newest_first:
        # The cursor moved onto the newest (skipped) event: the next poll asked after it.
        assert any(asked.after == bad[1]["id"] for asked in api.asked)


async def test_an_event_normalization_refuses_is_skipped_and_the_cursor_moves_past_it(
    open_journal: Callable[[], Journal],
) -> None:
    api = FakeEventsApi()
    listed = events(10)
    listed[-1]["data"] = ["not", "an", "object"]
    api.add(listed)
    journal = open_journal()
    before = skipped_count("invalid")

    (result,) = await walk(make_sync(api, journal))

    assert (result.fetched, result.new, result.skipped) == (10, 9, 1)
    assert skipped_count("invalid") - before == 1
    assert saved(journal).cursor == newest_mark(listed)
