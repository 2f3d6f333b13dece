"""The webhook source: ``POST /webhooks/workos``.

Read the raw body (capped, with a deadline), verify the signature over those exact bytes,
parse, normalize and commit. The answer is 200 only once the event is in the journal; every
other outcome has its own status and a short JSON reason, and changes nothing.

Two answers exist for ``workos-forwarder doctor`` (docs/troubleshooting.md): a verified event
of the reserved type ``forwarder.doctor`` is answered 200 ``{"status":"doctor"}`` and never
stored or counted; a ``bad_signature`` answer carries ``received_sha256``, a prefix of the
SHA-256 of the body as received, so the sender can tell a modified body from a wrong secret
(it is a digest of the sender's own bytes: it tells nothing about the secret).

This is the hot path of the product, so it is a plain ASGI callable: no request object,
no middleware, one JSON encode for the record and one for the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from forwarder import catalog, metrics
from forwarder.journal import Journal, JournalUnavailable
from forwarder.logs import RateLimitedLog
from forwarder.normalize import InvalidEvent, NormalizeOptions, body_error, journal_record
from forwarder.signature import SignatureError, Verifier

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("forwarder.webhook")

_JSON_HEADERS = [(b"content-type", b"application/json")]
_CLOSE = [(b"connection", b"close")]

DOCTOR_EVENT_TYPE = "forwarder.doctor"
"""Reserved: verified, answered 200 and dropped (the ``doctor`` public-path probe)."""
BODY_DIGEST_CHARS = 16
_DOCTOR_ANSWER = b'{"status":"doctor","detail":"verified; forwarder.doctor events are never stored"}'


class _Rejected(Exception):
    def __init__(
        self, status: int, result: str, detail: str | None = None, received_sha256: str | None = None
    ) -> None:
        self.status = status
        self.result = result
        self.detail = detail
        self.received_sha256 = received_sha256


class _BodyDeadlines:
    """The body-read deadline of every request in flight, enforced by one periodic sweep.

    ``asyncio.timeout`` arms and cancels a loop timer for every request: about 5 us with
    uvloop, a fifth of the endpoint's own work, for a deadline that almost never fires.
    Here a request only records its deadline in a dict; one timer, armed while any read
    is in flight, cancels the readers that are late. A late body is answered 408 between
    the timeout and the timeout plus a tenth of it (at most one second later).
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._interval = max(min(timeout_s / 10, 1.0), 0.01)
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweep_handle: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[Any]) -> None:
        loop = task.get_loop()
        self._reading[task] = loop.time() + self.timeout_s
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_later(self._interval, self._sweep, loop)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether the sweep cancelled ``task`` for being late."""
        return task in self._expired

    def finish(self, task: asyncio.Task[Any]) -> None:
        del self._reading[task]
        self._expired.discard(task)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in self._reading.items():
            # A reader is always suspended in receive() here: the CancelledError lands there.
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._sweep_handle = loop.call_later(self._interval, self._sweep, loop) if self._reading else None


class WebhookEndpoint:
    def __init__(
        self,
        verifier: Verifier,
        journal: Journal,
        options: NormalizeOptions,
        *,
        max_body_bytes: int,
        body_timeout_s: float,
    ) -> None:
        self._verifier = verifier
        self._journal = journal
        self._options = options
        self._max_body = max_body_bytes
        self._deadlines = _BodyDeadlines(body_timeout_s)
        self._warn = RateLimitedLog(logger)
        self._arrival_delay = metrics.ARRIVAL_DELAY.labels("webhook")
        self._ack_latency = metrics.ACK_LATENCY.labels()  # bound once: a lookup per request spared
        self._results = {
            result: metrics.WEBHOOK_REQUESTS.labels(result)
            for result in (
                "accepted",
                "duplicate",
                "missing_signature",
                "malformed_signature",
                "stale_timestamp",
                "bad_signature",
                "too_large",
                "timeout",
                "bad_request",
                "unavailable",
            )
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = dict(scope["headers"])
        try:
            status, body, extra_headers = await self._handle(headers, receive, scope)
        except _Rejected as rejection:
            status = rejection.status
            # A body refused for its size or its slowness is not read further: the connection ends.
            extra_headers = _CLOSE if status == 408 or status == 413 else []
            answer = {"error": rejection.result, "detail": rejection.detail}
            if rejection.received_sha256 is not None:
                answer["received_sha256"] = rejection.received_sha256
            body = orjson.dumps(answer)
            self._results[rejection.result].inc()
        # A declared length spares uvicorn (and the sender) chunked encoding.
        response_headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(body)), *extra_headers]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
        self._ack_latency.observe(time.perf_counter() - started)

    async def _handle(
        self, headers: dict[bytes, bytes], receive: Receive, scope: Scope
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        raw = await self._read_body(headers, receive)
        signature = headers.get(b"workos-signature")
        try:
            self._verifier.verify(signature.decode("latin-1") if signature is not None else None, raw)
        except SignatureError as exc:
            client = scope.get("client")
            self._warn.warning(
                exc.reason,
                "webhook signature rejected",
                reason=exc.reason,
                detail=exc.detail,
                skew_ms=exc.skew_ms,
                client=client[0] if client else None,
            )
            digest = None
            if exc.reason == "bad_signature":
                digest = hashlib.sha256(raw).hexdigest()[:BODY_DIGEST_CHARS]
            raise _Rejected(401, exc.reason, exc.detail, digest) from None
        # Everything that could fail the commit (control characters in the id, a record too deep
        # to encode) is refused here, alone, before the event joins a group commit with others.
        try:
            event = orjson.loads(raw)
            if type(event) is dict and event.get("event") == DOCTOR_EVENT_TYPE:
                return 200, _DOCTOR_ANSWER, []
            record = journal_record(event, self._options, delivery="webhook")
        except (orjson.JSONDecodeError, InvalidEvent) as exc:
            detail = body_error(exc) if isinstance(exc, orjson.JSONDecodeError) else str(exc)
            self._warn.warning("bad_request", "verified webhook is not an event", detail=detail)
            raise _Rejected(400, "bad_request", detail) from None
        event_id, created_at = record.event_id, record.created_at
        try:
            fresh = await self._journal.append_one(record)
        except JournalUnavailable as exc:
            self._warn.warning("unavailable", "webhook not stored", event_id=event_id, error=str(exc))
            self._results["unavailable"].inc()
            body = orjson.dumps({"error": "unavailable", "detail": str(exc)})
            return 503, body, [(b"retry-after", str(exc.retry_after_s).encode())]
        if fresh:
            self._results["accepted"].inc()
            if created_at is not None:
                self._arrival_delay.observe(max(time.time() - created_at, 0.0))
            if record.event_type not in catalog.KNOWN_EVENT_TYPES:
                metrics.UNCATALOGUED_EVENTS.inc()
                catalog.UNKNOWN_TYPES.stored(record.event_type)
        else:
            self._results["duplicate"].inc()
        result = b"accepted" if fresh else b"duplicate"
        return 200, b'{"status":"' + result + b'","id":' + orjson.dumps(event_id) + b"}", []

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise _Rejected(413, "too_large", f"body over {self._max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._deadlines.start(task)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Rejected(400, "bad_request", "client disconnected")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self._max_body:
                    raise _Rejected(413, "too_large", f"body over {self._max_body} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except asyncio.CancelledError:
            # Late (our cancel, and nobody else's): answer 408. Any other cancel goes on.
            if self._deadlines.expired(task) and task.uncancel() <= cancelling:
                timeout = self._deadlines.timeout_s
                raise _Rejected(408, "timeout", f"body not received within {timeout:g} s") from None
            raise
        finally:
            self._deadlines.finish(task)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
