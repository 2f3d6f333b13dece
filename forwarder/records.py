"""The record types every layer shares: what a source hands the journal, what a sink gets.

This module imports nothing from the project, so anything (normalization, sinks, the
configuration) can use the types without loading the journal or a storage engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Record(Protocol):
    """One journaled event, as a sink receives it.

    ``json`` is the normalized record (docs/record.md) exactly as it was stored;
    ``orjson.loads(record.json)`` gives the dict. Sinks that can work from the bytes or the
    columns do not decode: decoding a record costs more than everything else a simple sink
    does (the Datadog sink posts the stored bytes, the Prometheus sink counts by type).
    """

    @property
    def event_id(self) -> str: ...

    @property
    def event_type(self) -> str: ...

    @property
    def time(self) -> float:
        """Epoch seconds of the record's ``date``: the event's ``created_at``, or when it arrived."""
        ...

    @property
    def json(self) -> bytes: ...


# One of these, and one Entry, is made per event: not frozen, because a frozen dataclass's
# __init__ sets each field through object.__setattr__ (about four times the cost).
@dataclass(slots=True)
class NewRecord:
    """A normalized event on its way into the journal (it has no sequence number yet)."""

    event_id: str
    event_type: str
    created_at: float | None
    json: bytes


@dataclass(slots=True)
class Entry:
    """A stored record as delivery loops read it; it is the ``Record`` sinks get."""

    seq: int
    event_id: str
    event_type: str
    time: float
    """The record's ``date`` in epoch seconds: ``created_at``, or ``received_at`` without one."""
    json: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record a sink could not take, kept with the reason until a replay delivers it."""

    id: int
    sink: str
    event_id: str
    event_type: str
    reason: str
    attempts: int
    failed_at: float
    state: str
    """``dead``, or ``replay`` once an operator asked for it to be sent again."""
    record: bytes


@dataclass(frozen=True, slots=True)
class Stats:
    """The journal's size, for ``/status`` and the journal metrics."""

    events: int
    bytes: int
    head: int
    """The last sequence number handed out, whether or not retention has deleted its record."""
