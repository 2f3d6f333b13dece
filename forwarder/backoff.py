"""How long to wait before trying again: one policy for sinks, sources and restarted tasks."""

from __future__ import annotations

import math
import random


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def bounded_wait(asked: float | None, cap: float) -> float | None:
    """A server's requested wait, clamped to [0, cap]; None when absent or not a number.

    A proxy answering ``Retry-After: 86400`` must not park a sink for a day, and a third-party
    sink passing ``inf`` or ``nan`` must not park it forever or crash the loop.
    """
    if asked is None or math.isnan(asked):
        return None
    return min(max(asked, 0.0), cap)
