"""The OTLP sink's service: exports logs with the SDK's ``OTLPLogExporter``, in a thread.

The exporter retries 429/502/503/504 and connection errors within its timeout; when it
still reports failure the sink raises ``RetryableError`` and the journal cursor stays put,
so nothing is lost while the collector is down. ``export`` blocks, so it runs in a thread.
The exporter leaves the HTTP exchange to itself; a requests response hook sees each answer,
so what it means, the reasons naming the variable to fix and the metrics are
``sinks.http``'s, as for every HTTP sink, and a refused request (400/413) is halved with
``sinks.base.isolate``.

A record never stalls the sink. When an export fails without any HTTP answer and without a
transport error, the failure was local: each record is encoded alone with the exporter's
own encoder, and the ones that fail are returned as ``PermanentError(event_ids=...)`` with
the encoder's message, after the others are delivered, instead of being retried as if the
collector were down.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult

from sinks.base import (
    DEFAULT_CAP_S,
    SINK_LAST_SUCCESS,
    EventFilter,
    Record,
    Refused,
    isolate,
    retry_after_seconds,
    run_in_background,
)
from sinks.http import Answer, Answers, Fixes, classify, not_delivered
from sinks.otlp.records import LogBuilder
from sinks.request_deadline import DeadlineSession

logger = logging.getLogger("sinks.otlp")

MAX_BATCH = 512
DEFAULT_REQUEST_DEADLINE_S = 10.0
"""A request's deadline when the exporter passes no timeout (it passes OTEL_EXPORTER_OTLP_TIMEOUT)."""
FIXES = Fixes(
    credentials="check OTEL_EXPORTER_OTLP_HEADERS (or OTEL_EXPORTER_OTLP_LOGS_HEADERS)",
    address="check OTEL_EXPORTER_OTLP_ENDPOINT (the sink adds /v1/logs) or "
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT (used as given)",
)


@dataclass(frozen=True, slots=True)
class _Pending:
    """A record converted for export, with its event id (for dead-lettering it by id)."""

    event_id: str
    log: ReadableLogRecord


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What one ``OTLPLogExporter.export`` call did, as far as the sink could observe it."""

    success: bool
    status: int | None
    retry_after: float | None
    transport_error: str | None
    error: str | None


class _ObservedSession(DeadlineSession):
    """A requests session that reports transport failures, which the exporter only logs.

    With it, an export that failed with neither an HTTP answer nor a transport error is
    known to have failed locally (encoding, the exporter's size limit), not on the network.
    Each request ends by the exporter's timeout in total (``DeadlineSession``), so a
    collector that answers byte by byte cannot hold the sink.
    """

    def __init__(self, on_error: Callable[[str], None]) -> None:
        super().__init__(default_deadline_s=DEFAULT_REQUEST_DEADLINE_S)
        self._on_error = on_error

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        try:
            response = super().send(request, **kwargs)
        except requests.RequestException as exc:
            self._on_error(f"{type(exc).__name__}: {exc}")
            raise
        if response.ok and not _framed(response):
            # http.client takes the end of the stream for the end of the headers, so an answer
            # cut inside them ("HTTP/1.1 202 Accepted\r\nContent-Ty") looks like a success
            # with an empty body: the batch would be counted delivered and lost.
            reason = (
                f"the answer from {request.url} ended before its headers did (HTTP {response.status_code})"
            )
            self._on_error(f"IncompleteAnswer: {reason}")
            raise requests.ConnectionError(reason, request=request, response=response)
        return response


def _framed(response: requests.Response) -> bool:
    """Whether the answer said where its body ends, as every HTTP/1.1 collector's answer does."""
    headers = response.headers
    return "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()


class OtlpSink:
    """Exports records with an ``OTLPLogExporter``; see the module docstring."""

    max_batch = MAX_BATCH

    def __init__(
        self,
        *,
        exporter_options: Mapping[str, Any],
        events: EventFilter,
        service_name: str | None = None,
        resource_attributes: Mapping[str, str] | None = None,
        instrument_session: bool = True,
        max_retry_after_s: float = DEFAULT_CAP_S,
        name: str = "otlp",
    ) -> None:
        self.name = name
        self.events = events
        self._answers = Answers(name, str(exporter_options["endpoint"]), FIXES, max_retry_after_s)
        self.endpoint = self._answers.shown_url  # for messages: no password
        self._max_retry_after_s = max_retry_after_s
        self._builder = LogBuilder(service_name, resource_attributes or {})
        # The exporter reports success or failure only; a response hook on its requests
        # session sees every HTTP attempt (status, size, Retry-After) for the metrics.
        self._last_status: int | None = None
        self._last_retry_after: float | None = None
        self._last_transport_error: str | None = None
        self._status_lock = threading.Lock()
        self._observed = instrument_session
        self._closing = False
        session = None
        if instrument_session:
            session = _ObservedSession(self._transport_failed)
            session.hooks["response"].append(self._observe)
        self._exporter = OTLPLogExporter(session=session, **exporter_options)
        self._exporting = asyncio.Lock()

    async def send(self, batch: Sequence[Record]) -> None:
        pending, refused = await run_in_background(self._convert, batch)
        if pending:
            async with self._exporting:
                refused += await self._export(pending)
        if refused:
            raise not_delivered(self.name, refused)

    async def close(self) -> None:
        self._closing = True
        await asyncio.to_thread(self._exporter.shutdown)

    def _to_log(self, stored: Record) -> ReadableLogRecord:
        """One OTLP log record (``records.LogBuilder``); ValueError/TypeError when unusable."""
        return self._builder.to_log(stored)

    def _convert(self, batch: Sequence[Record]) -> tuple[list[_Pending], list[tuple[str, str]]]:
        """Each record as an OTLP log, and ``(event_id, reason)`` for those that cannot be one."""
        pending, refused = [], []
        for record in batch:
            try:
                pending.append(_Pending(record.event_id, self._to_log(record)))
            except (ValueError, TypeError, RecursionError) as exc:  # orjson's errors included
                reason = f"{self.name}: cannot convert record {record.event_id}: {exc}"
                logger.warning(reason, extra={"sink": self.name, "event_id": record.event_id})
                refused.append((record.event_id, reason))
        return pending, refused

    def _attempt(self, pending: Sequence[_Pending]) -> _Attempt:
        """One exporter call (in a background thread), with what the session observed."""
        with self._status_lock:
            self._last_status = self._last_retry_after = self._last_transport_error = None
        error = None
        try:
            result = self._exporter.export([item.log for item in pending])
        except Exception as exc:  # older exporters raise encoding errors out of export()
            result, error = LogRecordExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        with self._status_lock:
            return _Attempt(
                success=result is LogRecordExportResult.SUCCESS,
                status=self._last_status,
                retry_after=self._last_retry_after,
                transport_error=self._last_transport_error,
                error=error,
            )

    async def _export(self, pending: Sequence[_Pending]) -> list[tuple[str, str]]:
        """Export; isolate what the collector (400/413) or the encoder refuses, as (id, reason)."""
        refused = await isolate(pending, self._export_once)
        return [(item.event_id, reason) for item, reason in refused]

    async def _export_once(self, pending: Sequence[_Pending]) -> Refused[_Pending] | None:
        """One export of ``pending``: None when delivered, Refused to halve, else RetryableError."""
        attempt = await run_in_background(self._attempt, pending)
        status = attempt.status
        if attempt.success:
            SINK_LAST_SUCCESS.labels(self.name).set(time.time())
            return None
        if status is None:
            return await self._failed_without_answer(pending, attempt)
        answer = classify(status)
        if answer is Answer.REFUSED:
            about = f" for event {pending[0].event_id}" if len(pending) == 1 else ""
            return Refused(f"{self.name}: HTTP {status} from {self.endpoint}{about}")
        raise self._answers.error(status, answer, retry_after=attempt.retry_after)

    async def _failed_without_answer(
        self, pending: Sequence[_Pending], attempt: _Attempt
    ) -> Refused[_Pending] | None:
        """No HTTP answer: the network, or a local failure. Only records proven bad are refused.

        Encoding each record alone with the exporter's own encoder finds the ones that cannot
        be encoded; the rest are exported again. If none fails alone and the session saw no
        transport error either, the exporter refused locally (its request-size limit): halve.
        """
        if attempt.transport_error is None and not self._closing:
            broken = await run_in_background(_unencodable, pending)
            if broken:
                named = [
                    (pending[index], f"{self.name}: cannot encode record {pending[index].event_id}: {why}")
                    for index, why in broken.items()
                ]
                for item, reason in named:
                    logger.warning(reason, extra={"sink": self.name, "event_id": item.event_id})
                rest = [item for index, item in enumerate(pending) if index not in broken]
                return Refused(named[0][1], named + (await isolate(rest, self._export_once) if rest else []))
            if self._observed:
                detail = attempt.error or "no HTTP request was made; see the exporter's log"
                about = f"record {pending[0].event_id}" if len(pending) == 1 else f"{len(pending)} records"
                return Refused(f"{self.name}: the exporter did not send {about}: {detail}")
        detail = attempt.transport_error or attempt.error or "collector unreachable?"
        raise self._answers.unreachable(detail)

    def _transport_failed(self, error: str) -> None:
        with self._status_lock:
            self._last_transport_error = error
            self._last_status = None  # a status the response hook saw on a broken answer does not count

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """requests response hook, called in the exporter's thread for every attempt."""
        status = response.status_code
        body = response.request.body
        answer = classify(status)
        self._answers.count(status, len(body) if isinstance(body, bytes | str) else 0, answer)
        if answer is Answer.DELIVERED:
            self._warn_partial_success(response)
        retry_after = retry_after_seconds(response.headers.get("retry-after"), cap=self._max_retry_after_s)
        with self._status_lock:
            self._last_status = status
            self._last_retry_after = retry_after

    def _warn_partial_success(self, response: requests.Response) -> None:
        """A collector may accept a request yet reject some records; the exporter ignores that."""
        if not response.content or "protobuf" not in response.headers.get("content-type", ""):
            return
        answer = ExportLogsServiceResponse()
        try:
            answer.ParseFromString(response.content)
        except ValueError:
            return
        if answer.partial_success.rejected_log_records:
            logger.warning(
                "collector rejected %d log record(s): %s",
                answer.partial_success.rejected_log_records,
                answer.partial_success.error_message,
                extra={"sink": self.name},
            )


def _unencodable(pending: Sequence[_Pending]) -> dict[int, str]:
    """Index -> encoder message for each record the exporter's encoder cannot encode alone."""
    broken = {}
    for index, item in enumerate(pending):
        try:
            encode_logs([item.log]).SerializeToString()
        except Exception as exc:  # the encoder raises ValueError, TypeError, protobuf errors...
            broken[index] = f"{type(exc).__name__}: {exc}"
    return broken
