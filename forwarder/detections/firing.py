"""A firing: what a detection found, as a record every sink delivers like an event.

The record has the shape of docs/record.md (``ddsource``, ``service``, ``ddtags``,
``status``, ``date``, ``message``, ``evt``), with ``evt.name: forwarder.detection``,
``evt.category: security`` and a ``detection`` object (docs/detections.md). Its id is
derived from the rule, the group and the window's start, so the journal's deduplication
by id makes a replayed evaluation (after a restart, on another replica) fire nothing new.

Group values come from stored records, which are already redacted: with hashed emails the
group shows the hash.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from forwarder.detections.rules import About
from forwarder.normalize import FORWARDER_TAG
from forwarder.records import NewRecord

FIRING_TYPE = "forwarder.detection"
LATE_AFTER_S = 3600.0
"""A firing more than this after its window's end is ``late`` (backfill, reconciliation)."""

_TAG_UNSAFE = re.compile(r"[^a-z0-9_.:/-]")
_ALERTING = ("high", "critical")
_STANDARD_ATTRIBUTES = {"usr.email": ("usr", "email"), "usr.id": ("usr", "id")}


@dataclass(frozen=True, slots=True)
class Firing:
    about: About
    group: dict[str, str]
    """Group-by field -> value (lower case, as compared); empty for an environment-wide rule."""
    start: float
    end: float
    count: int
    event_ids: tuple[str, ...]
    event_time: float
    """Event time of the event that made it fire: the record's ``date``."""
    distinct: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Rule-specific facts (impossible travel's distance and speed, the new country)."""

    @property
    def id(self) -> str:
        identity = orjson.dumps([self.about.name, self.group, self.start], option=orjson.OPT_SORT_KEYS)
        return f"detection_{hashlib.sha256(identity).hexdigest()[:32]}"


def is_late(firing: Firing, now: float) -> bool:
    """Whether ``firing`` comes more than ``LATE_AFTER_S`` after its window ended: found in a
    backlog (a first start over a retained journal, a restart after a long stop), not live."""
    return now - firing.end > LATE_AFTER_S


def firing_record(firing: Firing, *, service: str, env: str, now: float | None = None) -> NewRecord:
    """The journal record of ``firing``; ``now`` decides ``late`` (wall clock by default)."""
    now = time.time() if now is None else now
    about = firing.about
    detection: dict[str, Any] = {
        "rule": about.name,
        "title": about.title,
        "severity": about.severity,
        "group": firing.group,
        "count": firing.count,
        "window": {"start": _iso(firing.start), "end": _iso(firing.end)},
        "event_ids": list(firing.event_ids),
        "attack": list(about.attack),
        "late": is_late(firing, now),
    }
    if firing.distinct is not None:
        detection["distinct"] = firing.distinct
    detection.update(firing.details)
    group_text = ", ".join(f"{name}={value}" for name, value in firing.group.items()) or "environment-wide"
    env_tag = _TAG_UNSAFE.sub("_", env.lower())[:196] or "unknown"
    date = _iso(firing.event_time)
    record: dict[str, Any] = {
        "ddsource": "workos",
        "service": service,
        "ddtags": (
            f"source:workos,env:{env_tag},event:{FIRING_TYPE},category:security,{FORWARDER_TAG},"
            f"detection:{about.name},severity:{about.severity}"
        ),
        "status": "error" if about.severity in _ALERTING else "warning",
        "date": date,
        "message": f"{about.name}: {about.title} ({group_text}; {firing.count} events)",
        "evt": {"name": FIRING_TYPE, "category": "security", "outcome": "detected"},
        "detection": detection,
    }
    for name, value in firing.group.items():
        if name == "network.client.ip":
            record["network"] = {"client": {"ip": value}}
        elif name in _STANDARD_ATTRIBUTES:
            parent, child = _STANDARD_ATTRIBUTES[name]
            record.setdefault(parent, {})[child] = value
    record["workos"] = {"id": firing.id, "event": FIRING_TYPE, "created_at": date, "delivery": "detection"}
    return NewRecord(firing.id, FIRING_TYPE, firing.event_time, orjson.dumps(record))


def _iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)
    return f"{moment.isoformat(timespec='milliseconds')}Z"
