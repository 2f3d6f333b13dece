"""What a Datadog logs pipeline reads and writes, so the assets built on it can be checked offline.

A dashboard widget on ``@network.client.geoip.country.iso_code`` shows nothing unless the
pipeline's GeoIP parser writes that attribute, and Datadog does not say so: the widget is just
empty. The attributes each parser writes under its target are the ones Datadog documents
(GeoIP parser: continent, country, subdivision, city; user-agent parser: browser, OS, device),
so a facet under a parser's target that is not one of them is a typo.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Datadog's documented outputs, relative to the processor's ``target``.
_WRITTEN_UNDER_TARGET: dict[str, frozenset[str]] = {
    "geo-ip-parser": frozenset(
        {
            "continent.code",
            "continent.name",
            "country.iso_code",
            "country.name",
            "subdivision.iso_code",
            "subdivision.name",
            "city.name",
            # The coordinates Cloud SIEM's impossible-travel method reads (and FORWARDER_GEOIP_DB adds).
            "location.latitude",
            "location.longitude",
        }
    ),
    "user-agent-parser": frozenset(
        {
            "browser.family",
            "browser.major",
            "browser.minor",
            "browser.patch",
            "os.family",
            "os.major",
            "os.minor",
            "os.patch",
            "device.family",
            "device.category",
        }
    ),
}
_WRITES_TARGET = frozenset({"attribute-remapper", "category-processor", "string-builder-processor"})


def processors(pipeline: Any, location: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(JSON path, processor) of every processor of a pipeline document, nested ones included."""
    listed = pipeline.get("processors") if isinstance(pipeline, dict) else None
    for index, processor in enumerate(listed if isinstance(listed, list) else []):
        if not isinstance(processor, dict):
            continue
        path = f"{location}processors[{index}]"
        yield path, processor
        if processor.get("type") == "pipeline":
            yield from processors(processor, f"{path}.")


def parser_targets(pipeline: dict[str, Any]) -> dict[str, str]:
    """Target attribute -> parser type, for the GeoIP and user-agent parsers of the pipeline."""
    return {
        str(processor.get("target")): str(processor["type"])
        for _, processor in processors(pipeline)
        if processor.get("type") in _WRITTEN_UNDER_TARGET
    }


def read_attributes(pipeline: dict[str, Any]) -> set[str]:
    """Attributes the processors read (``sources``, ``source``): the records must carry them."""
    read: set[str] = set()
    for _, processor in processors(pipeline):
        sources = processor.get("sources") or []
        read.update(str(source) for source in (sources if isinstance(sources, list) else [sources]))
        if isinstance(processor.get("source"), str):
            read.add(processor["source"])
    return read


def written_attributes(pipeline: dict[str, Any]) -> set[str]:
    """Attributes the pipeline's processors write: parser outputs in full, remapper targets."""
    written: set[str] = set()
    for _, processor in processors(pipeline):
        kind, target = processor.get("type"), processor.get("target")
        if not isinstance(target, str):
            continue
        if kind in _WRITTEN_UNDER_TARGET:
            written |= {f"{target}.{leaf}" for leaf in _WRITTEN_UNDER_TARGET[kind]}
        elif kind in _WRITES_TARGET:
            written.add(target)
    return written
