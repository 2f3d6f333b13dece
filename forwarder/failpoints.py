"""Named places where the process can be made to fail on purpose, to rehearse its recovery.

``FORWARDER_FAILPOINTS=journal.writer=2,retention.prune=1`` makes the next two passes of the
journal writer and the next retention run raise ``InjectedFault``, an exception none of the
code expects, exactly as a bug would. The reliability suite uses it to prove that every
background task survives such a failure, says so in logs and ``/metrics``, and loses nothing;
an operator can use it the same way on a staging instance. Unset (the default), a failpoint
costs one dictionary truth test.

Failpoints: ``journal.writer`` (the group-commit thread, outside any one commit),
``delivery.loop`` (a delivery loop between batches), ``retention.prune``, ``poller.poll``
(the Events API poller, before a poll).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

NAMES = frozenset({"journal.writer", "delivery.loop", "retention.prune", "poller.poll"})


class InjectedFault(RuntimeError):
    """Raised by an armed failpoint; deliberately not a subclass of anything the code catches."""


def parse(value: str) -> dict[str, int]:
    """``name=count,...`` to a dict; a bare ``name`` means once. Raises ValueError naming the bad part."""
    armed: dict[str, int] = {}
    for part in filter(None, (piece.strip() for piece in value.split(","))):
        name, _, count = part.partition("=")
        name = name.strip()
        if name not in NAMES:
            raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(sorted(NAMES))}")
        try:
            armed[name] = int(count) if count.strip() else 1
        except ValueError:
            raise ValueError(f"failpoint {name!r}: {count!r} is not a whole number") from None
    return armed


_armed: dict[str, int] = {}
_lock = threading.Lock()


def arm(failures: Mapping[str, int]) -> None:
    """Arm failpoints (``parse`` of ``FORWARDER_FAILPOINTS``); the service does it once started."""
    with _lock:
        _armed.clear()
        _armed.update(failures)


def hit(name: str) -> None:
    """Raise ``InjectedFault`` if ``name`` is armed, counting down its remaining failures."""
    if not _armed:
        return
    with _lock:
        remaining = _armed.get(name, 0)
        if remaining <= 0:
            return
        _armed[name] = remaining - 1
    raise InjectedFault(f"failpoint {name} (FORWARDER_FAILPOINTS)")
