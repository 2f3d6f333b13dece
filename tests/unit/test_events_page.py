"""Decoding a ``GET /events`` page event by event when it does not decode whole."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from forwarder.sources.events_page import Page, decode_page

DEEP = b"[" * 1_100 + b"]" * 1_100


def event(number: int, **fields: Any) -> dict[str, Any]:
    return {
        "object": "event",
        "id": f"event_{number:02d}",
        "event": "user.created",
        "created_at": f"2026-11-01T00:00:{number:02d}.000Z",
        "data": {"note": 'brackets ], } and quotes \\" in a string', **fields},
    }


def page(*elements: bytes, after: str | None = "event_09") -> bytes:
    """A page as the API sends it, around raw events (whitespace and newlines between them)."""
    metadata = orjson.dumps({"before": None, "after": after})
    return (
        b'{"object": "list",\n "data": [\n  '
        + b",\n  ".join(elements)
        + b'\n ], "list_metadata": '
        + metadata
        + b"}"
    )


def nested(number: int) -> bytes:
    """An event whose ``data`` nests 1,100 levels, written with ``id`` after ``data``."""
    return (
        b'{"object": "event", "event": "user.created", "data": {"deep": '
        + DEEP
        + f'}}, "created_at": "2026-11-01T00:00:{number:02d}.000Z", "id": "event_{number:02d}"}}'.encode()
    )


def test_a_page_that_decodes_whole_is_decoded_whole() -> None:
    body = page(*(orjson.dumps(event(n)) for n in range(3)))

    decoded = decode_page(body)

    assert decoded == Page(events=[event(n) for n in range(3)], after="event_09")


def test_an_event_too_deep_is_set_apart_with_its_id_and_time_and_the_others_decoded() -> None:
    body = page(orjson.dumps(event(1)), nested(2), orjson.dumps(event(3)), after=None)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)

    decoded = decode_page(body)

    assert decoded.events == [event(1), event(3)]
    assert decoded.after is None
    (bad,) = decoded.undecodable
    assert (bad.event_id, bad.created_at) == ("event_02", "2026-11-01T00:00:02.000Z")
    assert bad.reason.startswith("cannot be decoded: depth limit exceeded")


def test_an_undecodable_event_without_an_id_is_told_apart_by_its_bytes() -> None:
    one, other = b'{"data": ' + DEEP + b"}", b'{"data": {"x": ' + DEEP + b"}}"

    decoded = decode_page(page(one, other, orjson.dumps(event(1))))

    assert decoded.events == [event(1)]
    assert [bad.event_id for bad in decoded.undecodable] == [None, None]
    assert len({bad.digest for bad in decoded.undecodable}) == 2


def test_only_the_top_level_id_of_an_event_is_its_id() -> None:
    raw = b'{"data": {"id": "user_01", "deep": ' + DEEP + b'}, "id": "event_07"}'

    (bad,) = decode_page(page(raw)).undecodable

    assert bad.event_id == "event_07"


@pytest.mark.parametrize(
    "body",
    [
        page(orjson.dumps(event(1)), nested(2))[:-40],  # cut short
        b"<html><body>502 Bad Gateway</body></html>",
        page(nested(2)).replace(b'"data": [', b'"items": ['),  # no data list
        page(nested(2), b'{"a": [}]}'),  # brackets that do not match
        page(nested(2), b""),  # an empty element
        page(nested(2), b'{"id": "event_03}'),  # a string that does not close
        page(nested(2)) + b" trailing",
        b'{"list_metadata": {"after": ' + DEEP + b'}, "data": []}',  # the envelope itself
        b"",
    ],
    ids=[
        "truncated",
        "html",
        "no-data",
        "mismatched",
        "empty-element",
        "open-string",
        "trailing",
        "deep-envelope",
        "empty",
    ],
)
def test_a_body_that_is_not_json_is_refused_whole(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_page(body)


def test_an_empty_data_list_is_an_empty_page() -> None:
    assert decode_page(b'{"data": [], "list_metadata": {"after": null}}') == Page(events=[], after=None)
