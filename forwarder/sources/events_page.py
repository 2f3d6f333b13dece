"""One page of ``GET /events`` decoded event by event, so that one bad event cannot hold up the rest.

orjson refuses a whole document for one value it cannot read: an event nested past its 1,024
levels made the page undecodable, and the poller asked for that page again forever, the other
events on it never stored. When the page does not decode whole, it is split into its events
by a scanner that tracks only strings and brackets (a loop and a stack, no recursion, so no
depth is too deep for it), each event is decoded on its own, and the envelope is decoded with
an empty ``data``. An event that still does not decode is handed on as ``Undecodable``, with
the ``id`` and ``created_at`` read from its top level when they are there, so the walk can log
it, count it and step past it. A body whose brackets or strings do not close, or without a
``data`` list, is not JSON at all: ``ValueError``, and the client asks again as before.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

# A JSON string (escapes included) or one structural character; what lies between two of
# these may only be whitespace, numbers and the literals true, false and null.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:,]', re.DOTALL)
_SCALAR = re.compile(rb"[\s0-9a-zA-Z.+\-]*")
_CLOSES = {ord("]"): ord("["), ord("}"): ord("{")}


@dataclass(frozen=True, slots=True)
class Undecodable:
    """An event of a page that could not be decoded, with what could be read of it."""

    event_id: str | None
    """Its top-level ``id``, when it is a string."""
    created_at: str | None
    """Its top-level ``created_at``, when it is a string."""
    reason: str
    digest: str
    """A digest of its bytes: tells one event from another when it has no ``id``."""


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Any]
    after: str | None
    undecodable: list[Undecodable] = field(default_factory=list)
    """Events of the page that could not be decoded (only when the page did not decode whole)."""


def decode_page(body: bytes) -> Page:
    """The events of one ``GET /events`` answer and the position after it.

    Raises ``ValueError`` when the body is not JSON or has no ``data`` list.
    """
    try:
        return _page(orjson.loads(body))
    except orjson.JSONDecodeError:
        pass
    data_start, data_end, raw_events = _split(body)
    try:
        envelope = orjson.loads(body[:data_start] + b"[]" + body[data_end:])
    except orjson.JSONDecodeError:
        raise ValueError("the body is not JSON") from None
    events: list[Any] = []
    undecodable: list[Undecodable] = []
    for raw in raw_events:
        try:
            events.append(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            fields = _top_level_strings(raw, (b'"id"', b'"created_at"'))
            undecodable.append(
                Undecodable(
                    event_id=fields.get(b'"id"'),
                    created_at=fields.get(b'"created_at"'),
                    reason=f"cannot be decoded: {exc}",
                    digest=hashlib.sha256(raw).hexdigest()[:16],
                )
            )
    page = _page(envelope)
    return Page(events=events, after=page.after, undecodable=undecodable)


def _page(body: Any) -> Page:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ValueError('no "data" list in the body')
    metadata = body.get("list_metadata")
    after = metadata.get("after") if isinstance(metadata, dict) else None
    return Page(events=body["data"], after=after if isinstance(after, str) and after else None)


def _tokens(body: bytes) -> Iterator[re.Match[bytes]]:
    """The strings and structural characters of ``body``, checking what lies between them."""
    position = 0
    for token in _TOKEN.finditer(body):
        if _SCALAR.fullmatch(body, position, token.start()) is None:
            raise ValueError("the body is not JSON")
        position = token.end()
        yield token
    if _SCALAR.fullmatch(body, position) is None:
        raise ValueError("the body is not JSON")


def _split(body: bytes) -> tuple[int, int, list[bytes]]:
    """Where the top-level ``data`` array starts and ends, and the raw bytes of its elements."""
    opened: list[int] = []
    key: bytes | None = None
    previous = b""
    data_start = data_end = -1
    element_start = 0
    elements: list[bytes] = []
    for token in _tokens(body):
        text = token.group()
        char = text[0]
        in_data = data_start >= 0 and data_end < 0
        if char in b"[{":
            if len(opened) == 1 and char == ord("[") and previous == b":" and key == b'"data"':
                data_start, element_start = token.start(), token.end()
            opened.append(char)
        elif char in b"]}":
            if not opened or opened.pop() != _CLOSES[char]:
                raise ValueError("the body is not JSON")
            if in_data and len(opened) == 1:
                elements.append(body[element_start : token.start()])
                data_end = token.end()
        elif char == ord(","):
            if in_data and len(opened) == 2:
                elements.append(body[element_start : token.start()])
                element_start = token.end()
            elif len(opened) == 1:
                key = None
        elif char == ord(":") and len(opened) == 1:
            key = previous
        previous = text
    if opened or data_end < 0:
        raise ValueError("the body is not JSON" if opened else 'no "data" list in the body')
    raws = [raw.strip() for raw in elements]
    if raws == [b""]:
        return data_start, data_end, []
    if b"" in raws:
        raise ValueError("the body is not JSON")
    return data_start, data_end, raws


def _top_level_strings(raw: bytes, keys: tuple[bytes, ...]) -> dict[bytes, str]:
    """The string values of ``keys`` at the top level of the object ``raw`` (those present)."""
    found: dict[bytes, str] = {}
    depth = 0
    previous = b""
    key: bytes | None = None
    try:
        for token in _tokens(raw):
            text = token.group()
            char = text[0]
            if char in b"[{":
                depth += 1
            elif char in b"]}":
                depth -= 1
            elif char == ord(":") and depth == 1:
                key = previous
            elif char == ord('"') and depth == 1 and previous == b":" and key in keys:
                value = orjson.loads(text)
                if isinstance(value, str):
                    found[key] = value
            previous = text
    except (ValueError, orjson.JSONDecodeError):
        pass  # what was found before the bytes stopped making sense
    return found
