"""Datadog asset files: where they are, loading them, and checking each against datadog-api-client.

Why the offline checks go beyond deserializing with datadog-api-client: the client accepts
a bad enum value without raising (it marks the object ``_unparsed``, which propagates to the
root) and keeps unknown keys silently, so a typo such as ``renotify`` instead of
``renotify_interval`` would be sent and ignored. So every key is checked against the
attribute map of the model the client chose, and the ``_unparsed`` mark is traced down to
the field that caused it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import OpenApiException
from datadog_api_client.model_utils import (
    ModelComposed,
    ModelNormal,
    ModelSimple,
    OpenApiModel,
    UnparsedObject,
    validate_and_convert_types,
)
from datadog_api_client.v1.model.dashboard import Dashboard
from datadog_api_client.v1.model.logs_pipeline import LogsPipeline
from datadog_api_client.v1.model.monitor import Monitor
from datadog_api_client.v2.model.logs_metric_create_request import LogsMetricCreateRequest
from datadog_api_client.v2.model.security_monitoring_standard_rule_create_payload import (
    SecurityMonitoringStandardRuleCreatePayload,
)

MANAGED_TAG = "managed-by:workos-forwarder"

Kind = Literal["pipeline", "monitor", "dashboard", "log_metric", "security_rule"]
MODELS: dict[str, type[OpenApiModel]] = {
    "pipeline": LogsPipeline,
    "monitor": Monitor,
    "dashboard": Dashboard,
    "log_metric": LogsMetricCreateRequest,
    "security_rule": SecurityMonitoringStandardRuleCreatePayload,
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file, located by a JSON path such as ``options.thresholds.critical``."""

    path: Path
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.field or '<document>'}: {self.message}"


@dataclass
class Asset:
    kind: Kind
    path: Path
    document: dict[str, Any]

    @property
    def name(self) -> str:
        """What apply matches on: the name of a pipeline, monitor or Cloud SIEM rule, a dashboard's
        title, a log metric's id."""
        if self.kind in ("monitor", "pipeline", "security_rule"):
            return str(self.document.get("name", ""))
        if self.kind == "dashboard":
            return str(self.document.get("title", ""))
        return str(self.document.get("data", {}).get("id", ""))


# --- Loading -------------------------------------------------------------------------------


def default_root() -> Path:
    """The directory holding ``monitors/`` and ``dashboards/``: the current one, else the checkout."""
    cwd = Path.cwd()
    if (cwd / "monitors" / "datadog").is_dir():
        return cwd
    return Path(__file__).resolve().parents[2]  # forwarder/datadog/assets.py -> the checkout


def asset_files(root: Path) -> Iterator[tuple[Kind, Path]]:
    for path in sorted((root / "monitors" / "datadog" / "pipelines").glob("*.json")):
        yield "pipeline", path
    for path in sorted((root / "monitors" / "datadog" / "log_metrics").glob("*.json")):
        yield "log_metric", path
    for path in sorted((root / "monitors" / "datadog").glob("*.json")):
        yield "monitor", path
    for path in sorted((root / "monitors" / "datadog" / "security_rules").glob("*.json")):
        yield "security_rule", path
    for path in sorted((root / "dashboards" / "datadog").glob("*.json")):
        yield "dashboard", path


def load_assets(root: Path) -> tuple[list[Asset], list[Problem]]:
    assets: list[Asset] = []
    problems: list[Problem] = []
    for kind, path in asset_files(root):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(path, "", f"cannot read the file: {exc}"))
            continue
        except json.JSONDecodeError as exc:
            problems.append(
                Problem(path, "", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
            )
            continue
        if not isinstance(document, dict):
            problems.append(Problem(path, "", "the file must hold one JSON object"))
            continue
        assets.append(Asset(kind, path, document))
    if not assets and not problems:
        problems.append(
            Problem(root, "", "no Datadog asset found under monitors/datadog or dashboards/datadog")
        )
    return assets, problems


# --- Model checks (the two gaps of deserialize) -----------------------------------------------


def offline_client() -> ApiClient:
    return ApiClient(Configuration())


def check_model(document: dict[str, Any], model: type[OpenApiModel], path: Path) -> list[Problem]:
    """Deserialize with datadog-api-client and report type errors, bad enum values and unknown keys."""
    try:
        parsed = offline_client().deserialize(json.dumps(document), (model,), True)
    except OpenApiException as exc:
        location = _json_path(getattr(exc, "path_to_item", None) or [])
        return [Problem(path, location, str(exc).splitlines()[0])]
    problems: list[Problem] = []
    _walk(parsed, document, "", path, problems)
    if parsed._unparsed and not problems:
        problems.append(Problem(path, "", f"datadog-api-client could not parse this {model.__name__}"))
    return problems


def _walk(parsed: Any, raw: Any, location: str, path: Path, problems: list[Problem]) -> None:
    if isinstance(parsed, UnparsedObject):
        problems.append(Problem(path, location, "matches none of the shapes this field accepts"))
    elif isinstance(parsed, ModelComposed):
        chosen = parsed._composed_instances[0] if parsed._composed_instances else None
        if chosen is None or isinstance(chosen, UnparsedObject):
            # The client only says "no oneOf member matched"; parse as the member the
            # discriminator names to find the field at fault, else say what was expected.
            found = len(problems)
            _walk_candidate(type(parsed), raw, location, path, problems)
            if len(problems) == found:
                problems.append(Problem(path, location, _explain_composed(type(parsed), raw)))
        else:
            _walk(chosen, raw, location, path, problems)
    elif isinstance(parsed, ModelSimple):
        if parsed._unparsed:
            allowed = ", ".join(sorted(map(str, parsed.allowed_values)))
            problems.append(Problem(path, location, f"{raw!r} is not one of: {allowed}"))
    elif isinstance(parsed, ModelNormal) and isinstance(raw, dict):
        json_to_python = {json_name: name for name, json_name in parsed.attribute_map.items()}
        for key, value in raw.items():
            child = f"{location}.{key}" if location else key
            if key not in json_to_python:
                known = ", ".join(sorted(json_to_python))
                problems.append(
                    Problem(path, child, f"unknown key for {type(parsed).__name__} (known: {known})")
                )
                continue
            _walk(parsed._data_store.get(json_to_python[key]), value, child, path, problems)
    elif isinstance(parsed, list) and isinstance(raw, list):
        for index, (item, raw_item) in enumerate(zip(parsed, raw, strict=False)):
            _walk(item, raw_item, f"{location}[{index}]", path, problems)


_DISCRIMINATORS = ("type", "data_source")
"""Keys whose enum value tells which oneOf member a JSON object means (widgets, queries)."""


def _enum_values(member: Any, key: str) -> set[str]:
    if not isinstance(member, type):
        return set()
    values: set[str] = set()
    for candidate in getattr(member, "openapi_types", {}).get(key, ()):
        if isinstance(candidate, type) and issubclass(candidate, ModelSimple):
            values |= set(map(str, candidate.allowed_values))
    return values


def _discriminated(composed: type[ModelComposed], raw: Any) -> type[OpenApiModel] | None:
    """The only oneOf member whose ``type`` (or ``data_source``) enum holds the object's value."""
    if not isinstance(raw, dict):
        return None
    members = composed._composed_schemas.get("oneOf", ())
    for key in _DISCRIMINATORS:
        if key in raw:
            matching = [member for member in members if str(raw[key]) in _enum_values(member, key)]
            if len(matching) == 1:
                return matching[0]
    return None


def _explain_composed(composed: type[ModelComposed], raw: Any) -> str:
    members = composed._composed_schemas.get("oneOf", ())
    for key in _DISCRIMINATORS:
        allowed = sorted(set().union(*(_enum_values(member, key) for member in members)))
        if isinstance(raw, dict) and key in raw and allowed and str(raw[key]) not in allowed:
            return f"{key} {raw[key]!r} is not one of: {', '.join(allowed)}"
    return f"matches none of the shapes of {composed.__name__}"


def _walk_candidate(
    composed: type[ModelComposed], raw: Any, location: str, path: Path, problems: list[Problem]
) -> None:
    member = _discriminated(composed, raw)
    if member is None:
        return
    try:
        parsed = validate_and_convert_types(
            raw, (member,), [location] if location else [], True, True, Configuration()
        )
    except OpenApiException as exc:
        problems.append(
            Problem(path, _json_path(getattr(exc, "path_to_item", None) or []), str(exc).splitlines()[0])
        )
        return
    _walk(parsed, raw, location, path, problems)


def _json_path(items: list[Any]) -> str:
    parts: list[str] = []
    for item in items:
        if item == "received_data":
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts)
