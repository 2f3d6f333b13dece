"""The detection engine: journal entries in, firings out, with bounded state.

``Engine.process`` takes entries in journal order. For each it finds the base rules the
record matches, feeds the correlations that use them (and the correlations that use
those), and runs the built-in location rules on located successful sign-ins. Its state is
one dictionary of groups (a correlation or built-in rule and the group's values) in
least-recently-used order, bounded in groups and in events kept: past either bound the
least recently used groups are dropped, counted in ``shed`` (the consumer turns it into a
metric and a log line). A million distinct addresses therefore cost the bound, not a
million groups.

The state is a pure function of the entries processed, so ``snapshot``/``restore`` plus
processing the same entries again give the same firings: that is what makes a restart or
a lease moving to another replica fire nothing twice (the firing ids are the same, and the
journal keeps the first).
"""

from __future__ import annotations

import zlib
from base64 import b64decode, b64encode
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson

from forwarder.detections import geo
from forwarder.detections.firing import FIRING_TYPE, Firing
from forwarder.detections.matching import value_at
from forwarder.detections.rules import About, BaseRule, Correlation, RuleSet
from forwarder.detections.windows import (
    ATTACK_MEMORY_S,
    LATENESS_S,
    Attacks,
    Check,
    CountGroup,
    SequenceGroup,
)
from forwarder.records import Entry

IMPOSSIBLE_TRAVEL = About(
    "workos_impossible_travel", "WorkOS impossible travel", "high", ("T1078",), Path(geo.__file__)
)
NEW_COUNTRY = About(
    "workos_new_country", "WorkOS sign-in from a new country", "low", ("T1078",), Path(geo.__file__)
)
BUILT_IN = (IMPOSSIBLE_TRAVEL, NEW_COUNTRY)

_SWEEP_EVERY_S = 60.0
"""Expired state is let go each time the watermark has moved this much event time."""
_SNAPSHOT_VERSION = 1
Group = CountGroup | SequenceGroup | geo.TravelGroup | geo.CountryGroup


DEFAULT_MAX_EVENTS = 100_000
DEFAULT_MAX_GROUPS = 20_000


@dataclass(frozen=True, slots=True)
class Limits:
    max_events: int = DEFAULT_MAX_EVENTS
    """Events (and sign-ins) kept in all windows together."""
    max_groups: int = DEFAULT_MAX_GROUPS
    """Groups (an account, an address...) kept over all rules together."""
    max_group_events: int = 10_000
    """Events kept in one group: past this its oldest go (the condition has long held)."""


@dataclass(slots=True)
class Shed:
    """What the bounds dropped since the last ``take``: groups evicted, events dropped."""

    groups: int = 0
    events: int = 0


@dataclass(frozen=True, slots=True)
class _Use:
    """Correlation ``correlation`` uses the rule as its ``slot``-th rule."""

    correlation: Correlation
    slot: int
    checks: tuple[Check, ...]
    value_fields: tuple[str, ...]
    fields: tuple[str, ...]
    """The group-by fields, then the counted ones: what the correlation reads of a record."""


@dataclass(slots=True)
class Engine:
    rules: RuleSet
    limits: Limits = field(default_factory=Limits)
    seq: int = 0
    """The last journal sequence number processed."""
    watermark: float = float("-inf")
    """The latest event time seen: windows before it (minus their span and lateness) are let go."""
    events: int = 0
    shed: Shed = field(default_factory=Shed)
    _groups: OrderedDict[tuple[str, tuple[str, ...]], Any] = field(default_factory=OrderedDict)
    """Every group's state, least recently used first."""
    _uses: dict[str, list[_Use]] = field(default_factory=dict)
    _type_verdicts: dict[str, tuple[BaseRule, ...]] = field(default_factory=dict)
    _sign_in_types: dict[str, bool] = field(default_factory=dict)
    """Whether records of a type are successful sign-ins (evt.* follows from the type)."""
    _by_type: bool = False
    _swept: float = float("-inf")
    """The watermark at the last sweep."""

    def __post_init__(self) -> None:
        for correlation in self.rules.correlations.values():
            checks = _checks(correlation)
            counted = correlation.value_fields
            fields = (*correlation.group_by, *counted)
            for slot, source in enumerate(correlation.sources):
                self._uses.setdefault(source, []).append(_Use(correlation, slot, checks, counted, fields))
        # Rules that read only evt.* fields depend on the event type alone (the catalog
        # derives evt.* from it): their verdict is cached per type, and a record no rule
        # can match is not even decoded.
        self._by_type = all(
            all(name.startswith("evt.") for name in rule.fields) for rule in self.rules.base.values()
        )

    @property
    def groups(self) -> int:
        return len(self._groups)

    def process(self, entries: Iterable[Entry]) -> list[Firing]:
        firings: list[Firing] = []
        for entry in entries:
            self.seq = entry.seq
            if entry.event_type != FIRING_TYPE:  # firings never feed back into detection
                firings.extend(self._process(entry))
            if self.watermark >= self._swept + _SWEEP_EVERY_S:
                self._sweep()
                self._swept = self.watermark
        return firings

    def _process(self, entry: Entry) -> list[Firing]:
        event_type = entry.event_type
        matched = self._type_verdicts.get(event_type) if self._by_type else None
        if matched == () and not self._sign_in_types.get(event_type, True):
            return []  # no rule can match a record of this type: not even decoded
        record = orjson.loads(entry.json)
        if type(record) is not dict:
            return []
        if event_type not in self._sign_in_types:
            self._sign_in_types[event_type] = _successful_sign_in(record)
        if matched is None:
            matched = tuple(rule for rule in self.rules.base.values() if rule.test(record))
            if self._by_type:
                self._type_verdicts[entry.event_type] = matched
        time, event_id = entry.time, entry.event_id
        if time > self.watermark:
            self.watermark = time
        firings: list[Firing] = []
        for rule in matched:
            if rule.standalone:
                firings.append(Firing(rule.about, {"workos.id": event_id}, time, time, 1, (event_id,), time))
            for use in self._uses.get(rule.about.name, ()):
                values = {name: _key(value_at(record, name)) for name in use.fields}
                firings.extend(self._feed(use, time, event_id, values, time))
        firings.extend(self._located(record, time, event_id))
        self._bound()
        return firings

    def _feed(
        self, use: _Use, time: float, event_id: str, values: dict[str, str | None], cause: float
    ) -> list[Firing]:
        """Add one event (or a qualifying moment of a used correlation) to ``use``'s group.

        ``cause`` is the event time of the record being processed: the firing's date.
        """
        correlation = use.correlation
        parts = tuple([values.get(name) for name in correlation.group_by])
        if None in parts:
            return []  # no value to group by: like SQL, the event belongs to no group
        group_key = cast(tuple[str, ...], parts)
        span = correlation.span_s
        if correlation.kind == "temporal_ordered":
            sequence = self._group(
                correlation.about.name, group_key, lambda: SequenceGroup(len(correlation.sources))
            )
            before = len(sequence)
            windows = sequence.add(use.slot, time, event_id, span)
            self.events += len(sequence) - before
            dropped = sequence.shed_oldest(self.limits.max_group_events)
            self.events -= dropped
            self.shed.events += dropped
            attacks = sequence.attacks
        else:
            counted = self._group(correlation.about.name, group_key, CountGroup)
            before = len(counted)
            windows = counted.add(
                time, event_id, tuple(values.get(name) for name in use.value_fields), span, use.checks
            )
            self.events += len(counted) - before
            dropped = counted.shed_oldest(self.limits.max_group_events)
            self.events -= dropped
            self.shed.events += dropped
            attacks = counted.attacks
        if not windows:
            return []
        group = dict(zip(correlation.group_by, group_key, strict=True))
        firings = []
        for window in windows:
            if attacks.starts(window.end, span):
                firings.append(
                    Firing(
                        correlation.about,
                        group,
                        window.start,
                        window.end,
                        window.count,
                        window.event_ids,
                        cause,
                        window.distinct,
                    )
                )
            for parent in self._uses.get(correlation.about.name, ()):
                firings.extend(self._feed(parent, window.end, window.anchor_id, dict(group), cause))
        return firings

    def _located(self, record: dict[str, Any], time: float, event_id: str) -> list[Firing]:
        if not _successful_sign_in(record):
            return []
        place = geo.place_of(record, time, event_id)
        if place is None:
            return []
        firings = []
        user = _user(record)
        if user is not None:
            firings.extend(self._travel(user, place, time))
            firings.extend(self._new_country(user, place, time))
        organization = value_at(record, "workos.organization_id")
        if isinstance(organization, str) and organization:
            firings.extend(self._new_country(("workos.organization_id", organization), place, time))
        return firings

    def _travel(self, user: tuple[str, str], place: geo.Place, time: float) -> list[Firing]:
        group = self._group(IMPOSSIBLE_TRAVEL.name, user, geo.TravelGroup)
        before = len(group)
        travels = group.add(place)
        self.events += len(group) - before
        firings = []
        for travel in travels:
            if group.attacks.starts(travel.after.time, geo.TRAVEL_LOOKBACK_S):
                firings.append(
                    Firing(
                        IMPOSSIBLE_TRAVEL,
                        {user[0]: user[1]},
                        travel.before.time,
                        travel.after.time,
                        2,
                        (travel.before.event_id, travel.after.event_id),
                        time,
                        details={
                            "travel": {
                                "distance_km": travel.km,
                                "speed_kmh": travel.kmh,
                                "from": travel.before.describe(),
                                "to": travel.after.describe(),
                            }
                        },
                    )
                )
        return firings

    def _new_country(self, owner: tuple[str, str], place: geo.Place, time: float) -> list[Firing]:
        group = self._group(NEW_COUNTRY.name, owner, geo.CountryGroup)
        before = len(group)
        new = group.add(place)
        self.events += len(group) - before
        if not new or place.country is None:
            return []
        return [
            Firing(
                NEW_COUNTRY,
                {owner[0]: owner[1], "network.client.geoip.country.iso_code": place.country},
                place.time - geo.NEW_COUNTRY_LOOKBACK_S,
                place.time,
                1,
                (place.event_id,),
                time,
                details={"country": place.country, **({"city": place.city} if place.city else {})},
            )
        ]

    def _group(self, rule: str, key: tuple[str, ...], make: Any) -> Any:
        """The group's state, marked most recently used (created when new)."""
        full = (rule, key)
        group = self._groups.get(full)
        if group is None:
            group = self._groups[full] = make()
        else:
            self._groups.move_to_end(full)
        return group

    def _bound(self) -> None:
        limits = self.limits
        while self._groups and (len(self._groups) > limits.max_groups or self.events > limits.max_events):
            _, group = self._groups.popitem(last=False)
            self.events -= len(group)
            self.shed.groups += 1
            self.shed.events += len(group)

    def _sweep(self) -> None:
        """Let go of what the watermark has passed: old events, old attacks, empty groups."""
        spans = {name: c.span_s for name, c in self.rules.correlations.items()}
        spans[IMPOSSIBLE_TRAVEL.name] = geo.TRAVEL_LOOKBACK_S
        spans[NEW_COUNTRY.name] = geo.NEW_COUNTRY_LOOKBACK_S
        empty = []
        for full, group in self._groups.items():
            span = spans.get(full[0])
            if span is None:  # a rule removed from the configuration
                empty.append(full)
                continue
            self.events -= group.forget_before(self.watermark - span - LATENESS_S)
            attacks: Attacks | None = getattr(group, "attacks", None)
            if attacks is not None:
                attacks.forget_before(self.watermark - span - ATTACK_MEMORY_S)
            if not len(group) and not (attacks and attacks.spans):
                empty.append(full)
        for full in empty:
            self.events -= len(self._groups.pop(full))

    def take_shed(self) -> Shed:
        shed, self.shed = self.shed, Shed()
        return shed

    # -- checkpoints ---------------------------------------------------------------------

    def snapshot(self) -> str:
        """The whole state and the sequence it stands for, as compact text for the journal."""
        groups = [
            [rule, list(key), _kind(group), group.dump()] for (rule, key), group in self._groups.items()
        ]
        document = {
            "version": _SNAPSHOT_VERSION,
            "seq": self.seq,
            "watermark": self.watermark if self.watermark != float("-inf") else None,
            "swept": self._swept if self._swept != float("-inf") else None,
            "groups": groups,
        }
        return b64encode(zlib.compress(orjson.dumps(document), 1)).decode("ascii")

    def restore(self, text: str) -> None:
        """Load a ``snapshot``; state of rules no longer configured is dropped."""
        document = orjson.loads(zlib.decompress(b64decode(text)))
        if document.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unknown detection checkpoint version {document.get('version')!r}")
        known = {*self.rules.correlations, IMPOSSIBLE_TRAVEL.name, NEW_COUNTRY.name}
        self._groups = OrderedDict()
        self.events = 0
        for rule, key, kind, data in document["groups"]:
            if rule not in known:
                continue
            group = _LOADERS[kind](data)
            self._groups[(rule, tuple(key))] = group
            self.events += len(group)
        self.seq = int(document["seq"])
        watermark = document["watermark"]
        self.watermark = float("-inf") if watermark is None else float(watermark)
        swept = document["swept"]
        self._swept = float("-inf") if swept is None else float(swept)


_LOADERS: dict[str, Any] = {
    "count": CountGroup.load,
    "sequence": SequenceGroup.load,
    "travel": geo.TravelGroup.load,
    "country": geo.CountryGroup.load,
}


def _kind(group: Any) -> str:
    if isinstance(group, CountGroup):
        return "count"
    if isinstance(group, SequenceGroup):
        return "sequence"
    if isinstance(group, geo.TravelGroup):
        return "travel"
    return "country"


def _checks(correlation: Correlation) -> tuple[Check, ...]:
    fields = correlation.value_fields
    return tuple(
        Check(threshold.at_least, None if threshold.field is None else 2 + fields.index(threshold.field))
        for threshold in correlation.thresholds
    )


def _key(value: Any) -> str | None:
    """A group or counted value as compared: text, case-insensitive (Sigma's default)."""
    if value is None or value == "" or isinstance(value, dict | list):
        return None
    return str(value).lower()


def _successful_sign_in(record: dict[str, Any]) -> bool:
    evt = record.get("evt")
    return (
        isinstance(evt, dict) and evt.get("outcome") == "success" and evt.get("category") == "authentication"
    )


def _user(record: dict[str, Any]) -> tuple[str, str] | None:
    email = _key(value_at(record, "usr.email"))
    if email is not None:
        return ("usr.email", email)
    user_id = _key(value_at(record, "usr.id"))
    return ("usr.id", user_id) if user_id is not None else None
