"""The journal's deduplication key: a compact integer that orders records by when they happened.

An index on the text event id put every insert at a random leaf once ids are random, and a
week of journal (3,000,000 records) made each commit write and read pages all over a 170 MB
index. This key is the event's ``created_at`` in milliseconds in the high bits and 21 bits of
a hash of its id below: inserts land at the recent end of a 64 MB index, whatever the ids look
like, and the events of one group commit in one or two of its leaves.

The key is not unique. Two events of the same millisecond may share it; the journal checks the
stored id on a key match, so that costs a comparison, never an event. A redelivery carries
the same ``created_at`` as the first delivery (it is the same event), so it finds it. Were it
ever to differ, the record would be stored twice: a duplicate downstream, which at-least-once
delivery already allows, never a loss.
"""

from __future__ import annotations

import hashlib

_HASH_BITS = 21
_HASH_MASK = (1 << _HASH_BITS) - 1
_MAX_MILLISECOND = (1 << 42) - 1
"""The key must fit a signed 64-bit column: 42 bits of milliseconds (until 2109), 21 of hash."""


def dedup_key(event_id: str, created_at: float | None) -> int:
    """The key of an event: ``created_at`` in whole milliseconds (0 when missing or out of
    range), then the low 21 bits of the first four bytes of the id's MD5.

    MD5 because PostgreSQL has it built in (``POSTGRES_DEDUP_KEY``): a journal of the previous
    release is keyed by the database itself. Only verified events reach the journal, so nobody can
    choose ids that collide, and a collision would cost a comparison anyway.
    """
    millisecond = 0
    if created_at is not None:
        scaled = created_at * 1000
        if 0 <= scaled <= _MAX_MILLISECOND:
            millisecond = int(scaled)
    digest = hashlib.md5(event_id.encode(), usedforsecurity=False).digest()
    return (millisecond << _HASH_BITS) | (int.from_bytes(digest[:4]) & _HASH_MASK)


POSTGRES_DEDUP_KEY = (
    "(CASE WHEN created_at * 1000 >= 0 AND created_at * 1000 <= 4398046511103"
    " THEN floor(created_at * 1000)::bigint ELSE 0 END << 21)"
    " | (('x' || substr(md5(event_id), 1, 8))::bit(32)::bigint & 2097151)"
)
"""``dedup_key`` in PostgreSQL's SQL, over an ``events`` row."""
