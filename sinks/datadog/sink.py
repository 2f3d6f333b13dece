"""The Datadog sink's service: posts prepared records to the logs intake, within its limits.

Requests carry at most 1000 records and 4.25 MB, leaving headroom under the intake's 5 MB.
A record that cannot be prepared (its stored bytes do not decode) belongs to that record,
not to the intake: it is named in ``PermanentError.event_ids`` with the true reason once the
rest of the batch is delivered, and never retried as if the network were down.

One ``send`` owns its batch: a 413 or 400 halves the request down to the records Datadog
refuses (``sinks.base.isolate``), returned as ``PermanentError(event_ids=...)`` for the
dead-letter table, and anything transient is raised as ``RetryableError`` so the delivery
loop backs off while the journal keeps the batch. What each answer means, the deadline and
the metrics are ``sinks.http``'s; retrying and sleeping are the loop's job.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from sinks.base import (
    DEFAULT_CAP_S,
    METRICS_REGISTRY,
    EventFilter,
    Record,
    Refused,
    run_in_background,
)
from sinks.datadog.records import MAX_LOG_BYTES, maybe_too_deep, outside_window, rewrite
from sinks.http import (
    GZIP_LEVEL,
    Answer,
    Answers,
    Fixes,
    HttpDestination,
    chunks,
    excerpt,
    gzip,
    isolate_each,
    not_delivered,
)

logger = logging.getLogger("sinks.datadog")

USER_AGENT = "workos-forwarder"
ORIGIN = "workos-forwarder"
"""``DD-EVP-ORIGIN``: Datadog's own shippers name themselves on every intake request."""
ORIGIN_VERSION = importlib.metadata.version("workos-forwarder")
"""``DD-EVP-ORIGIN-VERSION``: the installed package's version."""
MAX_ENTRIES = 1000
MAX_REQUEST_BYTES = 4_250_000
BACKFILL_POLICIES = ("restamp", "keep", "drop")
REQUEST_DEADLINE_S = 30.0
"""The whole request, body and answer included: a trickling intake cannot hold the sink longer."""
FIXES = Fixes(
    credentials="check DD_API_KEY and that DD_SITE matches the key's Datadog site",
    address="check DD_LOGS_URL / DD_SITE",
)

BACKFILL_DROPPED = Counter(
    "workos_forwarder_sink_backfill_dropped",
    "Records a sink skipped because they are dated outside what the destination accepts "
    "(DD_BACKFILL_POLICY=drop).",
    ["sink"],
    registry=METRICS_REGISTRY,
)


def identity_headers(user_agent: str = USER_AGENT) -> dict[str, str]:
    """How every request of the forwarder to Datadog names its sender (intake, doctor, apply)."""
    return {"User-Agent": user_agent, "DD-EVP-ORIGIN": ORIGIN, "DD-EVP-ORIGIN-VERSION": ORIGIN_VERSION}


def request_headers(api_key: str, *, user_agent: str = USER_AGENT, gzip: bool = False) -> dict[str, str]:
    """The headers of a request to the logs intake: the one place to add a header to them all."""
    headers = {"DD-API-KEY": api_key, "Content-Type": "application/json", **identity_headers(user_agent)}
    if gzip:
        headers["Content-Encoding"] = "gzip"
    return headers


class _Postable(Protocol):
    """One record ready to post: its event id and its JSON bytes (within MAX_LOG_BYTES).

    A record posted as stored is its own ``_Postable`` (a journal ``Entry`` has both): no
    object is made for it. Only a rewritten record gets a ``_Rewritten``.
    """

    @property
    def event_id(self) -> str: ...

    @property
    def json(self) -> bytes: ...


@dataclass(slots=True)
class _Rewritten:
    """A record whose bytes ``records.rewrite`` changed (restamped, cut): what is posted instead."""

    event_id: str
    json: bytes


def _size(item: _Postable) -> int:
    return len(item.json)


def _requests(prepared: list[_Postable]) -> list[list[_Postable]]:
    """``prepared`` split into requests within the intake's limits (``chunks``).

    A batch that fits in one request (every batch of up to 1000 ordinary records) is that
    request: its size is summed without the Python call per record ``chunks`` makes.
    """
    if 0 < len(prepared) <= MAX_ENTRIES:
        size = sum(map(len, [item.json for item in prepared])) + len(prepared) + 1  # "[", "]", commas
        if size <= MAX_REQUEST_BYTES:
            return [prepared]
    return chunks(prepared, _size, max_items=MAX_ENTRIES, max_bytes=MAX_REQUEST_BYTES, framing=2, separator=1)


class DatadogSink:
    """Datadog Logs intake over httpx (keep-alive), gzip (zlib-ng) and orjson. See the module docstring."""

    max_batch = MAX_ENTRIES

    def __init__(
        self,
        *,
        api_key: str,
        url: str,
        events: EventFilter,
        compression_level: int = GZIP_LEVEL,
        max_in_flight: int = 4,
        backfill_policy: str = "restamp",
        linger_s: float = 1.0,
        max_retry_after_s: float = DEFAULT_CAP_S,
        name: str = "datadog",
    ) -> None:
        self.name = name
        self.linger_s = linger_s
        self.events = events
        self.url = url
        self._compression_level = compression_level
        self._backfill_policy = backfill_policy
        answers = Answers(name, url, FIXES, max_retry_after_s)
        self.shown_url = answers.shown_url
        """The URL as logs and errors show it: without a password."""
        self._destination = HttpDestination(
            answers,
            headers=request_headers(api_key, gzip=bool(compression_level)),
            max_in_flight=max_in_flight,
            deadline_s=REQUEST_DEADLINE_S,
        )
        # Event ids the intake accepted during a send() that failed as a whole: the delivery
        # loop retries the same batch, and these need not be posted (and indexed) twice.
        self._accepted: set[str] = set()

    async def send(self, batch: Sequence[Record]) -> None:
        prepared, refused = await run_in_background(self._prepare, batch, time.time())
        requests = _requests(prepared)
        for item, reason in await isolate_each(requests, self._attempt):
            logger.warning("datadog rejected a record", extra={"sink": self.name, "event_id": item.event_id})
            refused.append((item.event_id, reason))
        self._accepted.clear()
        if refused:
            raise not_delivered(self.name, refused)

    async def close(self) -> None:
        await self._destination.aclose()

    def _prepare(self, batch: Sequence[Record], now: float) -> tuple[list[_Postable], list[tuple[str, str]]]:
        """The bytes to post for each record the intake has not accepted yet, and the records
        that cannot be posted at all, with the reason (``(event_id, reason)``).

        A stored record is already a valid Datadog log, so it is posted as stored; only one
        dated outside the intake's window, over its size limit or possibly nested too deep is
        decoded and rewritten (``records``). One record failing that never fails the others.
        """
        prepared: list[_Postable] = []
        unprepared = []
        for record in batch:
            if record.event_id in self._accepted:
                continue
            restamp = self._backfill_policy != "keep" and outside_window(record.time, now)
            if restamp and self._backfill_policy == "drop":
                BACKFILL_DROPPED.labels(self.name).inc()
                continue
            body = record.json
            if restamp or len(body) > MAX_LOG_BYTES or maybe_too_deep(body):
                try:
                    prepared.append(_Rewritten(record.event_id, rewrite(body, now if restamp else None)))
                except (ValueError, TypeError, RecursionError) as exc:  # orjson's errors included
                    reason = f"{self.name}: cannot prepare record {record.event_id}: {exc}"
                    logger.warning(reason, extra={"sink": self.name, "event_id": record.event_id})
                    unprepared.append((record.event_id, reason))
                continue
            prepared.append(record)
        return prepared, unprepared

    async def _attempt(self, items: Sequence[_Postable]) -> Refused[_Postable] | None:
        """Post ``items`` once: None when accepted, Refused on 400/413, RetryableError otherwise."""
        # The records are copied once, by the join: "[" + joined + "]" copied the whole
        # request twice more (a megabyte or more per full batch).
        parts = [item.json for item in items] or [b""]
        parts[0] = b"[" + parts[0]
        parts[-1] += b"]"
        body = b",".join(parts)
        if self._compression_level:
            body = await gzip(body, self._compression_level)
        response, answer = await self._destination.post(self.url, body)
        if answer is Answer.DELIVERED:
            self._accepted.update(item.event_id for item in items)
            return None
        status, detail = response.status_code, excerpt(response.text)
        if answer is Answer.REFUSED:
            about = f" for event {items[0].event_id}" if len(items) == 1 else ""
            return Refused(f"{self.name}: HTTP {status}{about}: {detail}")
        raise self._destination.answers.error(status, answer, detail, headers=response.headers)
