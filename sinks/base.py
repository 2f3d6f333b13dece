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
  dead-letter table. Without ``event_ids`` no record of the batch was delivered: the loop
  halves the batch at once (``isolate``) until the records refused alone are found, and
  dead-letters those. Any other exception is a bug: the batch is retried a bounded number
  of times (``FORWARDER_MAX_ATTEMPTS``) first.

This module is the whole contract between the forwarder and its sinks, both ways. A sink
imports nothing else from ``forwarder``: what it needs from the core is re-exported here
(the record type, the configuration parsers and the errors, the metrics registry and the
per-request sink metrics, ``Retry-After`` parsing, URL masking, the catalog's metric labels,
isolation by halving), so the core can rearrange its own modules without breaking a sink shipped
elsewhere. The core in turn imports only this module of ``sinks`` (``load_sinks`` is here),
never a sink. ``tests/unit/test_dependencies.py`` holds both rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import inspect
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Protocol, TypeVar, runtime_checkable

# Re-exported for sinks (see the module docstring). Each of these modules is light, imports
# nothing from ``sinks`` and nothing of the core beyond one another (tests/unit/
# test_dependencies.py lists them): importing the contract loads no journal, no engine, no
# normalization.
from forwarder.catalog import metric_labels
from forwarder.config_values import choice, duration, integer, max_retry_after, switch
from forwarder.errors import ConfigError, PermanentError, RetryableError, SinkContractError, SinkError
from forwarder.isolation import Attempt, Refused, halve, isolate
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
    "Attempt",
    "ConfigError",
    "EventFilter",
    "PermanentError",
    "Record",
    "Refused",
    "RetryableError",
    "Sink",
    "SinkContractError",
    "SinkError",
    "SinkFactory",
    "check_contract",
    "choice",
    "duration",
    "halve",
    "integer",
    "isolate",
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
    """Build every registered sink that its environment enables, in name order.

    Each plugin is checked here, at start (``serve``, ``serve --check-config``, ``doctor``):
    one that cannot be imported, whose factory fails with anything but ``ConfigError``, or
    whose sink lacks part of the contract raises ``SinkContractError`` naming the plugin, its
    entry point and what is missing, rather than crash-looping once records arrive.
    """
    sinks: list[Sink] = []
    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        plugin = f"sink plugin {entry_point.name!r} ({entry_point.value})"
        try:
            factory = entry_point.load()
            sink = factory(env)
        except ConfigError:
            raise
        except Exception as exc:
            raise SinkContractError(
                plugin, f"failed to load: {type(exc).__name__}: {exc}; fix the plugin or uninstall it"
            ) from exc
        if sink is None:
            continue
        check_contract(sink, plugin)
        if any(existing.name == sink.name for existing in sinks):
            raise SinkContractError(plugin, f"a second sink is named {sink.name!r}; names must be unique")
        sinks.append(sink)
    return sinks


_ASYNC_METHODS = ("send", "close")


def check_contract(sink: object, plugin: str) -> None:
    """Raise ``SinkContractError`` naming every member ``sink`` lacks or has wrong."""
    problems = []
    name = getattr(sink, "name", None)
    if not isinstance(name, str) or not name:
        problems.append("'name' (a non-empty str)")
    events = getattr(sink, "events", None)
    if not callable(getattr(events, "matches", None)) or not hasattr(events, "matches_everything"):
        problems.append("'events' (an EventFilter, e.g. EventFilter.from_env(env, PREFIX))")
    max_batch = getattr(sink, "max_batch", None)
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        problems.append("'max_batch' (an int >= 1)")
    for method in _ASYNC_METHODS:
        if not inspect.iscoroutinefunction(getattr(sink, method, None)):
            problems.append(f"'{method}' (an async def method)")
    reopen = getattr(sink, "reopen", None)
    if reopen is not None and not inspect.iscoroutinefunction(reopen):
        problems.append("'reopen' (optional, but an async def method when present)")
    if problems:
        raise SinkContractError(
            plugin,
            f"its sink ({type(sink).__name__}) lacks {', '.join(problems)}; see docs/writing-a-sink.md",
        )


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
