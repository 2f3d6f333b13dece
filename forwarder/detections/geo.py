"""The two built-in rules Sigma cannot express: impossible travel and a new country.

Both read the location GeoIP enrichment writes on a record (``network.client.geoip``,
Datadog's names) and do nothing for records without it. Like the correlation windows,
their state changes only with the events added, in order, never with the clock.

- ``workos_impossible_travel``: two successful sign-ins of one user whose locations are
  more than 500 km apart, at more than 1,000 km/h (Datadog's method). Each sign-in is
  compared with the user's sign-ins just before and just after it in event time; 24 hours
  of them are kept, since no two places on Earth are more than 20,000 km apart, so an
  older pair can never be faster than 1,000 km/h.
- ``workos_new_country``: a successful sign-in from a country in which the user (or, when
  records carry ``workos.organization_id``, the organization) had no sign-in in the 7 days
  before it, while they did sign in elsewhere in those days. A user or organization seen
  for the first time is learned, not reported.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from forwarder.detections.windows import Attacks

TRAVEL_MIN_KM = 500.0
TRAVEL_MIN_KMH = 1000.0
TRAVEL_LOOKBACK_S = 86400.0
NEW_COUNTRY_LOOKBACK_S = 7 * 86400.0
MAX_SIGN_INS = 50
"""Sign-ins (travel) or countries (new country) kept per user or organization."""

_EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True, slots=True)
class Place:
    """Where and when one successful sign-in happened."""

    time: float
    event_id: str
    latitude: float | None
    longitude: float | None
    country: str | None
    city: str | None

    def describe(self) -> dict[str, Any]:
        where: dict[str, Any] = {"time": self.time, "event_id": self.event_id}
        if self.country:
            where["country"] = self.country
        if self.city:
            where["city"] = self.city
        if self.latitude is not None and self.longitude is not None:
            where["latitude"], where["longitude"] = self.latitude, self.longitude
        return where


def place_of(record: dict[str, Any], time: float, event_id: str) -> Place | None:
    """The sign-in's place from ``network.client.geoip``, or None when the record has none."""
    network = record.get("network")
    client = network.get("client") if isinstance(network, dict) else None
    geoip = client.get("geoip") if isinstance(client, dict) else None
    if not isinstance(geoip, dict):
        return None
    location = geoip.get("location")
    latitude = longitude = None
    if isinstance(location, dict):
        latitude, longitude = _coordinate(location.get("latitude")), _coordinate(location.get("longitude"))
        if latitude is None or longitude is None:
            latitude = longitude = None
    country = geoip.get("country")
    iso = country.get("iso_code") if isinstance(country, dict) else None
    city = geoip.get("city")
    name = city.get("name") if isinstance(city, dict) else None
    iso = iso.upper() if isinstance(iso, str) and iso else None
    name = name if isinstance(name, str) and name else None
    if latitude is None and iso is None:
        return None
    return Place(time, event_id, latitude, longitude, iso, name)


def _coordinate(value: Any) -> float | None:
    if type(value) in (int, float) and math.isfinite(value):
        return float(value)
    return None


def distance_km(a: Place, b: Place) -> float:
    """Great-circle (haversine) distance; both places have coordinates."""
    assert a.latitude is not None and a.longitude is not None
    assert b.latitude is not None and b.longitude is not None
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat = lat2 - lat1
    dlon = math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class Travel:
    """Two sign-ins too far apart for the time between them."""

    before: Place
    after: Place
    km: float
    kmh: float | None
    """None when both happened at the same instant."""


class TravelGroup:
    """One user's recent located sign-ins, by time."""

    __slots__ = ("attacks", "places")

    def __init__(self) -> None:
        self.places: list[Place] = []
        self.attacks = Attacks()

    def __len__(self) -> int:
        return len(self.places)

    def add(self, place: Place) -> list[Travel]:
        if place.latitude is None:
            return []
        keys = [(p.time, p.event_id) for p in self.places]
        index = bisect_left(keys, (place.time, place.event_id))
        if index < len(keys) and keys[index] == (place.time, place.event_id):
            return []
        self.places.insert(index, place)
        found = []
        for before, after in ((index - 1, index), (index, index + 1)):
            if before >= 0 and after < len(self.places):
                travel = _travel(self.places[before], self.places[after])
                if travel is not None:
                    found.append(travel)
        return found

    def forget_before(self, horizon: float) -> int:
        keep = [p for p in self.places if p.time >= horizon][-MAX_SIGN_INS:]
        dropped = len(self.places) - len(keep)
        self.places = keep
        return dropped

    def shed_oldest(self, keep: int) -> int:
        extra = len(self.places) - keep
        if extra > 0:
            del self.places[:extra]
        return max(extra, 0)

    def dump(self) -> dict[str, Any]:
        return {
            "p": [[p.time, p.event_id, p.latitude, p.longitude, p.country, p.city] for p in self.places],
            "a": self.attacks.spans,
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> TravelGroup:
        group = cls()
        group.places = [Place(*item) for item in data["p"]]
        group.attacks = Attacks(data["a"])
        return group


def _travel(before: Place, after: Place) -> Travel | None:
    km = distance_km(before, after)
    if km <= TRAVEL_MIN_KM:
        return None
    hours = (after.time - before.time) / 3600.0
    kmh = km / hours if hours > 0 else None
    if kmh is not None and kmh <= TRAVEL_MIN_KMH:
        return None
    return Travel(before, after, round(km, 1), round(kmh, 1) if kmh is not None else None)


class CountryGroup:
    """The countries one user (or organization) signed in from: first and last time seen."""

    __slots__ = ("countries",)

    def __init__(self) -> None:
        self.countries: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self.countries)

    def add(self, place: Place) -> bool:
        """Record the sign-in; True when its country is new for the 7 days before it."""
        country = place.country
        if country is None:
            return False
        since, time = place.time - NEW_COUNTRY_LOOKBACK_S, place.time
        # Any sign-in in the 7 days before counts as history. The country is known when it
        # was seen within 7 days either side: a later sign-in from it that arrived first
        # (out of order) was reported already, or was known itself.
        history = any(first < time and last >= since for first, last in self.countries.values())
        seen = self.countries.get(country)
        lookback = NEW_COUNTRY_LOOKBACK_S
        known = seen is not None and seen[0] - lookback <= time <= seen[1] + lookback
        if seen is None:
            self.countries[country] = [time, time]
        else:
            seen[0], seen[1] = min(seen[0], time), max(seen[1], time)
        if len(self.countries) > MAX_SIGN_INS:
            oldest = min(self.countries, key=lambda c: (self.countries[c][1], c))
            del self.countries[oldest]
        return history and not known

    def forget_before(self, horizon: float) -> int:
        stale = [country for country, (_, last) in self.countries.items() if last < horizon]
        for country in stale:
            del self.countries[country]
        return len(stale)

    def shed_oldest(self, keep: int) -> int:
        return 0

    def dump(self) -> dict[str, Any]:
        return {"c": self.countries}

    @classmethod
    def load(cls, data: dict[str, Any]) -> CountryGroup:
        group = cls()
        group.countries = {str(c): [float(a), float(b)] for c, (a, b) in data["c"].items()}
        return group
