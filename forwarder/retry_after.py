"""Server-given waits (``Retry-After``, ``X-Ratelimit-Reset``), parsed in one place and bounded.

A destination or a proxy in front of it may ask for any wait, and a sink that honours it
blindly is parked for as long as it was told: ``Retry-After: 86400`` stops a sink for a day
while its backlog grows. Every caller therefore passes a ``cap`` (the operator's
``FORWARDER_MAX_RETRY_AFTER``), and every input has one defined meaning:

=====================================  ===============================================
header value                           result
=====================================  ===============================================
absent, empty or blank                 ``None``: the caller uses its own backoff
delay-seconds (``120``, also ``1.5``,   that many seconds, at most ``cap``
``1e3``, surrounding blanks)
``inf`` / ``infinity`` (any case)      ``cap``
a negative number, ``-inf``            ``0.0``: retry now
an HTTP date in the future             the seconds until it, at most ``cap``
an HTTP date now or in the past        ``0.0``
``nan``, anything else                 ``None``: unusable, so the caller's own backoff
=====================================  ===============================================

RFC 9110 only allows non-negative integers or an HTTP date; the other forms are read
generously because what matters is that the sink neither stalls nor spins on them. This
module is pure (no I/O, no project imports): the caller supplies the cap and, in tests,
``now``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

DEFAULT_CAP_S = 300.0
"""``FORWARDER_MAX_RETRY_AFTER``'s default (5 minutes), and every cap parameter's."""

RATE_LIMIT_HEADERS = ("retry-after", "x-ratelimit-reset")
"""Headers read by ``retry_after_from_headers``: both carry a delay in seconds (Datadog's
``X-Ratelimit-Reset`` is the seconds until the rate-limit window resets)."""

# A decimal number as a person or a proxy writes it, in ASCII digits. Python's float() also
# takes "1_000", "nan" and Arabic-Indic digits, which no server means as a wait.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INFINITY = re.compile(r"[+-]?inf(?:inity)?", re.IGNORECASE)


def retry_after_seconds(value: str | None, *, cap: float, now: float | None = None) -> float | None:
    """Seconds to wait for one ``Retry-After``-style value, in ``[0, cap]``; None if unusable.

    See the module docstring for the meaning of each form. ``now`` (epoch seconds, default
    the current time) is only used for HTTP dates. ``cap`` must be finite and not negative.
    """
    _check_cap(cap)
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _NUMBER.fullmatch(text) or _INFINITY.fullmatch(text):
        return bounded_wait(float(text), cap)
    return _until_date(text, cap, time.time() if now is None else now)


def retry_after_from_headers(
    headers: Mapping[str, str],
    *,
    cap: float,
    now: float | None = None,
    names: tuple[str, ...] = RATE_LIMIT_HEADERS,
) -> float | None:
    """The longest usable wait among ``names`` in ``headers`` (case-insensitive), or None.

    Taking the larger honours both a proxy's ``Retry-After`` and the destination's own
    rate-limit reset; each is parsed and capped by ``retry_after_seconds``.
    """
    waits = [
        wait
        for name in names
        if (wait := retry_after_seconds(_header(headers, name), cap=cap, now=now)) is not None
    ]
    return max(waits) if waits else None


def bounded_wait(seconds: float | None, cap: float) -> float | None:
    """A requested delay in seconds clamped to [0, cap]; None (absent) and NaN (never a wait) are None.

    Also what the delivery loop applies to a third-party sink's ``RetryableError.retry_after``,
    which may be ``inf`` or ``nan`` and must neither park the sink forever nor crash the loop.
    """
    if seconds is None or math.isnan(seconds):
        return None
    return 0.0 if seconds <= 0 else float(min(seconds, cap))


def _until_date(text: str, cap: float, now: float) -> float | None:
    """Seconds from ``now`` until an HTTP date, clamped to [0, cap]; None if it is not a date."""
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000" means UTC without a claim about local time
        moment = moment.replace(tzinfo=UTC)
    try:
        seconds = moment.timestamp() - now
    except (OverflowError, ValueError, OSError):
        return None
    return bounded_wait(seconds, cap)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` for httpx/requests headers (case-insensitive) and plain dicts alike."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():
        if key.lower() == name:
            return item
    return None


def _check_cap(cap: float) -> None:
    if not 0 <= cap < math.inf:
        raise ValueError(f"the Retry-After cap must be a finite number of seconds >= 0, got {cap!r}")
