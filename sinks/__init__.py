"""Sinks: destinations for normalized records. See ``sinks.base`` for the protocol."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points

from sinks.base import Sink

ENTRY_POINT_GROUP = "workos_forwarder.sinks"


def load_sinks(env: Mapping[str, str]) -> list[Sink]:
    """Build every registered sink that its environment enables, in name order."""
    sinks: list[Sink] = []
    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        sink = entry_point.load()(env)
        if sink is None:
            continue
        if any(existing.name == sink.name for existing in sinks):
            raise ValueError(f"two sinks are named {sink.name!r} (entry point {entry_point.value})")
        sinks.append(sink)
    return sinks
