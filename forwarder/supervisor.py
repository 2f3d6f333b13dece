"""Background tasks that cannot die unseen: every failure is logged, counted and restarted.

A task created with ``asyncio.create_task`` that raises just stops; its exception surfaces,
at best, as "Task exception was never retrieved" when it is garbage-collected. For a
delivery loop that means a sink silently stops receiving records. ``supervise`` runs a
task's body again after any unexpected exception, with backoff, and ``Supervised`` keeps
what the service needs to report it: whether the task is running, failing or finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from forwarder import metrics
from forwarder.backoff import backoff_delay

logger = logging.getLogger("forwarder.supervisor")

_HEALTHY_AFTER_S = 60.0
"""A run that lasted this long before failing starts the backoff from the beginning again."""


@dataclass(slots=True)
class Supervised:
    """One supervised task as ``/status`` and ``/readyz`` see it."""

    name: str
    restarts: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None
    stopped: str | None = None
    """Why the task is no longer running: None while it runs (or waits to restart)."""


def start(task: Supervised, body: Callable[[], Awaitable[None]], **options: Any) -> asyncio.Task[None]:
    """``supervise`` in a new asyncio task whose end, however it comes, is recorded and logged."""
    running = asyncio.create_task(supervise(task, body, **options), name=task.name)
    running.add_done_callback(lambda done: _record_end(task, done))
    return running


def _record_end(task: Supervised, done: asyncio.Task[None]) -> None:
    if done.cancelled():
        task.stopped = "cancelled"
        return
    error = done.exception()
    if error is None:
        task.stopped = "finished"
        return
    # Only a BaseException other than cancellation gets here (supervise catches the rest).
    task.stopped = f"died: {type(error).__name__}: {error}"
    logger.critical("background task died and cannot restart", exc_info=error, extra={"task": task.name})


async def supervise(
    task: Supervised,
    body: Callable[[], Awaitable[None]],
    *,
    on_failure: Callable[[str], None] | None = None,
) -> None:
    """Run ``body`` until it returns; after an unexpected exception, log, count and run it again.

    Cancellation of this task (shutdown) ends it. A ``CancelledError`` raised from inside the
    body while nobody cancelled the task (a library cancelling its own work and letting it
    leak) is a failure like any other. ``on_failure`` lets the owner mark itself unhealthy.
    """
    attempt = 0
    while True:
        started = time.monotonic()
        try:
            await body()
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is None or current.cancelling():
                raise
            error: BaseException = exc
        except Exception as exc:
            error = exc
        else:
            return
        if time.monotonic() - started >= _HEALTHY_AFTER_S:
            attempt = 0
        attempt += 1
        task.restarts += 1
        task.last_failure_at = time.time()
        task.last_error = f"{type(error).__name__}: {error}"
        metrics.TASK_RESTARTS.labels(task.name).inc()
        logger.error(
            "background task failed; restarting it",
            exc_info=error,
            extra={"task": task.name, "restarts": task.restarts},
        )
        if on_failure is not None:
            on_failure(task.last_error)
        await asyncio.sleep(backoff_delay(attempt))
