"""The Datadog request builder: each stored record as a log the intake keeps, as it is.

Datadog's intake accepts and then silently drops what it does not keep: a log dated more
than 18 h ago or more than about 2 h ahead, or one over 1 MB (cut blindly). A record that
would meet one of those is rewritten here so what arrives is valid, searchable JSON:

* dated outside the window: restamped to now by default (``DD_BACKFILL_POLICY``), its
  original time kept in ``workos.created_at`` and tagged ``backfill:true``;
* over 1 MB: the message, then ``workos.data``/``workos.context`` cut, ``workos.truncated``;
* nested deeper than orjson can encode (255 levels): its deepest values replaced by a
  marker and flagged ``workos.truncated: true``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

MAX_LOG_BYTES = 1_000_000
# Datadog drops dates more than 18 h old. Restamp a little earlier so a record that is
# almost 18 h old is not dropped while it is in flight or waiting for a retry.
MAX_AGE_S = 18 * 3600
# ... and dates more than about 2 h ahead.
MAX_FUTURE_S = 2 * 3600
RESTAMP_MARGIN_S = 10 * 60
# orjson encodes at most 255 nested levels (it raises past that). A rewritten record keeps
# this many, so what the sink builds always encodes, wherever the intake re-encodes it too.
MAX_NESTING = 200
NESTING_MARK = "[nested too deep]"
TRUNCATION_MARK = " [truncated]"


def outside_window(record_time: float, now: float) -> bool:
    """Dated where the intake would drop it: too old, or too far ahead (with a safety margin)."""
    return (
        now - record_time > MAX_AGE_S - RESTAMP_MARGIN_S
        or record_time - now > MAX_FUTURE_S - RESTAMP_MARGIN_S
    )


def maybe_too_deep(body: bytes) -> bool:
    """Cheap pre-check: a record nested MAX_NESTING deep holds at least that many brackets.

    Only the rare record with that many objects or arrays is decoded and re-encoded to find
    out. The brackets are counted as the bytes that deleting them takes off: CPython deletes
    one byte value by jumping between its occurrences with ``memchr`` (vectorised), where
    ``bytes.count`` of one byte compares every byte in turn. On the benchmark's 1.5 KB
    records that is about 6,000 instructions instead of 18,000 (callgrind, CPython 3.11).
    """
    return len(body) - len(body.replace(b"{", b"").replace(b"[", b"")) > MAX_NESTING


def rewrite(body: bytes, restamp_at: float | None) -> bytes:
    """The stored record, restamped to ``restamp_at`` if given, cut to nesting and size limits.

    Raises ValueError (orjson.JSONDecodeError) when the stored bytes do not decode (deeper
    than orjson's 1024-level read limit, or not a JSON object): that record cannot be posted.
    """
    record = orjson.loads(body)
    if not isinstance(record, dict):
        raise ValueError(f"the stored record is a JSON {type(record).__name__}, not an object")
    if restamp_at is not None:
        record = _restamp(record, restamp_at)
    try:
        encoded = _fit(record)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: keep what can be written
        record = _limit_nesting(record, MAX_NESTING)
        record["workos"] = {**(record.get("workos") or {}), "truncated": True}
        return _fit(record)
    if restamp_at is None and len(body) <= MAX_LOG_BYTES:
        return body  # it only looked deep: post exactly what was stored
    return encoded


def _limit_nesting(value: Any, levels: int) -> Any:
    """A copy of ``value`` whose containers deeper than ``levels`` become ``NESTING_MARK``.

    Recursion is bounded by ``levels`` (< Python's limit), whatever the input's depth.
    """
    if isinstance(value, dict):
        if levels <= 0:
            return NESTING_MARK
        return {key: _limit_nesting(item, levels - 1) for key, item in value.items()}
    if isinstance(value, list):
        if levels <= 0:
            return NESTING_MARK
        return [_limit_nesting(item, levels - 1) for item in value]
    return value


def _restamp(record: dict[str, Any], now: float) -> dict[str, Any]:
    """The record dated now, its original date kept in ``workos.created_at``, tagged ``backfill:true``."""
    workos = dict(record.get("workos") or {})
    workos.setdefault("created_at", record.get("date"))
    tags = record.get("ddtags") or ""
    return {
        **record,
        "date": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "ddtags": f"{tags},backfill:true" if tags else "backfill:true",
        "workos": workos,
    }


def _fit(record: dict[str, Any]) -> bytes:
    """The record's JSON, shortened on purpose when it is over Datadog's 1 MB per log.

    The largest of ``message``, ``workos.data`` and ``workos.context`` is cut first (an
    object becomes its JSON text, cut), so a huge payload never costs the readable message.
    """
    encoded = orjson.dumps(record)
    if len(encoded) <= MAX_LOG_BYTES:
        return encoded
    workos = {**(record.get("workos") or {}), "truncated": True}
    shortened: dict[str, Any] = {**record, "workos": workos}
    slots = ((shortened, "message"), (workos, "data"), (workos, "context"))
    while (excess := len(encoded := orjson.dumps(shortened)) - MAX_LOG_BYTES) > 0:
        candidates = [
            (len(orjson.dumps(container[key])), container, key)
            for container, key in slots
            if container.get(key) is not None and container[key] != TRUNCATION_MARK
        ]
        if sum(size for size, _, _ in candidates) <= excess:
            return _minimal(record)  # the bulk is elsewhere (a huge actor or error text)
        _, container, key = max(candidates, key=lambda candidate: candidate[0])
        # Each character removed removes at least one byte, so one cut is enough for a
        # string; an object turned into a string escapes its quotes and may need a second.
        value = container[key]
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        container[key] = text[: max(len(text) - excess - len(TRUNCATION_MARK), 0)] + TRUNCATION_MARK
    return encoded


def _minimal(record: dict[str, Any]) -> bytes:
    """For pathological records (a huge actor, thousands of keys): what identifies the event."""
    minimal: dict[str, Any] = {
        key: record[key]
        for key in ("ddsource", "service", "ddtags", "status", "date", "evt")
        if key in record
    }
    minimal["message"] = str(record.get("message", ""))[: MAX_LOG_BYTES // 8]  # <= 4 bytes a character
    workos = record.get("workos") or {}
    minimal["workos"] = {
        key: workos[key] for key in ("id", "event", "category", "created_at") if key in workos
    }
    minimal["workos"]["truncated"] = True
    return orjson.dumps(minimal)
