"""Finding the records a destination refuses, by halving: one algorithm for the loop and sinks.

A batch refused as a whole (an HTTP 400 or 413, a ``PermanentError`` without event ids)
usually holds one bad record among good ones. Sending each half once, and halving again
only the halves that are refused as a whole, finds the records refused on their own in
about ``2 * log2(n)`` sends per bad record, and delivers every other one. The delivery loop
(``forwarder.delivery``) and the HTTP sinks (``sinks.http``) both call ``isolate``; only
what one ``attempt`` is differs.

This module imports nothing from the project: ``sinks.base`` offers it to every sink.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Refused(Generic[T]):
    """What one attempt could not deliver.

    ``named`` is None when the whole attempt was refused (so it is worth halving), else the
    items the destination named itself, each with its reason, every other one delivered.
    """

    reason: str
    named: Sequence[tuple[T, str]] | None = None


Attempt = Callable[[Sequence[T]], Awaitable["Refused[T] | None"]]
"""Send some items once: None when all were delivered, else what was refused."""


async def isolate(items: Sequence[T], attempt: Attempt[T]) -> list[tuple[T, str]]:
    """Send ``items``; answer the ones refused on their own, with their reasons.

    The first attempt sends them all; see ``halve`` for what follows a refusal of the whole.
    """
    refused = await attempt(items)
    if refused is None:
        return []
    if refused.named is not None:
        return list(refused.named)
    return await halve(items, attempt, refused.reason)


async def halve(items: Sequence[T], attempt: Attempt[T], reason: str) -> list[tuple[T, str]]:
    """``items`` were refused as a whole with ``reason``: send each half once, and halve again
    the halves refused as a whole, until the items refused alone are found (with the reason
    their own attempt gave)."""
    if len(items) == 1:
        return [(items[0], reason)]
    found: list[tuple[T, str]] = []
    middle = len(items) // 2
    for half in (items[:middle], items[middle:]):
        refused = await attempt(half)
        if refused is None:
            continue
        if refused.named is not None:
            found += refused.named
        else:
            found += await halve(half, attempt, refused.reason)
    return found
