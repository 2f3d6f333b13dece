"""Datadog Logs sink: posts normalized records to the HTTP logs intake (``/api/v2/logs``).

Datadog's intake has hard limits (1000 entries and 5 MB uncompressed per request, 1 MB per
log) and quiet failure modes (a log dated more than 18 h ago is accepted and then never
shows up; a log over 1 MB is cut blindly). This sink works inside those limits on purpose:

* requests carry at most 1000 records and 4.25 MB, leaving headroom under the 5 MB limit;
* a record over 1 MB is shortened here (message, then ``workos.data``/``workos.context``
  cut, ``workos.truncated: true``) so what arrives is still valid, searchable JSON;
* an event dated outside the window the intake keeps (more than 18 h ago, or more than 2 h
  ahead: a year-9999 ``created_at`` is valid WorkOS input) is restamped to now by default,
  its original time kept in ``workos.created_at`` and tagged ``backfill:true``, so a
  backfill is visible;
* a record nested deeper than orjson can encode (255 levels) has its deepest values
  replaced by a marker and is flagged ``workos.truncated: true``, rather than failing.

A record that still cannot be prepared (its stored bytes do not decode) belongs to that
record, not to the intake: it is named in ``PermanentError.event_ids`` with the true reason
once the rest of the batch is delivered, and never retried as if the network were down.

One ``send`` owns its batch: a 413 splits the request, a 400 bisects it down to the records
Datadog rejects (returned as ``PermanentError(event_ids=...)`` for the dead-letter table),
and anything transient is raised as ``RetryableError`` so the delivery loop backs off while
the journal keeps the batch. Retrying and sleeping are the loop's job, never this module's.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from prometheus_client import Counter
from zlib_ng import gzip_ng

from sinks.base import (
    DEFAULT_CAP_S,
    METRICS_REGISTRY,
    SINK_BYTES,
    SINK_LAST_SUCCESS,
    SINK_REQUESTS,
    SINK_RETRIES,
    ConfigError,
    EventFilter,
    PermanentError,
    Record,
    RetryableError,
    choice,
    duration,
    integer,
    mask_url,
    max_retry_after,
    retry_after_from_headers,
    run_in_background,
)

logger = logging.getLogger(__name__)

SITES = (
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "uk1.datadoghq.com",
    "ddog-gov.com",
    "us2.ddog-gov.com",
)


def site(env: Mapping[str, str], override: str) -> str:
    """``DD_SITE``, checked against Datadog's sites; ``override`` is the variable that names an
    address outright instead (``DD_LOGS_URL`` for the intake, ``DD_API_URL`` for the API)."""
    value = env.get("DD_SITE", "").strip().lower() or "datadoghq.com"
    if value not in SITES:
        raise ConfigError(
            "DD_SITE",
            f"{value!r} is not a Datadog site; use one of {', '.join(SITES)} "
            f"(the part after 'app.' in your Datadog URL), or set {override}",
        )
    return value


ORIGIN = "workos-forwarder"
"""``DD-EVP-ORIGIN``: Datadog's own shippers name themselves on every intake request."""
ORIGIN_VERSION = importlib.metadata.version("workos-forwarder")
"""``DD-EVP-ORIGIN-VERSION``: the installed package's version."""
MAX_ENTRIES = 1000
MAX_REQUEST_BYTES = 4_250_000
MAX_LOG_BYTES = 1_000_000
# Datadog drops dates more than 18 h old. Restamp a little earlier so a record that is
# almost 18 h old is not dropped while it is in flight or waiting for a retry.
MAX_AGE_S = 18 * 3600
# ... and dates more than about 2 h ahead.
MAX_FUTURE_S = 2 * 3600
RESTAMP_MARGIN_S = 10 * 60
# orjson encodes at most 255 nested levels (it raises past that). A rewritten record keeps
# this many, so what the sink builds always encodes, wherever the intake re-encodes it too.
MAX_NESTING = 200
NESTING_MARK = "[nested too deep]"
BACKFILL_POLICIES = ("restamp", "keep", "drop")
TRUNCATION_MARK = " [truncated]"
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
REQUEST_DEADLINE_S = 30.0
"""The whole request, body and answer included: a trickling intake cannot hold the sink longer."""

BACKFILL_DROPPED = Counter(
    "workos_forwarder_sink_backfill_dropped",
    "Records a sink skipped because they are dated outside what the destination accepts "
    "(DD_BACKFILL_POLICY=drop).",
    ["sink"],
    registry=METRICS_REGISTRY,
)


@dataclass(slots=True)
class _Prepared:
    """One record ready to post: its event id and its JSON bytes (within MAX_LOG_BYTES).

    Not frozen: one is made per record, and a frozen dataclass's __init__ costs four times more.
    """

    event_id: str
    body: bytes


@dataclass(slots=True)
class _Outcome:
    """What one send() produced: records refused (here or by the intake) and transient errors."""

    rejected: list[tuple[str, str]]
    retryable: list[RetryableError]


class DatadogSink:
    """Datadog Logs intake over httpx (keep-alive), gzip (zlib-ng) and orjson. See the module docstring."""

    max_batch = MAX_ENTRIES

    def __init__(
        self,
        *,
        api_key: str,
        url: str,
        events: EventFilter,
        compression_level: int = 6,
        max_in_flight: int = 4,
        backfill_policy: str = "restamp",
        linger_s: float = 1.0,
        max_retry_after_s: float = DEFAULT_CAP_S,
        name: str = "datadog",
    ) -> None:
        self.name = name
        self._max_retry_after_s = max_retry_after_s
        self.linger_s = linger_s
        self.events = events
        self.url = url
        self.shown_url = mask_url(url)
        """The URL as logs and errors show it: without a password."""
        self._compression_level = compression_level
        self._backfill_policy = backfill_policy
        self._in_flight = asyncio.Semaphore(max_in_flight)
        headers = {
            "DD-API-KEY": api_key,
            "Content-Type": "application/json",
            "User-Agent": "workos-forwarder",
            "DD-EVP-ORIGIN": ORIGIN,
            "DD-EVP-ORIGIN-VERSION": ORIGIN_VERSION,
        }
        if compression_level:
            headers["Content-Encoding"] = "gzip"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=REQUEST_TIMEOUT,
            limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight),
        )
        # Event ids the intake accepted during a send() that failed as a whole: the delivery
        # loop retries the same batch, and these need not be posted (and indexed) twice.
        self._accepted: set[str] = set()
        self._credentials_rejected = False

    async def send(self, batch: Sequence[Record]) -> None:
        prepared, unprepared = await run_in_background(self._prepare, batch, time.time())
        chunks = _chunks(prepared)
        outcome = _Outcome(rejected=unprepared, retryable=[])
        results = await asyncio.gather(
            *(self._deliver(chunk, outcome) for chunk in chunks), return_exceptions=True
        )
        for result in results:
            if isinstance(result, RetryableError):
                outcome.retryable.append(result)
            elif isinstance(result, BaseException):
                raise result
        if outcome.retryable:
            raise _merge(outcome.retryable)
        self._accepted.clear()
        if outcome.rejected:
            first_reason = outcome.rejected[0][1]
            raise PermanentError(
                f"{self.name}: {len(outcome.rejected)} record(s) not delivered; first: {first_reason}",
                event_ids=[event_id for event_id, _ in outcome.rejected],
            )

    async def close(self) -> None:
        await self._client.aclose()

    def _prepare(self, batch: Sequence[Record], now: float) -> tuple[list[_Prepared], list[tuple[str, str]]]:
        """The bytes to post for each record the intake has not accepted yet, and the records
        that cannot be posted at all, with the reason (``(event_id, reason)``).

        A stored record is already a valid Datadog log, so it is posted as stored; only one
        dated outside the intake's window, over its size limit or possibly nested too deep is
        decoded and rewritten. One record failing that never fails the others.
        """
        prepared = []
        unprepared = []
        for record in batch:
            if record.event_id in self._accepted:
                continue
            restamp = self._backfill_policy != "keep" and _outside_window(record.time, now)
            if restamp and self._backfill_policy == "drop":
                BACKFILL_DROPPED.labels(self.name).inc()
                continue
            body = record.json
            if restamp or len(body) > MAX_LOG_BYTES or _maybe_too_deep(body):
                try:
                    body = _rewrite(body, now if restamp else None)
                except (ValueError, TypeError, RecursionError) as exc:  # orjson's errors included
                    reason = f"{self.name}: cannot prepare record {record.event_id}: {exc}"
                    logger.warning(reason, extra={"sink": self.name, "event_id": record.event_id})
                    unprepared.append((record.event_id, reason))
                    continue
            prepared.append(_Prepared(record.event_id, body))
        return prepared, unprepared

    async def _deliver(self, chunk: list[_Prepared], outcome: _Outcome) -> None:
        """Post one chunk; split on 413, bisect on 400, raise RetryableError otherwise."""
        response = await self._post(chunk)
        status = response.status_code
        if 200 <= status < 300:
            self._accepted.update(item.event_id for item in chunk)
            return
        if status in (400, 413):
            if len(chunk) == 1:
                reason = (
                    f"{self.name}: HTTP {status} for event {chunk[0].event_id}: {_excerpt(response.text)}"
                )
                logger.warning(
                    "datadog rejected a record",
                    extra={"sink": self.name, "event_id": chunk[0].event_id, "status_code": status},
                )
                outcome.rejected.append((chunk[0].event_id, reason))
                return
            middle = len(chunk) // 2
            await self._deliver(chunk[:middle], outcome)
            await self._deliver(chunk[middle:], outcome)
            return
        raise self._retryable(response)

    async def _post(self, chunk: list[_Prepared]) -> httpx.Response:
        body = b"[" + b",".join(item.body for item in chunk) + b"]"
        if self._compression_level:
            # zlib-ng: the levels and about the sizes of zlib's gzip, in about 60% of the CPU.
            body = await run_in_background(gzip_ng.compress, body, self._compression_level)
        async with self._in_flight:
            try:
                # httpx's timeouts are per read: without a deadline for the whole request, an
                # intake answering byte by byte would hold the sink forever. asyncio.timeout
                # rather than wait_for, which would run the post in a task of its own.
                async with asyncio.timeout(REQUEST_DEADLINE_S):
                    response = await self._client.post(self.url, content=body)
            except (httpx.HTTPError, TimeoutError) as exc:
                SINK_REQUESTS.labels(self.name, "error").inc()
                SINK_RETRIES.labels(self.name, "error").inc()
                detail = (
                    f"no complete answer within {REQUEST_DEADLINE_S:g} s"
                    if isinstance(exc, TimeoutError)
                    else repr(exc)
                )
                raise RetryableError(f"{self.name}: cannot reach {self.shown_url}: {detail}") from exc
        status_class = f"{response.status_code // 100}xx"
        SINK_REQUESTS.labels(self.name, status_class).inc()
        SINK_BYTES.labels(self.name).inc(len(body))
        if response.is_success:
            SINK_LAST_SUCCESS.labels(self.name).set(time.time())
            if self._credentials_rejected:
                logger.info("datadog accepts the API key again", extra={"sink": self.name})
                self._credentials_rejected = False
        elif response.status_code not in (400, 413):
            SINK_RETRIES.labels(self.name, status_class).inc()
        return response

    def _retryable(self, response: httpx.Response) -> RetryableError:
        status = response.status_code
        detail = _excerpt(response.text)
        if status in (401, 403):
            reason = (
                f"{self.name}: HTTP {status} from {self.shown_url}: the API key was rejected; "
                f"check DD_API_KEY and that DD_SITE matches the key's Datadog site ({detail})"
            )
            if not self._credentials_rejected:
                logger.error(reason, extra={"sink": self.name, "status_code": status})
                self._credentials_rejected = True
            return RetryableError(reason, unhealthy=True)
        if status in (408, 429) or status >= 500:
            return RetryableError(
                f"{self.name}: HTTP {status} from {self.shown_url}: {detail}",
                retry_after=retry_after_from_headers(response.headers, cap=self._max_retry_after_s),
            )
        # 404, 405 and friends mean the URL is not a logs intake: an operator must fix it.
        return RetryableError(
            f"{self.name}: unexpected HTTP {status} from {self.shown_url};"
            f" check DD_LOGS_URL / DD_SITE ({detail})",
            unhealthy=True,
        )


def _merge(errors: list[RetryableError]) -> RetryableError:
    """One error for the loop: the longest wait asked for, unhealthy if any answer was."""
    waits = [error.retry_after for error in errors if error.retry_after is not None]
    unhealthy = [error for error in errors if error.unhealthy]
    first = (unhealthy or errors)[0]
    return RetryableError(first.reason, retry_after=max(waits) if waits else None, unhealthy=bool(unhealthy))


def _chunks(prepared: list[_Prepared]) -> list[list[_Prepared]]:
    """Greedy split by count and by uncompressed size (brackets and commas included)."""
    chunks: list[list[_Prepared]] = []
    current: list[_Prepared] = []
    size = 2
    for item in prepared:
        if current and (len(current) == MAX_ENTRIES or size + len(item.body) + 1 > MAX_REQUEST_BYTES):
            chunks.append(current)
            current, size = [], 2
        current.append(item)
        size += len(item.body) + 1
    if current:
        chunks.append(current)
    return chunks


def _outside_window(record_time: float, now: float) -> bool:
    """Dated where the intake would drop it: too old, or too far ahead (with a safety margin)."""
    return (
        now - record_time > MAX_AGE_S - RESTAMP_MARGIN_S
        or record_time - now > MAX_FUTURE_S - RESTAMP_MARGIN_S
    )


def _maybe_too_deep(body: bytes) -> bool:
    """Cheap pre-check: a record nested MAX_NESTING deep holds at least that many brackets.

    ``bytes.count`` runs at memory speed, so only the rare record with that many objects or
    arrays is decoded and re-encoded to find out.
    """
    return body.count(b"{") + body.count(b"[") > MAX_NESTING


def _rewrite(body: bytes, restamp_at: float | None) -> bytes:
    """The stored record, restamped to ``restamp_at`` if given, cut to nesting and size limits.

    Raises ValueError (orjson.JSONDecodeError) when the stored bytes do not decode (deeper
    than orjson's 1024-level read limit, or not a JSON object): that record cannot be posted.
    """
    record = orjson.loads(body)
    if not isinstance(record, dict):
        raise ValueError(f"the stored record is a JSON {type(record).__name__}, not an object")
    if restamp_at is not None:
        record = _restamp(record, restamp_at)
    try:
        encoded = _fit(record)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: keep what can be written
        record = _limit_nesting(record, MAX_NESTING)
        record["workos"] = {**(record.get("workos") or {}), "truncated": True}
        return _fit(record)
    if restamp_at is None and len(body) <= MAX_LOG_BYTES:
        return body  # it only looked deep: post exactly what was stored
    return encoded


def _limit_nesting(value: Any, levels: int) -> Any:
    """A copy of ``value`` whose containers deeper than ``levels`` become ``NESTING_MARK``.

    Recursion is bounded by ``levels`` (< Python's limit), whatever the input's depth.
    """
    if isinstance(value, dict):
        if levels <= 0:
            return NESTING_MARK
        return {key: _limit_nesting(item, levels - 1) for key, item in value.items()}
    if isinstance(value, list):
        if levels <= 0:
            return NESTING_MARK
        return [_limit_nesting(item, levels - 1) for item in value]
    return value


def _restamp(record: dict[str, Any], now: float) -> dict[str, Any]:
    """The record dated now, its original date kept in ``workos.created_at``, tagged ``backfill:true``."""
    workos = dict(record.get("workos") or {})
    workos.setdefault("created_at", record.get("date"))
    tags = record.get("ddtags") or ""
    return {
        **record,
        "date": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "ddtags": f"{tags},backfill:true" if tags else "backfill:true",
        "workos": workos,
    }


def _fit(record: dict[str, Any]) -> bytes:
    """The record's JSON, shortened on purpose when it is over Datadog's 1 MB per log.

    The largest of ``message``, ``workos.data`` and ``workos.context`` is cut first (an
    object becomes its JSON text, cut), so a huge payload never costs the readable message.
    """
    encoded = orjson.dumps(record)
    if len(encoded) <= MAX_LOG_BYTES:
        return encoded
    workos = {**(record.get("workos") or {}), "truncated": True}
    shortened: dict[str, Any] = {**record, "workos": workos}
    slots = ((shortened, "message"), (workos, "data"), (workos, "context"))
    while (excess := len(encoded := orjson.dumps(shortened)) - MAX_LOG_BYTES) > 0:
        candidates = [
            (len(orjson.dumps(container[key])), container, key)
            for container, key in slots
            if container.get(key) is not None and container[key] != TRUNCATION_MARK
        ]
        if sum(size for size, _, _ in candidates) <= excess:
            return _minimal(record)  # the bulk is elsewhere (a huge actor or error text)
        _, container, key = max(candidates, key=lambda candidate: candidate[0])
        # Each character removed removes at least one byte, so one cut is enough for a
        # string; an object turned into a string escapes its quotes and may need a second.
        value = container[key]
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        container[key] = text[: max(len(text) - excess - len(TRUNCATION_MARK), 0)] + TRUNCATION_MARK
    return encoded


def _minimal(record: dict[str, Any]) -> bytes:
    """For pathological records (a huge actor, thousands of keys): what identifies the event."""
    minimal: dict[str, Any] = {
        key: record[key]
        for key in ("ddsource", "service", "ddtags", "status", "date", "evt")
        if key in record
    }
    minimal["message"] = str(record.get("message", ""))[: MAX_LOG_BYTES // 8]  # <= 4 bytes a character
    workos = record.get("workos") or {}
    minimal["workos"] = {
        key: workos[key] for key in ("id", "event", "category", "created_at") if key in workos
    }
    minimal["workos"]["truncated"] = True
    return orjson.dumps(minimal)


def _excerpt(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def create(env: Mapping[str, str]) -> DatadogSink | None:
    """The Datadog sink when ``DD_API_KEY`` is set, else None. Each variable is in docs/configuration.md."""
    api_key = env.get("DD_API_KEY", "").strip()
    if not api_key:
        return None
    url = env.get("DD_LOGS_URL", "").strip()
    if url:
        if not url.startswith(("https://", "http://")):
            raise ConfigError(
                "DD_LOGS_URL", f"{url!r} is not an http(s) URL, e.g. https://proxy:8443/api/v2/logs"
            )
    else:
        url = f"https://http-intake.logs.{site(env, 'DD_LOGS_URL')}/api/v2/logs"
    level = integer(env, "DD_COMPRESSION_LEVEL", 6, minimum=0)
    if level > 9:
        raise ConfigError(
            "DD_COMPRESSION_LEVEL", f"{level} is above 9; use 0 (no compression) to 9 (smallest)"
        )
    return DatadogSink(
        api_key=api_key,
        url=url,
        events=EventFilter.from_env(env, "DD"),
        compression_level=level,
        max_in_flight=integer(env, "DD_MAX_IN_FLIGHT", 4, minimum=1),
        backfill_policy=choice(env, "DD_BACKFILL_POLICY", "restamp", BACKFILL_POLICIES),
        linger_s=duration(env, "DD_BATCH_LINGER", "1s"),
        max_retry_after_s=max_retry_after(env),
    )
