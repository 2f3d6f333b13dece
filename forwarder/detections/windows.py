"""The window state of one correlation for one group, on event time, and its attacks.

Windows follow Sigma's sliding-window meaning, the one pySigma's SQLite backend computes:
every event of a group is an *anchor*, and its window holds the group's events whose time
is in ``[anchor - timespan, anchor]``. The condition holds at an anchor when its window
meets every threshold (``event_count``/``value_count``), or holds one event of each rule in
the rule's order, each strictly later than the one before (``temporal_ordered``).

Events arrive out of order (webhooks are retried, Events API pages come late), so adding
an event re-examines every anchor whose window it falls in, not only its own.

**Once per attack.** A group remembers its attacks: the first and last moments at which
the condition held. A qualifying moment within one timespan of an attack belongs to it;
one further away (the condition was false for at least a whole window in between)
starts a new attack, and only a new attack fires.

Everything here is a pure function of the events in the order they are added: no clock.
That is what makes a replay from a checkpoint fire the same firings, with the same ids.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass
from typing import Any

LATENESS_S = 3600.0
"""How long past its window an event is kept, so a late one can still complete it."""

ATTACK_MEMORY_S = 86400.0
"""How long an attack is remembered past its window: late events of it do not fire it again."""

MAX_EVIDENCE = 20
"""Event ids a firing carries at most."""


@dataclass(frozen=True, slots=True)
class Check:
    """One threshold, ready to measure: events in the window, or distinct values at ``position``."""

    at_least: int
    position: int | None
    """Index of the counted field in a ``CountGroup`` event tuple; None counts events."""


@dataclass(frozen=True, slots=True)
class Window:
    """A window in which the condition holds."""

    start: float
    end: float
    count: int
    distinct: int | None
    event_ids: tuple[str, ...]
    anchor_id: str
    """The event at ``end``: what a correlation that uses this one sees as its event."""


class Attacks:
    """The attacks of one group: ``[first, last]`` moments the condition held, in order."""

    __slots__ = ("spans",)

    def __init__(self, spans: list[list[float]] | None = None) -> None:
        self.spans: list[list[float]] = spans or []

    def starts(self, moment: float, span: float) -> bool:
        """Record a moment at which the condition holds; True when it starts a new attack."""
        joined = [s for s in self.spans if s[0] - span <= moment <= s[1] + span]
        if not joined:
            insort(self.spans, [moment, moment])
            return True
        first = min(moment, *(s[0] for s in joined))
        last = max(moment, *(s[1] for s in joined))
        self.spans = sorted([s for s in self.spans if s not in joined] + [[first, last]])
        return False

    def covers(self, moment: float) -> bool:
        """Whether ``moment`` lies within an attack already recorded (first to last)."""
        return any(first <= moment <= last for first, last in self.spans)

    def forget_before(self, horizon: float) -> None:
        self.spans = [s for s in self.spans if s[1] >= horizon]


class CountGroup:
    """``event_count``/``value_count`` state: the group's events, sorted by time.

    The window of the newest event (the *tail*) is kept counted as events come and go,
    value by value, so an event arriving in order costs the same however full the window
    is (a flood into an environment-wide rule holds thousands). An event arriving out of
    order has the windows it falls in counted afresh.
    """

    __slots__ = ("attacks", "events", "span", "tail", "tail_low", "times")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.events: list[tuple[Any, ...]] = []
        """``(time, event id, value of each counted field...)``, sorted like ``times``."""
        self.attacks = Attacks()
        self.span = 0.0
        self.tail: list[dict[str, int]] = []
        """Per counted field: value -> events in the tail window that carry it."""
        self.tail_low = 0
        """Index of the first event in the tail window."""

    def __len__(self) -> int:
        return len(self.times)

    def add(
        self,
        time: float,
        event_id: str,
        values: tuple[str | None, ...],
        span: float,
        checks: tuple[Check, ...],
    ) -> list[Window]:
        """Add one event; answers every window (anchor) in which the condition now holds."""
        entry = (time, event_id, *values)
        index = bisect_right(self.events, entry)
        if index and self.events[index - 1] == entry:
            return []
        if not self.events:
            self.span, self.tail, self.tail_low = span, [{} for _ in values], 0
        self.events.insert(index, entry)
        self.times.insert(index, time)
        if index < self.tail_low:
            self.tail_low += 1  # before the tail window: not counted there
        else:
            self._count(entry, 1)
        self._advance_tail()
        last = len(self.times) - 1
        if index == last:
            window = self._measure_tail(checks)  # in order: only its own window is new
            return [window] if window is not None else []
        anchors = self._uncovered(time, bisect_right(self.times, time + span))
        if not anchors or not self._may_hold(time - span, anchors[-1], checks):
            return []
        windows = []
        for anchor in anchors:
            found = self._measure_tail(checks) if anchor == self.times[last] else self.measure(anchor, checks)
            if found is not None:
                windows.append(found)
        return windows

    def _uncovered(self, time: float, high: int) -> list[float]:
        """Distinct anchor times from ``time`` up to index ``high`` outside every fired attack.

        Inside an attack whether the condition holds changes nothing; a late event in a
        flood must not recount thousands of dense windows.
        """
        low = bisect_left(self.times, time)
        pieces = [(low, high)]
        for first, last in self.attacks.spans:
            start, end = bisect_left(self.times, first), bisect_right(self.times, last)
            pieces = [
                part
                for a, b in pieces
                for part in ((a, min(b, start)), (max(a, end), b))
                if part[0] < part[1]
            ]
        return sorted({t for a, b in pieces for t in self.times[a:b]})

    def _may_hold(self, start: float, end: float, checks: tuple[Check, ...]) -> bool:
        """Whether all events in ``[start, end]`` (every window examined, together) could pass."""
        low, high = bisect_left(self.times, start), bisect_right(self.times, end)
        for check in checks:
            if check.position is None:
                if high - low < check.at_least:
                    return False
            elif len({e[check.position] for e in self.events[low:high]} - {None}) < check.at_least:
                return False
        return True

    def measure(self, anchor: float, checks: tuple[Check, ...]) -> Window | None:
        """The window ending at ``anchor`` if it meets every threshold, counted afresh."""
        low = bisect_left(self.times, anchor - self.span)
        high = bisect_right(self.times, anchor)
        distinct: int | None = None
        for number, check in enumerate(checks):
            position = check.position
            if position is None:
                measured = high - low
            else:
                inside = self.events[low:high]
                measured = len({event[position] for event in inside if event[position] is not None})
                if number == 0:
                    distinct = measured
            if measured < check.at_least:
                return None
        return self._window(low, high, anchor, distinct)

    def _measure_tail(self, checks: tuple[Check, ...]) -> Window | None:
        low, high = self.tail_low, len(self.events)
        distinct: int | None = None
        for number, check in enumerate(checks):
            position = check.position
            measured = high - low if position is None else len(self.tail[position - 2])
            if number == 0 and position is not None:
                distinct = measured
            if measured < check.at_least:
                return None
        return self._window(low, high, self.times[-1], distinct)

    def _window(self, low: int, high: int, anchor: float, distinct: int | None) -> Window:
        return Window(
            start=self.times[low],
            end=anchor,
            count=high - low,
            distinct=distinct,
            event_ids=tuple(event[1] for event in self.events[low : min(high, low + MAX_EVIDENCE)]),
            anchor_id=self.events[high - 1][1],
        )

    def _count(self, entry: tuple[Any, ...], step: int) -> None:
        for counts, value in zip(self.tail, entry[2:], strict=True):
            if value is not None:
                number = counts.get(value, 0) + step
                if number:
                    counts[value] = number
                else:
                    del counts[value]

    def _advance_tail(self) -> None:
        cut = self.times[-1] - self.span
        while self.times[self.tail_low] < cut:
            self._count(self.events[self.tail_low], -1)
            self.tail_low += 1

    def _drop_front(self, count: int) -> int:
        for index in range(self.tail_low, min(count, len(self.events))):
            self._count(self.events[index], -1)
        del self.times[:count]
        del self.events[:count]
        self.tail_low = max(self.tail_low - count, 0)
        return count

    def forget_before(self, horizon: float) -> int:
        """Drop events before ``horizon``; answers how many."""
        return self._drop_front(bisect_left(self.times, horizon))

    def shed_oldest(self, keep: int) -> int:
        return self._drop_front(max(len(self.times) - keep, 0))

    def dump(self) -> dict[str, Any]:
        return {"e": [list(event) for event in self.events], "a": self.attacks.spans, "s": self.span}

    @classmethod
    def load(cls, data: dict[str, Any]) -> CountGroup:
        group = cls()
        group.events = [tuple(event) for event in data["e"]]
        group.times = [event[0] for event in group.events]
        group.attacks = Attacks(data["a"])
        group.span = float(data["s"])
        if group.events:
            group.tail = [{} for _ in group.events[0][2:]]
            group.tail_low = bisect_left(group.times, group.times[-1] - group.span)
            for event in group.events[group.tail_low :]:
                group._count(event, 1)
        return group


class SequenceGroup:
    """``temporal_ordered`` state: per rule of the sequence, its events sorted by time."""

    __slots__ = ("attacks", "stages")

    def __init__(self, stages: int) -> None:
        self.stages: list[list[tuple[float, str]]] = [[] for _ in range(stages)]
        self.attacks = Attacks()

    def __len__(self) -> int:
        return sum(len(stage) for stage in self.stages)

    def add(self, slot: int, time: float, event_id: str, span: float) -> list[Window]:
        stage = self.stages[slot]
        entry = (time, event_id)
        index = bisect_left(stage, entry)
        if index < len(stage) and stage[index] == entry:
            return []
        stage.insert(index, entry)
        if not all(self.stages):
            return []  # a rule of the sequence has no event yet: no chain (the usual case)
        anchors = sorted(
            {
                t
                for events in self.stages
                for t, _ in events[
                    bisect_left(events, (time, "")) : bisect_right(events, (time + span, "\U0010ffff"))
                ]
            }
        )
        windows = []
        for anchor in anchors:
            if anchor != time and self.attacks.covers(anchor):
                continue  # as for counts: inside an attack already fired
            window = self._measure(anchor, span)
            if window is not None:
                windows.append(window)
        return windows

    def _measure(self, anchor: float, span: float) -> Window | None:
        """The earliest in-order chain within ``[anchor - span, anchor]`` (as SQL's MIN per stage)."""
        chain: list[tuple[float, str]] = []
        after: float | None = None
        for stage in self.stages:
            index = bisect_right(stage, (after, "\U0010ffff")) if after is not None else 0
            index = max(index, bisect_left(stage, (anchor - span, "")))
            if index >= len(stage) or stage[index][0] > anchor:
                return None
            chain.append(stage[index])
            after = stage[index][0]
        return Window(
            start=chain[0][0],
            end=anchor,
            count=len(chain),
            distinct=None,
            event_ids=tuple(event_id for _, event_id in chain),
            anchor_id=chain[-1][1],
        )

    def forget_before(self, horizon: float) -> int:
        dropped = 0
        for stage in self.stages:
            cut = bisect_left(stage, (horizon, ""))
            if cut:
                del stage[:cut]
                dropped += cut
        return dropped

    def shed_oldest(self, keep: int) -> int:
        dropped = 0
        for stage in self.stages:
            extra = len(stage) - keep // len(self.stages)
            if extra > 0:
                del stage[:extra]
                dropped += extra
        return dropped

    def dump(self) -> dict[str, Any]:
        return {"s": [[list(event) for event in stage] for stage in self.stages], "a": self.attacks.spans}

    @classmethod
    def load(cls, data: dict[str, Any]) -> SequenceGroup:
        group = cls(len(data["s"]))
        group.stages = [[(float(t), str(i)) for t, i in stage] for stage in data["s"]]
        group.attacks = Attacks(data["a"])
        return group
