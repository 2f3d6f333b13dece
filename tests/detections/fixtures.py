"""The recorded attacks and near misses of tests/detections/fixtures, and ways to replay them.

Each ``<rule>.fire.json`` holds an attack the rule must fire on exactly once, each
``<rule>.quiet.json`` near misses it must never fire on (one below each threshold, the same
count spread beyond the window, an office NAT, typos then a success). A file is a list of
scenarios, each with its WorkOS events (in delivery order: some out of order) and the
firings it should cause, as ``{rule, group}``. Files of the location rules also carry
``locations``: what GeoIP enrichment adds for each address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from forwarder.normalize import NormalizeOptions, journal_record
from forwarder.records import Entry

FIXTURES = Path(__file__).parent / "fixtures"
SIGMA_RULES = (
    "workos_brute_force",
    "workos_brute_force_then_success",
    "workos_password_spraying",
    "workos_credential_stuffing",
    "workos_mfa_guessing",
)
LOCATION_RULES = ("workos_impossible_travel", "workos_new_country")

Firing = tuple[str, tuple[tuple[str, str], ...]]
"""(rule, sorted group items): what a firing is compared by."""


def load(rule: str, must: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads((FIXTURES / f"{rule}.{must}.json").read_bytes())
    return document


def files(rules: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for rule in rules:
        for must in ("fire", "quiet"):
            yield rule, must


def events(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [event for scenario in document["scenarios"] for event in scenario["events"]]


def expected(document: dict[str, Any]) -> list[Firing]:
    return sorted(
        firing_key(fire["rule"], fire["group"])
        for scenario in document["scenarios"]
        for fire in scenario["fires"]
    )


def firing_key(rule: str, group: dict[str, str]) -> Firing:
    return rule, tuple(sorted(group.items()))


def records(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The normalized records of the events, located as GeoIP enrichment would locate them."""
    locations = document.get("locations", {})
    found = []
    for event in events(document):
        record = orjson.loads(journal_record(event, NormalizeOptions(), delivery="webhook").json)
        geoip = locations.get(record.get("network", {}).get("client", {}).get("ip"))
        if geoip is not None:
            record["network"]["client"]["geoip"] = geoip
        found.append(record)
    return found


def entries(document: dict[str, Any]) -> list[Entry]:
    """The journal entries the engine reads, in delivery order."""
    found = []
    for seq, (event, record) in enumerate(zip(events(document), records(document), strict=True), start=1):
        created = journal_record(event, NormalizeOptions(), delivery="webhook").created_at
        assert created is not None
        found.append(Entry(seq, event["id"], event["event"], created, orjson.dumps(record)))
    return found
