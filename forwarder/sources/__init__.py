"""Sources that run in the background of ``serve`` (the webhook endpoint is mounted directly).

A source module exposes ``create(env, journal, options) -> Source | None`` and is registered
in the ``workos_forwarder.sources`` entry-point group; ``None`` means "not configured".
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from forwarder.journal import Journal
    from forwarder.normalize import NormalizeOptions

ENTRY_POINT_GROUP = "workos_forwarder.sources"


class Source(Protocol):
    name: str

    async def run(self) -> None:
        """Run until cancelled; handle transient errors inside, never end on them."""
        ...

    def status(self) -> dict[str, Any]:
        """What ``/status`` shows for this source."""
        ...


def load_sources(env: Mapping[str, str], journal: Journal, options: NormalizeOptions) -> list[Source]:
    sources: list[Source] = []
    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        source = entry_point.load()(env, journal, options)
        if source is not None:
            sources.append(source)
    return sources
