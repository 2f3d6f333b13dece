"""One instance of every event type of the installed workos SDK, built from its own models.

The SDK's Events API union (``workos.events.models.event_schema.EventSchemaVariant``) has one
dataclass per type. ``sdk_instances()`` fills every field of each (optional ones included, so
every nested object is present), builds the SDK's own objects and serializes them with their
``to_dict``: what comes out is what the SDK would send or accept, field for field. A field
typed as a union of objects (an API key owned by an organization or by a user) is built once
per alternative. Every ``organization_id`` gets a value naming where it sits
(``org_data_group_organization_id``), so a test can tell which one a record took.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import UTC, datetime
from typing import Any, Literal

from workos.events.models.event_schema import EventSchemaVariant

_MOMENT = datetime(2026, 11, 26, 23, 31, 0, 123000, tzinfo=UTC)


def organization_marker(path: str) -> str:
    """The value given to the ``organization_id`` at ``path`` (``data.group.organization_id``)."""
    return "org_" + path.strip(".").replace(".", "_").replace("[]", "")


def _value(hint: Any, path: str, name: str, variant: int) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return typing.get_args(hint)[0]
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        objects = [arg for arg in options if dataclasses.is_dataclass(arg)]
        if objects:
            return _value(objects[variant % len(objects)], path, name, variant)
        if str in options:
            return _value(str, path, name, variant)
        return _value(options[0], path, name, variant)
    if origin is list:
        return [_value(typing.get_args(hint)[0], f"{path}[]", name, variant)]
    if origin is dict or hint is dict:
        return {}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return next(iter(hint))
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        fields = {
            field.name: _value(hints[field.name], f"{path}.{field.name}", field.name, variant)
            for field in dataclasses.fields(hint)
        }
        return hint(**fields)
    if hint is str:
        if name == "organization_id":
            return organization_marker(path)
        return f"{name}_01HX{len(path):04d}"
    if hint is datetime:
        return _MOMENT
    if hint is bool:
        return True
    if hint in (int, float):
        return hint(1)
    return f"{name}_value"


def _widest_union(hint: Any, seen: set[Any]) -> int:
    """How many object alternatives the widest union under ``hint`` has (1 without one)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType, list):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        width = sum(dataclasses.is_dataclass(arg) for arg in args)
        return max([width, 1, *(_widest_union(arg, seen) for arg in args)])
    if dataclasses.is_dataclass(hint) and hint not in seen:
        seen.add(hint)
        hints = typing.get_type_hints(hint)
        return max([1, *(_widest_union(hints[field.name], seen) for field in dataclasses.fields(hint))])
    return 1


def sdk_instances() -> list[dict[str, Any]]:
    """Every type of the SDK's union, once per alternative of its widest object union."""
    instances = []
    for model in typing.get_args(EventSchemaVariant):
        if "event" not in typing.get_type_hints(model):  # EventSchemaUnknown, the fallback
            continue
        for variant in range(_widest_union(model, set())):
            built = _value(model, "", "", variant)
            event = built.to_dict()
            event["id"] = f"event_01HX{len(instances):022d}"
            model.from_dict(event)  # the SDK reads back what it wrote
            instances.append(event)
    return instances
