"""The HTTP mechanics every HTTP sink shares: write a sink's ``send`` with these, not by hand.

* ``classify``: what an answer means. 2xx delivered; 400 and 413 refused (halve the request
  to find the records, ``sinks.base.isolate``); 401/403 credentials (unhealthy until fixed);
  408, 429 and 5xx retried, after the wait the answer asks for (the one ``Retry-After``
  parser, capped by ``FORWARDER_MAX_RETRY_AFTER``); anything else a wrong address
  (unhealthy).
* ``Answers``: turns an answer into the ``RetryableError`` the delivery loop acts on, with a
  reason that names the variable to fix (``Fixes``), and counts the per-request metrics
  (``workos_forwarder_sink_requests_total`` and friends) the same way for every sink.
* ``HttpDestination``: one destination over httpx (keep-alive, TLS verification, a bound on
  requests in flight) with a deadline for the whole request: httpx's timeouts are per read,
  so without it a destination answering byte by byte would hold the sink forever.
* ``chunks`` and ``gzip``: payload caps by count and bytes, and compression off the event
  loop; ``isolate_each`` sends the requests of one batch at once, each isolating what it
  refuses, and ``not_delivered`` names those records to the delivery loop.

A sink that speaks its own protocol on top (Splunk HEC's ``code``) passes its own
``classify`` to ``HttpDestination.post``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import httpx
from zlib_ng import gzip_ng

from sinks.base import (
    DEFAULT_CAP_S,
    SINK_BYTES,
    SINK_LAST_SUCCESS,
    SINK_REQUESTS,
    SINK_RETRIES,
    Attempt,
    PermanentError,
    RetryableError,
    isolate,
    mask_url,
    retry_after_from_headers,
    run_in_background,
)

logger = logging.getLogger("sinks.http")

T = TypeVar("T")

DEFAULT_DEADLINE_S = 30.0
"""The whole request, body and answer included, unless a sink sets its own."""
CONNECT_TIMEOUT_S = 10.0


class Answer(enum.Enum):
    """What one HTTP answer means for the batch it carried."""

    DELIVERED = "delivered"
    REFUSED = "refused"
    """The request was refused for what it carries: halve it to find the records."""
    RETRY = "retry"
    """Transient (busy, rate-limited, down): the same batch later, nothing dropped."""
    CREDENTIALS = "credentials"
    """The destination refused the sink's credentials: unhealthy until an operator fixes them."""
    ADDRESS = "address"
    """The URL is not the destination's intake (404, 405, 415...): unhealthy until fixed."""


def classify(status: int) -> Answer:
    """What an HTTP status means, for a destination that says no more than its status."""
    if 200 <= status < 300:
        return Answer.DELIVERED
    if status in (400, 413):
        return Answer.REFUSED
    if status in (401, 403):
        return Answer.CREDENTIALS
    if status in (408, 429) or status >= 500:
        return Answer.RETRY
    return Answer.ADDRESS


@dataclass(frozen=True, slots=True)
class Fixes:
    """What an operator must change, naming the variables, when the destination refuses the sink."""

    credentials: str
    """e.g. ``check DD_API_KEY and that DD_SITE matches the key's Datadog site``."""
    address: str
    """e.g. ``check DD_LOGS_URL / DD_SITE``."""


class Answers:
    """Answers of one destination as errors for the delivery loop, and as the sink metrics."""

    def __init__(self, sink: str, url: str, fixes: Fixes, max_retry_after_s: float = DEFAULT_CAP_S) -> None:
        self.sink = sink
        self.shown_url = mask_url(url)
        """The URL as logs and errors show it: without a password."""
        self.fixes = fixes
        self.max_retry_after_s = max_retry_after_s
        self._credentials_rejected = False

    def count(self, status: int, sent_bytes: int, answer: Answer) -> None:
        """Count one answer: requests by status class, bytes sent, retries, the last success."""
        status_class = f"{status // 100}xx"
        SINK_REQUESTS.labels(self.sink, status_class).inc()
        SINK_BYTES.labels(self.sink).inc(sent_bytes)
        if answer is Answer.DELIVERED:
            SINK_LAST_SUCCESS.labels(self.sink).set(time.time())
            if self._credentials_rejected:
                logger.info("the destination accepts the credentials again", extra={"sink": self.sink})
                self._credentials_rejected = False
        elif answer is not Answer.REFUSED:
            SINK_RETRIES.labels(self.sink, status_class).inc()

    def unreachable(self, detail: str) -> RetryableError:
        """No answer at all (refused connection, reset, deadline): counted, and retried."""
        SINK_REQUESTS.labels(self.sink, "error").inc()
        SINK_RETRIES.labels(self.sink, "error").inc()
        return RetryableError(f"{self.sink}: cannot reach {self.shown_url}: {detail}")

    def error(
        self,
        status: int,
        answer: Answer,
        detail: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        fix: str | None = None,
    ) -> RetryableError:
        """The error for an answer that delivered nothing and is not ``REFUSED``.

        The wait is read from ``headers`` (``Retry-After``, ``X-Ratelimit-Reset``) with the cap,
        or given as ``retry_after`` by a caller that parsed it already. ``fix`` replaces the
        ``Fixes`` text when the destination said more precisely what is wrong.
        """
        where = f"HTTP {status} from {self.shown_url}"
        said = f" ({detail})" if detail else ""
        if answer is Answer.CREDENTIALS:
            reason = f"{self.sink}: {where}: credentials rejected; {fix or self.fixes.credentials}{said}"
            if not self._credentials_rejected:
                logger.error(reason, extra={"sink": self.sink, "status_code": status})
                self._credentials_rejected = True
            return RetryableError(reason, unhealthy=True)
        if answer is Answer.RETRY:
            if headers is not None:
                retry_after = retry_after_from_headers(headers, cap=self.max_retry_after_s)
            return RetryableError(
                f"{self.sink}: {where}{': ' + detail if detail else ''}", retry_after=retry_after
            )
        return RetryableError(
            f"{self.sink}: unexpected {where}; {fix or self.fixes.address}{said}", unhealthy=True
        )


class HttpDestination:
    """One destination over httpx: keep-alive, a bound in flight, a whole-request deadline."""

    def __init__(
        self,
        answers: Answers,
        *,
        headers: Mapping[str, str],
        max_in_flight: int = 4,
        deadline_s: float = DEFAULT_DEADLINE_S,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        self.answers = answers
        self.deadline_s = deadline_s
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._client = httpx.AsyncClient(
            headers=dict(headers),
            timeout=httpx.Timeout(deadline_s, connect=min(CONNECT_TIMEOUT_S, deadline_s)),
            limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight),
            verify=verify,
        )

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        meaning: Callable[[httpx.Response], Answer] | None = None,
    ) -> tuple[httpx.Response, Answer]:
        """Post ``body``; the answer and what it means (``classify`` unless ``meaning`` says).

        Raises ``RetryableError`` when no complete answer came within the deadline.
        """
        async with self._in_flight:
            try:
                # asyncio.timeout rather than wait_for, which would run the post in a task of its own.
                async with asyncio.timeout(self.deadline_s):
                    response = await self._client.post(url, content=body, headers=headers)
            except (httpx.HTTPError, TimeoutError) as exc:
                detail = (
                    f"no complete answer within {self.deadline_s:g} s"
                    if isinstance(exc, TimeoutError)
                    else repr(exc)
                )
                raise self.answers.unreachable(detail) from exc
        answer = meaning(response) if meaning is not None else classify(response.status_code)
        self.answers.count(response.status_code, len(body), answer)
        return response, answer

    async def get(self, url: str) -> httpx.Response:
        """A GET within the same deadline (health checks); transport errors as ``RetryableError``."""
        try:
            async with asyncio.timeout(self.deadline_s):
                return await self._client.get(url)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise self.answers.unreachable(repr(exc)) from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def chunks(
    items: Sequence[T],
    size: Callable[[T], int],
    *,
    max_items: int,
    max_bytes: int,
    framing: int = 0,
    separator: int = 0,
) -> list[list[T]]:
    """Items split greedily into requests of at most ``max_items`` and ``max_bytes``.

    ``framing`` is what a request adds once (``[]``: 2), ``separator`` what it adds between
    items (``,``: 1). An item larger than ``max_bytes`` alone still gets a request of its own:
    the destination's answer (413) then names it.
    """
    found: list[list[T]] = []
    current: list[T] = []
    used = framing
    for item in items:
        grows = size(item) + (separator if current else 0)
        if current and (len(current) == max_items or used + grows > max_bytes):
            found.append(current)
            current, used, grows = [], framing, size(item)
        current.append(item)
        used += grows
    if current:
        found.append(current)
    return found


GZIP_LEVEL = 2
"""The gzip level of the HTTP sinks (``DD_COMPRESSION_LEVEL``'s default; Splunk HEC's with
``SPLUNK_HEC_COMPRESSION=gzip``): zlib-ng's greedy ``deflate_fast``. On the benchmark's records
it makes a request 7.6 times smaller (level 6: 10.7) for 46% of level 6's CPU, which was half
of all a delivered record cost; level 1 writes fixed Huffman codes only (6.1 times). Datadog
and Splunk price the logs they ingest, not the request bytes (docs/benchmarks.md, Delivery
cost)."""


async def gzip(body: bytes, level: int) -> bytes:
    """``body`` gzipped at ``level`` (zlib-ng: zlib's sizes in about 60% of its CPU), off the loop."""
    return await run_in_background(gzip_ng.compress, body, level)


async def isolate_each(requests: Sequence[Sequence[T]], attempt: Attempt[T]) -> list[tuple[T, str]]:
    """Send every request at once, each through ``isolate``; the items refused on their own.

    After all have finished, one ``RetryableError`` when any must be retried (``merge``): the
    delivery loop then retries the batch, while a sink may remember what was accepted.
    """
    results = await asyncio.gather(
        *(isolate(request, attempt) for request in requests), return_exceptions=True
    )
    retryable: list[RetryableError] = []
    refused: list[tuple[T, str]] = []
    for result in results:
        if isinstance(result, RetryableError):
            retryable.append(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            refused += result
    if retryable:
        raise merge(retryable)
    return refused


def merge(errors: Sequence[RetryableError]) -> RetryableError:
    """One error for several failed requests: the longest wait asked for, unhealthy if any was."""
    waits = [error.retry_after for error in errors if error.retry_after is not None]
    unhealthy = [error for error in errors if error.unhealthy]
    first = (unhealthy or errors)[0]
    return RetryableError(first.reason, retry_after=max(waits) if waits else None, unhealthy=bool(unhealthy))


def not_delivered(sink: str, refused: Sequence[tuple[str, str]]) -> PermanentError:
    """The ``PermanentError`` naming the records (``(event_id, reason)``) a send could not deliver."""
    return PermanentError(
        f"{sink}: {len(refused)} record(s) not delivered; first: {refused[0][1]}",
        event_ids=[event_id for event_id, _ in refused],
    )


def excerpt(text: str, limit: int = 500) -> str:
    """The start of an answer's body on one line, for a reason or a log."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
