"""The forwarder's own Prometheus metrics, on one registry served at ``/metrics``.

Labels stay bounded: results and kinds are fixed words, sinks are configured names and
event types are folded into the known catalog plus ``other``. Never ids, emails or IPs.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from forwarder.loop_metrics import LoopCounter, LoopHistogram

# ``*_created`` series double the output and no rule or dashboard here uses them.
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)

# Updated for every webhook, on the event loop only: the lock-free kind (forwarder.loop_metrics).
WEBHOOK_REQUESTS = LoopCounter(
    "workos_webhook_requests",
    "Webhook requests by result (accepted, duplicate, or the rejection reason).",
    ["result"],
    registry=REGISTRY,
)
HTTP_REJECTED = LoopCounter(
    "workos_forwarder_http_rejected",
    "Connections and requests the HTTP edge refused or cut, by reason (forwarder/http_edge.py:"
    " header_too_large, header_timeout, body_timeout, body_too_slow, body_too_large,"
    " invalid_request, evicted, over_capacity, read_timeout).",
    ["reason"],
    registry=REGISTRY,
)
ACK_LATENCY = LoopHistogram(
    "workos_forwarder_ack_latency_seconds",
    "Time from the start of a webhook request to its answer, commit included.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
SINK_DELIVERED = Counter(
    "workos_forwarder_sink_delivered", "Records delivered by a sink.", ["sink"], registry=REGISTRY
)
SINK_FAILURES = Counter(
    "workos_forwarder_sink_failures",
    "Failed send attempts by kind (retryable, permanent).",
    ["sink", "kind"],
    registry=REGISTRY,
)
SINK_DEAD_LETTERED = Counter(
    "workos_forwarder_sink_dead_lettered",
    "Records moved to the dead-letter table.",
    ["sink"],
    registry=REGISTRY,
)
SINK_LAG_EVENTS = Gauge(
    "workos_forwarder_sink_lag_events",
    "Journal records not yet delivered by a sink.",
    ["sink"],
    registry=REGISTRY,
)
SINK_LAG_SECONDS = Gauge(
    "workos_forwarder_sink_lag_seconds",
    "Age of the oldest record a sink has not delivered yet (0 when caught up).",
    ["sink"],
    registry=REGISTRY,
)
SINK_HEALTHY = Gauge(
    "workos_forwarder_sink_healthy",
    "1 while a sink delivers, 0 while it fails with an error an operator must fix (e.g. a rejected API key).",
    ["sink"],
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "workos_forwarder_dead_letters", "Dead letters waiting for replay, by sink.", ["sink"], registry=REGISTRY
)
# Observed by the journal's writer thread only (one at a time): the lock-free kind too, which
# spares every group commit about 8,000 instructions. A scrape may see the sum one commit
# behind the count; never a lost observation.
JOURNAL_COMMIT = LoopHistogram(
    "workos_forwarder_journal_commit_seconds",
    "Time of one group commit (fsync included); its count is the number of commits.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
JOURNAL_COMMIT.labels()  # its one value made now: the writer never grows a dict a scrape reads
JOURNAL_EVENTS = Gauge("workos_forwarder_journal_events", "Records held in the journal.", registry=REGISTRY)
JOURNAL_BYTES = Gauge("workos_forwarder_journal_bytes", "Size of the journal on disk.", registry=REGISTRY)

SINK_REQUESTS = Counter(
    "workos_forwarder_sink_requests",
    "HTTP requests made by remote sinks, by status class (2xx, 4xx, 5xx, error).",
    ["sink", "status_class"],
    registry=REGISTRY,
)
SINK_RETRIES = Counter(
    "workos_forwarder_sink_retries",
    "Requests of remote sinks that will be retried, by status class.",
    ["sink", "status_class"],
    registry=REGISTRY,
)
SINK_BYTES = Counter(
    "workos_forwarder_sink_bytes",
    "Bytes sent by remote sinks (after compression).",
    ["sink"],
    registry=REGISTRY,
)
SINK_LAST_SUCCESS = Gauge(
    "workos_forwarder_sink_last_success_timestamp_seconds",
    "Unix time of a sink's last successful send.",
    ["sink"],
    registry=REGISTRY,
)

RECONCILED_EVENTS = Counter(
    "workos_reconciled_events",
    "Events that reached the journal through one path only (api_only: a missed or late webhook).",
    ["path"],
    registry=REGISTRY,
)
EVENTS_API_SKIPPED = Counter(
    "workos_forwarder_events_api_skipped",
    "Events API events not stored, each logged once with its reason: undecodable (its JSON cannot"
    " be decoded) or invalid (not an event); the rest of their page is stored.",
    ["reason"],
    registry=REGISTRY,
)
UNCATALOGUED_EVENTS = Counter(
    "workos_forwarder_uncatalogued_events",
    "Events whose type is not in this release's catalog (each new type is logged once, by name).",
    registry=REGISTRY,
)
ARRIVAL_DELAY = LoopHistogram(
    "workos_event_arrival_delay_seconds",
    "Time between an event's creation at WorkOS and its first arrival here, by path.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
    registry=REGISTRY,
    labelnames=["path"],
)

TASK_RESTARTS = Counter(
    "workos_forwarder_task_restarts",
    "Background tasks (journal writer, delivery loops, poller, retention) that failed unexpectedly"
    " and were restarted; the log has each traceback.",
    ["task"],
    registry=REGISTRY,
)
JOURNAL_SEQUENCE_REPAIRS = Counter(
    "workos_forwarder_journal_sequence_repairs",
    "Times the journal's sequence was found below a delivery cursor while running and raised.",
    registry=REGISTRY,
)
JOURNAL_WRITABLE = Gauge(
    "workos_forwarder_journal_writable",
    "1 while the journal takes writes, 0 after a failed write (a full disk, the database down)"
    " until one succeeds.",
    registry=REGISTRY,
)

# The detection engine (forwarder/detections): its firings and the size of its window state.
DETECTIONS = Counter(
    "workos_detections",
    "Detection firings journaled (and so delivered to every sink), by rule and severity; late ones apart.",
    ["rule", "severity"],
    registry=REGISTRY,
)
DETECTIONS_LATE = Counter(
    "workos_detections_late",
    "Late detection firings journaled (their window ended over an hour before: a backlog evaluated).",
    ["rule", "severity"],
    registry=REGISTRY,
)
DETECTION_STATE_EVENTS = Gauge(
    "workos_forwarder_detection_state_events",
    "Events held in the detection engine's windows (bounded by FORWARDER_DETECTION_MAX_EVENTS).",
    registry=REGISTRY,
)
DETECTION_STATE_GROUPS = Gauge(
    "workos_forwarder_detection_state_groups",
    "Groups (accounts, addresses, users) held by the detection engine"
    " (bounded by FORWARDER_DETECTION_MAX_GROUPS).",
    registry=REGISTRY,
)
DETECTION_LAG_EVENTS = Gauge(
    "workos_forwarder_detection_lag_events",
    "Records journaled after the detection engine's position: not evaluated yet, and kept from"
    " retention until they are.",
    registry=REGISTRY,
)
DETECTION_LAG_SECONDS = Gauge(
    "workos_forwarder_detection_lag_seconds",
    "Age of the oldest record the detection engine has not evaluated (0 when caught up).",
    registry=REGISTRY,
)
DETECTION_STATE_SHED = Counter(
    "workos_forwarder_detection_state_shed",
    "What the detection engine dropped at its bounds: least recently used groups, and events.",
    ["kind"],
    registry=REGISTRY,
)


MEMBERSHIP_USERS = Gauge(
    "workos_forwarder_membership_users",
    "Users whose organizations this process knows (the in-memory map that attributes events).",
    registry=REGISTRY,
)
MEMBERSHIPS = Gauge(
    "workos_forwarder_memberships",
    "(user, organization) rows in the journal's membership table, deleted ones included;"
    " checked every minute.",
    registry=REGISTRY,
)
MEMBERSHIP_EVICTIONS = Counter(
    "workos_forwarder_membership_evictions",
    "Rows deleted from the journal's membership table to stay within FORWARDER_MEMBERSHIPS_MAX,"
    " least recently seen first.",
    registry=REGISTRY,
)
MEMBERSHIP_LOOKUPS = Counter(
    "workos_forwarder_membership_lookups",
    "Lookups of a user's organizations in the WorkOS API, by result (found, none, rejected, failed).",
    ["result"],
    registry=REGISTRY,
)


class Exposition:
    """``/metrics`` rendered fresh, unless clients ask faster than a small budget allows.

    Rendering the registry costs about 1.4 ms of CPU, five times a ``/healthz``: a thousand
    connections pipelining ``GET /metrics`` kept the event loop busy for seconds. A scraper or
    a person gets a fresh rendering (a burst of ``burst``, then ``per_second``); past that, the
    last rendering of the same format is served again, at most ``1 / per_second`` old.
    """

    def __init__(self, registry: CollectorRegistry, *, burst: float = 10.0, per_second: float = 5.0) -> None:
        self._registry = registry
        self._burst = burst
        self._per_second = per_second
        self._tokens = burst
        self._refilled = time.monotonic()
        self._last: dict[str, bytes] = {}

    def render(self, accept: str) -> tuple[bytes, str]:
        """The body and content type for a request's ``Accept`` header."""
        encoder, content_type = choose_encoder(accept)
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._per_second)
        self._refilled = now
        last = self._last.get(content_type)
        if last is not None and self._tokens < 1:
            return last, content_type
        self._tokens -= 1
        body = self._last[content_type] = encoder(self._registry)
        return body, content_type
