"""Where a client IP is: ``network.client.geoip`` from a MaxMind City or Country database.

Detections that compare locations (impossible travel, a new country) need the location in the
record itself, and a Prometheus or JSON-lines user has no pipeline to add it later. The
attributes carry the names Datadog's GeoIP parser writes (``country.iso_code``, ``city.name``,
...), so a facet, monitor or dashboard works the same whichever of the two added them.

The database is read with MaxMind's own reader (``maxminddb``, its C extension when built)
through a memory map. A lookup runs for every record with an IP before the webhook is
acknowledged, so answers are cached by IP: sign-in bursts repeat the same few addresses. The
reader is MaxMind's C extension when it is built (``MODE_AUTO``), its pure-Python decoder otherwise
(about eight times slower per new address).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import maxminddb

CACHE_SIZE = 4096
"""IPs whose answers are kept: about 1.5 KB each (the decoded names), so at most about 6 MB when
a flood of distinct addresses fills it. A hit costs about 0.2 us; a miss, the reader's lookup
and decoding, about 30 us (tests/data's City database, one core of the build machine)."""

_LOCATED_TYPES = ("City", "Country", "Enterprise")
"""Database types (``GeoLite2-City``, ``GeoIP2-Country``, ``GeoIP2-Enterprise``, ...) whose
records have the country and, for City and Enterprise, the city and coordinates."""


class GeoIPError(ValueError):
    """The database cannot be used; the message says why and what to do."""


class GeoIP:
    """An open MaxMind database answering ``lookup(ip)`` with Datadog's GeoIP attributes.

    The answer is shared between the records of one IP (it comes from the cache): treat it
    as read-only. The journal encodes the record at once, and redaction copies it.
    """

    __slots__ = ("_reader", "database_type", "lookup", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        if not Path(path).is_file():
            raise GeoIPError(
                f"{path!r} is not a file; download a MaxMind GeoLite2/GeoIP2 City or Country "
                "database (.mmdb) and give its path, or unset the variable"
            )
        try:
            reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoIPError(f"{path!r} is not a MaxMind database ({exc}); give a .mmdb file") from None
        database_type = str(reader.metadata().database_type)
        if not any(kind in database_type for kind in _LOCATED_TYPES):
            reader.close()
            raise GeoIPError(
                f"{path!r} is a {database_type} database, which has no locations; "
                "use a City or Country database (GeoLite2-City, GeoIP2-City, GeoLite2-Country, ...)"
            )
        self._reader = reader
        self.database_type = database_type
        self.lookup = lru_cache(maxsize=CACHE_SIZE)(self._lookup)

    def __repr__(self) -> str:
        return f"GeoIP({self.path!r}, {self.database_type})"

    def close(self) -> None:
        self._reader.close()

    def _lookup(self, ip: str) -> dict[str, Any] | None:
        """The attributes for ``ip``; None when it is not an address or the database has no entry
        (private and reserved ranges, or an IPv6 address in an IPv4-only database)."""
        try:
            found = self._reader.get(ip)
        except ValueError:
            return None
        return datadog_attributes(found) if isinstance(found, dict) else None


def datadog_attributes(found: dict[str, Any]) -> dict[str, Any] | None:
    """A MaxMind City or Country record under Datadog's GeoIP parser names, English names;
    only what the record has (a Country database has no city, subdivision or location)."""
    out: dict[str, Any] = {}
    country = found.get("country") or found.get("registered_country")
    if isinstance(country, dict):
        _put(out, "country", iso_code=country.get("iso_code"), name=_english(country))
    continent = found.get("continent")
    if isinstance(continent, dict):
        _put(out, "continent", code=continent.get("code"), name=_english(continent))
    subdivisions = found.get("subdivisions")
    if isinstance(subdivisions, list) and subdivisions and isinstance(subdivisions[0], dict):
        first = subdivisions[0]  # the largest one, as Datadog's parser reports
        _put(out, "subdivision", iso_code=first.get("iso_code"), name=_english(first))
    city = found.get("city")
    if isinstance(city, dict):
        _put(out, "city", name=_english(city))
    location = found.get("location")
    if isinstance(location, dict):
        _put(out, "location", latitude=location.get("latitude"), longitude=location.get("longitude"))
    return out or None


def _english(named: dict[str, Any]) -> Any:
    names = named.get("names")
    return names.get("en") if isinstance(names, dict) else None


def _put(out: dict[str, Any], key: str, **values: Any) -> None:
    present = {name: value for name, value in values.items() if value is not None}
    if present:
        out[key] = present
