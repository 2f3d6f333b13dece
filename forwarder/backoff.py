"""How long to wait before trying again: the one backoff schedule, for sinks, sources and tasks.

Every retry wait of the forwarder is ``backoff_delay`` of one of the schedules below, so this
module is the one place to change them: a delivery loop's retries (``retry_policy``: up to
``CAP_S``, four times that for a sink an operator must fix), a restarted background task
(``supervisor``), and the Events API's waits (``sources/events_api_client``: rate limits
without ``Retry-After`` on the default schedule, failures on the slower ``EVENTS_API_*``).
A wait a server asks for (``Retry-After``) is ``retry_after``'s, capped by
``FORWARDER_MAX_RETRY_AFTER``.
"""

from __future__ import annotations

import random

BASE_S = 0.5
"""The first wait's ceiling: the waits double from here."""
CAP_S = 30.0
"""The longest wait of the default schedule."""
EVENTS_API_BASE_S = 1.0
EVENTS_API_CAP_S = 60.0
"""The Events API's failures (5xx, timeouts): a shared API, asked less often."""


def backoff_delay(attempt: int, *, base: float = BASE_S, cap: float = CAP_S) -> float:
    """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
