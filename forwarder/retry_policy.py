"""What a failed ``send`` means for a sink: how long to wait, when to give up, and its health.

One policy for new records and dead-letter replays alike (both go through
``DeliveryLoop._send``):

* a retryable error is retried for as long as it takes, with exponential backoff; a wait the
  destination asked for (``Retry-After``) is honoured up to ``max_retry_after_s``, and an
  error an operator must fix (``unhealthy``) backs off four times as far;
* a ``send`` that outlives its timeout is retried the same way, and marks the sink unhealthy;
* any other failure of a whole batch is tried ``max_attempts`` times with backoff, then the
  loop looks for the records that fail on their own and dead-letters them.

``SinkHealth`` keeps what ``/status``, ``/readyz`` and the sink metrics show: unhealthy
from an error that needs an operator until a ``send`` succeeds again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from forwarder import metrics
from forwarder.backoff import CAP_S, backoff_delay
from forwarder.retry_after import DEFAULT_CAP_S, bounded_wait
from sinks.base import RetryableError

logger = logging.getLogger("forwarder.delivery")

_FAILURE_LOG_INTERVAL_S = 60.0
_UNHEALTHY_BACKOFF_FACTOR = 4
"""An unhealthy sink (a rejected API key) will not recover by itself: retry it less often."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    """Sends of a batch that fails (not retryably) before its failing records are isolated."""
    backoff_cap_s: float = CAP_S
    max_retry_after_s: float = DEFAULT_CAP_S

    def after_retryable(self, exc: RetryableError, retries: int) -> float:
        """The wait before retry number ``retries`` (from 1) of a batch that failed retryably."""
        cap = self.backoff_cap_s * _UNHEALTHY_BACKOFF_FACTOR if exc.unhealthy else self.backoff_cap_s
        delay = backoff_delay(retries, cap=cap)
        asked = bounded_wait(exc.retry_after, self.max_retry_after_s)
        return delay if asked is None else max(asked, delay)

    def after_timeout(self, retries: int) -> float:
        """The wait before retrying a ``send`` that did not finish in time."""
        return backoff_delay(retries, cap=self.backoff_cap_s)

    def after_failure(self, attempts: int) -> float | None:
        """The wait before sending a failing batch again, or None: stop and isolate its records."""
        if attempts >= self.max_attempts:
            return None
        return backoff_delay(attempts, cap=self.backoff_cap_s)


@dataclass(slots=True)
class SinkStatus:
    """What ``/status`` and ``/readyz`` report for one sink."""

    name: str
    role: str = "starting"
    """``active`` while this process delivers to the sink, ``standby`` while another one does."""
    cursor: int = 0
    cursor_saved: bool = True
    """False while the journal cannot write: the cursor above is kept in memory meanwhile."""
    healthy: bool = True
    failing_since: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None


class SinkHealth:
    """Records each send's outcome in ``status`` and the sink metrics, and logs the changes.

    Failures are logged when they start and then at most once a minute: a sink that is down
    for an hour fails thousands of times.
    """

    def __init__(self, status: SinkStatus) -> None:
        self.status = status
        self._last_failure_log = 0.0
        metrics.SINK_HEALTHY.labels(status.name).set(1)

    def succeeded(self, count: int) -> None:
        """``count`` records were delivered: healthy again, whatever failed before."""
        status = self.status
        if status.failing_since is not None:
            logger.info(
                "sink recovered",
                extra={"sink": status.name, "failed_for_s": round(time.time() - status.failing_since, 1)},
            )
        status.healthy = True
        status.failing_since = None
        status.last_success_at = time.time()
        metrics.SINK_HEALTHY.labels(status.name).set(1)
        metrics.SINK_DELIVERED.labels(status.name).inc(count)

    def failed(self, kind: str, reason: str, records: int, *, unhealthy: bool) -> None:
        """A failure of ``kind`` (a ``sink_failures`` label) while ``records`` records waited."""
        status = self.status
        now = time.time()
        first = status.failing_since is None
        if first:
            status.failing_since = now
        status.last_error = reason
        status.last_error_at = now
        if unhealthy:
            status.healthy = False
            metrics.SINK_HEALTHY.labels(status.name).set(0)
        metrics.SINK_FAILURES.labels(status.name, kind).inc()
        if first or now - self._last_failure_log >= _FAILURE_LOG_INTERVAL_S:
            self._last_failure_log = now
            logger.warning(
                "sink send failed",
                extra={"sink": status.name, "kind": kind, "reason": reason, "records": records},
            )
