"""The sink protocol: what the delivery loop needs from a destination.

A sink is an object with a ``name``, an ``events`` filter and an ``async send(batch)``
of ``Record`` s: journaled events as stored (JSON bytes plus the columns the journal keeps).
It is built by a factory ``create(env) -> Sink | None`` that reads its own environment
variables and returns ``None`` when the sink is not configured. Factories are found
through the ``workos_forwarder.sinks`` entry-point group, so a sink shipped as a separate
package only needs to declare one entry point.

``send`` either returns (the whole batch is delivered), or raises:

* ``RetryableError``: nothing (or not everything) was delivered, try the same batch again
  later. The delivery loop backs off with jitter, honouring ``retry_after``; it never drops
  records for a retryable error, the backlog waits on disk.
* ``PermanentError``: retrying will not help. With ``event_ids`` the sink has isolated the
  records it could not deliver and delivered all others; those go straight to the
  dead-letter table. Without ``event_ids`` the whole batch is retried a bounded number of
  times and then dead-lettered.

This module is the whole contract between the forwarder and its sinks, both ways. A sink
imports nothing else from ``forwarder``: what it needs from the core is re-exported here
(the record type, the configuration parsers and ``ConfigError``, the metrics registry and
the per-request sink metrics, ``Retry-After`` parsing, URL masking, the catalog's metric
labels), so the core can rearrange its own modules without breaking a sink shipped
elsewhere. The core in turn imports only this module of ``sinks`` (``load_sinks`` is here),
never a sink. ``tests/unit/test_dependencies.py`` holds both rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Protocol, TypeVar, runtime_checkable

# Re-exported for sinks (see the module docstring). Each of these modules is light and
# imports nothing from ``sinks``: importing the contract loads no journal and no engine.
from forwarder.catalog import metric_labels
from forwarder.config import ConfigError, choice, duration, integer, max_retry_after, switch
from forwarder.masking import mask_url
from forwarder.metrics import REGISTRY as METRICS_REGISTRY
from forwarder.metrics import SINK_BYTES, SINK_LAST_SUCCESS, SINK_REQUESTS, SINK_RETRIES
from forwarder.records import Record
from forwarder.retry_after import DEFAULT_CAP_S, retry_after_from_headers, retry_after_seconds

__all__ = [
    "DEFAULT_CAP_S",
    "ENTRY_POINT_GROUP",
    "METRICS_REGISTRY",
    "SINK_BYTES",
    "SINK_LAST_SUCCESS",
    "SINK_REQUESTS",
    "SINK_RETRIES",
    "ConfigError",
    "EventFilter",
    "PermanentError",
    "Record",
    "RetryableError",
    "Sink",
    "SinkError",
    "SinkFactory",
    "choice",
    "duration",
    "integer",
    "load_sinks",
    "mask_url",
    "max_retry_after",
    "metric_labels",
    "retry_after_from_headers",
    "retry_after_seconds",
    "run_in_background",
    "switch",
]

ENTRY_POINT_GROUP = "workos_forwarder.sinks"

T = TypeVar("T")


class SinkError(Exception):
    """Base class of the errors a sink may raise from ``send``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryableError(SinkError):
    """The batch could not be delivered now; the same batch should be tried again.

    ``retry_after`` (seconds) is the earliest useful retry, from ``Retry-After`` or a
    rate-limit header. ``unhealthy`` marks errors an operator must fix (a rejected API key):
    the sink is reported unhealthy on ``/readyz``, ``/status`` and in metrics until a send
    succeeds again, and retries slowly meanwhile.
    """

    def __init__(self, reason: str, *, retry_after: float | None = None, unhealthy: bool = False) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.unhealthy = unhealthy


class PermanentError(SinkError):
    """Retrying will not help; see the module docstring for ``event_ids``."""

    def __init__(self, reason: str, *, event_ids: Sequence[str] | None = None) -> None:
        super().__init__(reason)
        self.event_ids = list(event_ids) if event_ids is not None else None


@dataclass(frozen=True)
class EventFilter:
    """Include/exclude globs over event types (``authentication.*``). Empty include = all."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str) -> EventFilter:
        """Read ``{prefix}_EVENTS`` and ``{prefix}_EXCLUDE_EVENTS`` (comma-separated globs)."""
        return cls(
            include=_split_globs(env.get(f"{prefix}_EVENTS", "")),
            exclude=_split_globs(env.get(f"{prefix}_EXCLUDE_EVENTS", "")),
        )

    @property
    def matches_everything(self) -> bool:
        """No globs: the delivery loop skips the per-record check."""
        return not self.include and not self.exclude

    def matches(self, event_type: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(event_type, glob) for glob in self.include):
            return False
        return not any(fnmatch.fnmatchcase(event_type, glob) for glob in self.exclude)


def _split_globs(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@runtime_checkable
class Sink(Protocol):
    """A destination for normalized records. ``max_batch`` bounds one ``send`` call.

    A sink may also set ``linger_s``: once caught up, the loop waits that long for more
    records before the next ``send`` (default 0.05 s), so a remote sink is not called once
    per webhook. A backlog is always sent in full batches without waiting. ``send_timeout_s``
    (default 300 s) bounds one ``send``: past it the call is abandoned and retried. A sink
    that writes files may have ``async def reopen()``, called on SIGHUP (logrotate).
    """

    name: str
    events: EventFilter
    max_batch: int

    async def send(self, batch: Sequence[Record]) -> None: ...

    async def close(self) -> None:
        """Flush and release connections; called once at shutdown with a bounded timeout."""
        ...


class SinkFactory(Protocol):
    def __call__(self, env: Mapping[str, str]) -> Sink | None: ...


def load_sinks(env: Mapping[str, str]) -> list[Sink]:
    """Build every registered sink that its environment enables, in name order."""
    sinks: list[Sink] = []
    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        factory: SinkFactory = entry_point.load()
        sink = factory(env)
        if sink is None:
            continue
        if any(existing.name == sink.name for existing in sinks):
            raise ValueError(f"two sinks are named {sink.name!r} (entry point {entry_point.value})")
        sinks.append(sink)
    return sinks


def _lower_priority() -> None:
    # On Linux a thread id takes its own nice value; elsewhere the threads keep the default.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _BACKGROUND_NICE)


_BACKGROUND_NICE = 19
_BACKGROUND = ThreadPoolExecutor(
    max_workers=4, thread_name_prefix="sink-background", initializer=_lower_priority
)


async def run_in_background(fn: Callable[..., T], /, *args: object) -> T:
    """Run a sink's CPU-heavy step (compressing, encoding, exporting) off the event loop.

    The threads run at the lowest CPU priority. Compression releases the GIL, so on a busy
    core the kernel runs webhook acknowledgements first: gzip of a 1000-record Datadog batch
    took 20-35 ms of CPU, and at normal priority it stretched every answer given meanwhile.
    """
    return await asyncio.get_running_loop().run_in_executor(_BACKGROUND, fn, *args)
