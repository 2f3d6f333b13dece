"""The OTLP request builder: one OpenTelemetry log record per stored WorkOS record.

The message is the body; ``status`` the severity; the service and the ``env`` tag the
resource; ``workos.*`` every attribute under its dotted key; the normalized user, client,
user agent and error fields their semantic-convention names (``SEMCONV``) and
``evt.outcome`` ``workos.outcome``; ``date`` the timestamp. Left out on purpose, because
each is a Datadog reserved attribute whose value the log already carries: ``ddsource`` (the
constant ``workos``), ``ddtags`` beyond ``env`` (its other tags repeat ``workos.event`` and
``workos.category``), ``evt.name`` (``workos.event``, and the log's event name) and
``evt.category`` (``workos.category``). A new top-level field reaches this sink only once
it is mapped here: docs/record.md lists this.

OTLP has ranges JSON does not: timestamps are uint64 nanoseconds since 1970, so a
``created_at`` before 1970 or after 2554 is clamped into [0, 2**64-1] (0 is OTLP's
"unknown": backends then use the observed time), its original kept in
``workos.created_at``; integers beyond int64 become strings; values nested deeper than
collectors decode become their JSON text, or a marker past what orjson writes (flagged
``workos.truncated``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from sinks.base import Record

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1
# Nested objects become dotted attribute keys down to MAX_KEY_DEPTH levels; below that a
# value is an OTLP kvlist/array, at most MAX_VALUE_DEPTH levels deep (each level costs a
# collector 2-3 protobuf message levels, and Python protobuf decodes only 100), then its
# JSON text. What orjson cannot write (over 255 levels) becomes NESTING_MARK.
MAX_KEY_DEPTH = 32
MAX_VALUE_DEPTH = 16
NESTING_MARK = "[nested too deep]"
SCOPE = InstrumentationScope("workos-forwarder")
SEVERITIES = {
    "error": (SeverityNumber.ERROR, "ERROR"),
    "warning": (SeverityNumber.WARN, "WARN"),
    "info": (SeverityNumber.INFO, "INFO"),
}
# Normalized (Datadog-style) attributes and their OpenTelemetry semantic-convention names.
SEMCONV = (
    (("usr", "id"), "user.id"),
    (("usr", "email"), "user.email"),
    (("usr", "name"), "user.name"),
    (("network", "client", "ip"), "client.address"),
    (("http", "useragent"), "user_agent.original"),
    (("error", "kind"), "error.type"),
    (("error", "message"), "error.message"),
)


class LogBuilder:
    """Builds logs for one sink: its service name and resource attributes, one Resource each."""

    def __init__(self, service_name: str | None, resource_attributes: Mapping[str, str]) -> None:
        self._service_name = service_name
        self._resource_attributes = dict(resource_attributes)
        self._resources: dict[tuple[str, str], Resource] = {}

    def to_log(self, stored: Record) -> ReadableLogRecord:
        """One OTLP log record; raises ValueError/TypeError when the stored JSON is unusable."""
        record = orjson.loads(stored.json)
        if not isinstance(record, dict):
            raise ValueError(f"the stored record is a JSON {type(record).__name__}, not an object")
        workos = record.get("workos") or {}
        severity, severity_text = SEVERITIES.get(str(record.get("status")), SEVERITIES["info"])
        attributes: dict[str, Any] = {}
        for path, semconv_name in SEMCONV:
            value = _dig(record, path)
            if value is not None:
                attributes[semconv_name] = _encodable(value)
        outcome = _dig(record, ("evt", "outcome"))
        if outcome is not None:
            attributes["workos.outcome"] = _encodable(outcome)
        if _flatten("workos", workos, attributes):
            attributes["workos.truncated"] = True
        timestamp, clamped = _unix_nanos(stored.time)
        if clamped:
            attributes.setdefault("workos.created_at", str(record.get("date")))
        return ReadableLogRecord(
            log_record=LogRecord(
                timestamp=timestamp,
                observed_timestamp=_unix_nanos(time.time())[0],
                severity_number=severity,
                severity_text=severity_text,
                body=_encodable(record.get("message")),
                attributes=attributes,
                event_name=str(workos.get("event") or _dig(record, ("evt", "name")) or ""),
            ),
            resource=self._resource(record),
            instrumentation_scope=SCOPE,
        )

    def _resource(self, record: dict[str, Any]) -> Resource:
        """One Resource per (service, environment): the encoder groups records by it."""
        service = self._service_name or str(record.get("service") or "workos-events")
        environment = _tag(str(record.get("ddtags") or ""), "env")
        key = (service, environment)
        if key not in self._resources:
            attributes = {"deployment.environment.name": environment} if environment else {}
            attributes.update(self._resource_attributes)
            attributes["service.name"] = service
            self._resources[key] = Resource(attributes)
        return self._resources[key]


def _dig(record: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _unix_nanos(seconds: float) -> tuple[int, bool]:
    """Epoch seconds as OTLP's uint64 nanoseconds (millisecond precision, as stored), and
    whether the value had to be clamped into [0, 2**64-1] (before 1970, after 2554; a
    non-finite time, which no journal should hold, becomes 0, OTLP's "unknown")."""
    if not math.isfinite(seconds):
        return 0, True
    nanos = round(seconds * 1000) * 1_000_000
    clamped = min(max(nanos, 0), UINT64_MAX)
    return clamped, clamped != nanos


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> bool:
    """Nested objects become dotted keys; lists and scalars stay OTLP values; nulls are left out.

    Iterative, so any depth is safe; objects below MAX_KEY_DEPTH levels stay one value
    (see ``_encodable``). Returns whether anything was cut.
    """
    truncated = False
    stack: list[tuple[str, Any, int]] = [(prefix, value, 0)]
    while stack:
        key, item, depth = stack.pop()
        if isinstance(item, Mapping) and depth < MAX_KEY_DEPTH:
            # Reversed onto the stack so the keys come out in the record's order.
            stack.extend((f"{key}.{name}", child, depth + 1) for name, child in reversed(list(item.items())))
        elif item is not None:
            cut: list[bool] = []
            into[key] = _encodable(item, cut=cut)
            truncated = truncated or bool(cut)
    return truncated


def _encodable(value: Any, levels: int = MAX_VALUE_DEPTH, *, cut: list[bool] | None = None) -> Any:
    """A JSON value as an OTLP attribute value that every collector can decode.

    JSON allows integers protobuf's int64 cannot hold (they become strings: one would fail
    every export of its batch), and nesting deeper than a collector decodes (below
    ``levels`` a container becomes its JSON text, or NESTING_MARK past orjson's limit).
    Appends to ``cut`` when it shortened anything.
    """
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        return str(value)
    if isinstance(value, list | Mapping):
        if levels <= 0:
            if cut is not None:
                cut.append(True)
            try:
                return orjson.dumps(value).decode()
            except orjson.JSONEncodeError:
                return NESTING_MARK
        if isinstance(value, list):
            return [_encodable(item, levels - 1, cut=cut) for item in value]
        return {str(key): _encodable(item, levels - 1, cut=cut) for key, item in value.items()}
    return value


def _tag(ddtags: str, name: str) -> str:
    for tag in ddtags.split(","):
        key, _, value = tag.partition(":")
        if key == name and value:
            return value
    return ""
