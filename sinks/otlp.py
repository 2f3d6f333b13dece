"""OTLP logs sink: one OpenTelemetry log record per WorkOS event, over OTLP/HTTP protobuf.

It drives opentelemetry-sdk's own ``OTLPLogExporter`` rather than a hand-written client, so
the standard ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, compression, timeout,
TLS files) behave exactly as in every other OpenTelemetry SDK user. They are read from the
mapping given to ``create`` (the process environment merged with ``FORWARDER_CONFIG``) with
the exporter's own precedence: the ``_LOGS_`` variant first, then the generic one.

The exporter retries 429/502/503/504 and connection errors within its timeout; when it
still reports failure the sink raises ``RetryableError`` and the journal cursor stays put,
so nothing is lost while the collector is down. ``export`` blocks, so it runs in a thread.

A record never stalls the sink. OTLP has ranges JSON does not: timestamps are uint64
nanoseconds since 1970, so a ``created_at`` before 1970 or after 2554 is clamped into
[0, 2**64-1] (0 is OTLP's "unknown": backends then use the observed time), its original kept
in ``workos.created_at``; integers beyond int64 become strings; values nested deeper than
collectors decode become their JSON text, or a marker past what orjson writes (flagged
``workos.truncated``). When an export fails without any HTTP
answer and without a transport error, the failure was local: each record is encoded alone
with the exporter's own encoder, and the ones that fail are returned as
``PermanentError(event_ids=...)`` with the encoder's message, after the others are
delivered, instead of being retried as if the collector were down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
import requests
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.re import parse_env_headers

from sinks.base import (
    DEFAULT_CAP_S,
    SINK_BYTES,
    SINK_LAST_SUCCESS,
    SINK_REQUESTS,
    SINK_RETRIES,
    ConfigError,
    EventFilter,
    PermanentError,
    Record,
    RetryableError,
    mask_url,
    max_retry_after,
    retry_after_seconds,
    run_in_background,
)
from sinks.request_deadline import DeadlineSession

logger = logging.getLogger(__name__)

MAX_BATCH = 512
DEFAULT_REQUEST_DEADLINE_S = 10.0
"""A request's deadline when the exporter passes no timeout (it passes OTEL_EXPORTER_OTLP_TIMEOUT)."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1
# Nested objects become dotted attribute keys down to MAX_KEY_DEPTH levels; below that a
# value is an OTLP kvlist/array, at most MAX_VALUE_DEPTH levels deep (each level costs a
# collector 2-3 protobuf message levels, and Python protobuf decodes only 100), then its
# JSON text. What orjson cannot write (over 255 levels) becomes NESTING_MARK.
MAX_KEY_DEPTH = 32
MAX_VALUE_DEPTH = 16
NESTING_MARK = "[nested too deep]"
SCOPE = InstrumentationScope("workos-forwarder")
SEVERITIES = {
    "error": (SeverityNumber.ERROR, "ERROR"),
    "warning": (SeverityNumber.WARN, "WARN"),
    "info": (SeverityNumber.INFO, "INFO"),
}
# Normalized (Datadog-style) attributes and their OpenTelemetry semantic-convention names.
SEMCONV = (
    (("usr", "id"), "user.id"),
    (("usr", "email"), "user.email"),
    (("usr", "name"), "user.name"),
    (("network", "client", "ip"), "client.address"),
    (("http", "useragent"), "user_agent.original"),
    (("error", "kind"), "error.type"),
    (("error", "message"), "error.message"),
)
CREDENTIAL_PROVIDER_VARIABLES = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_LOGS_CREDENTIAL_PROVIDER",
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
        self.endpoint = mask_url(str(exporter_options["endpoint"]))  # for messages: no password
        self._max_retry_after_s = max_retry_after_s
        self._service_name = service_name
        self._resource_attributes = dict(resource_attributes or {})
        self._resources: dict[tuple[str, str], Resource] = {}
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
            raise PermanentError(
                f"{self.name}: {len(refused)} record(s) not delivered; first: {refused[0][1]}",
                event_ids=[event_id for event_id, _ in refused],
            )

    async def close(self) -> None:
        self._closing = True
        await asyncio.to_thread(self._exporter.shutdown)

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

    def _attempt(self, pending: list[_Pending]) -> _Attempt:
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

    async def _export(self, pending: list[_Pending]) -> list[tuple[str, str]]:
        """Export; isolate what the collector (400/413) or the encoder refuses, as (id, reason)."""
        attempt = await run_in_background(self._attempt, pending)
        status = attempt.status
        if attempt.success:
            SINK_LAST_SUCCESS.labels(self.name).set(time.time())
            return []
        if status is None:
            return await self._failed_without_answer(pending, attempt)
        if status in (400, 413):
            if len(pending) == 1:
                event_id = pending[0].event_id
                return [(event_id, f"{self.name}: HTTP {status} from {self.endpoint} for event {event_id}")]
            middle = len(pending) // 2
            return await self._export(pending[:middle]) + await self._export(pending[middle:])
        if status in (401, 403):
            raise RetryableError(
                f"{self.name}: HTTP {status} from {self.endpoint}: credentials rejected; "
                "check OTEL_EXPORTER_OTLP_HEADERS (or OTEL_EXPORTER_OTLP_LOGS_HEADERS)",
                unhealthy=True,
            )
        if status in (408, 429) or status >= 500:
            raise RetryableError(
                f"{self.name}: HTTP {status} from {self.endpoint}", retry_after=attempt.retry_after
            )
        # 404, 405, 415: the URL is not an OTLP/HTTP logs endpoint; an operator must fix it.
        raise RetryableError(
            f"{self.name}: unexpected HTTP {status} from {self.endpoint}; check OTEL_EXPORTER_OTLP_ENDPOINT "
            "(the sink adds /v1/logs) or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT (used as given)",
            unhealthy=True,
        )

    async def _failed_without_answer(
        self, pending: list[_Pending], attempt: _Attempt
    ) -> list[tuple[str, str]]:
        """No HTTP answer: the network, or a local failure. Only records proven bad are refused.

        Encoding each record alone with the exporter's own encoder finds the ones that cannot
        be encoded; the rest are exported again. If none fails alone and the session saw no
        transport error either, the exporter refused locally (its request-size limit): halve.
        """
        if attempt.transport_error is None and not self._closing:
            broken = await run_in_background(_unencodable, pending)
            if broken:
                refused = [
                    (
                        pending[index].event_id,
                        f"{self.name}: cannot encode record {pending[index].event_id}: {why}",
                    )
                    for index, why in broken.items()
                ]
                for event_id, reason in refused:
                    logger.warning(reason, extra={"sink": self.name, "event_id": event_id})
                rest = [item for index, item in enumerate(pending) if index not in broken]
                return refused + (await self._export(rest) if rest else [])
            if self._observed and len(pending) > 1:
                middle = len(pending) // 2
                return await self._export(pending[:middle]) + await self._export(pending[middle:])
            if self._observed:
                event_id = pending[0].event_id
                detail = attempt.error or "no HTTP request was made; see the exporter's log"
                return [(event_id, f"{self.name}: the exporter did not send record {event_id}: {detail}")]
        SINK_REQUESTS.labels(self.name, "error").inc()
        SINK_RETRIES.labels(self.name, "error").inc()
        detail = attempt.transport_error or attempt.error or "collector unreachable?"
        raise RetryableError(f"{self.name}: export to {self.endpoint} failed: {detail}")

    def _transport_failed(self, error: str) -> None:
        with self._status_lock:
            self._last_transport_error = error
            self._last_status = None  # a status the response hook saw on a broken answer does not count

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """requests response hook, called in the exporter's thread for every attempt."""
        status = response.status_code
        status_class = f"{status // 100}xx"
        SINK_REQUESTS.labels(self.name, status_class).inc()
        body = response.request.body
        SINK_BYTES.labels(self.name).inc(len(body) if isinstance(body, bytes | str) else 0)
        if 200 <= status < 300:
            self._warn_partial_success(response)
        elif status in (408, 429) or status >= 500:
            SINK_RETRIES.labels(self.name, status_class).inc()
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

    def _to_log(self, stored: Record) -> ReadableLogRecord:
        """One OTLP log record; raises ValueError/TypeError when the stored JSON is unusable."""
        record = orjson.loads(stored.json)
        if not isinstance(record, dict):
            raise ValueError(f"the stored record is a JSON {type(record).__name__}, not an object")
        workos = record.get("workos") or {}
        severity, severity_text = SEVERITIES.get(str(record.get("status")), SEVERITIES["info"])
        attributes: dict[str, Any] = {}
        for path, semconv_name in SEMCONV:
            value = _dig(record, path)
            if value is not None:
                attributes[semconv_name] = _encodable(value)
        outcome = _dig(record, ("evt", "outcome"))
        if outcome is not None:
            attributes["workos.outcome"] = _encodable(outcome)
        if _flatten("workos", workos, attributes):
            attributes["workos.truncated"] = True
        timestamp, clamped = _unix_nanos(stored.time)
        if clamped:
            attributes.setdefault("workos.created_at", str(record.get("date")))
        return ReadableLogRecord(
            log_record=LogRecord(
                timestamp=timestamp,
                observed_timestamp=_unix_nanos(time.time())[0],
                severity_number=severity,
                severity_text=severity_text,
                body=_encodable(record.get("message")),
                attributes=attributes,
                event_name=str(workos.get("event") or _dig(record, ("evt", "name")) or ""),
            ),
            resource=self._resource(record),
            instrumentation_scope=SCOPE,
        )

    def _resource(self, record: dict[str, Any]) -> Resource:
        """One Resource per (service, environment): the encoder groups records by it."""
        service = self._service_name or str(record.get("service") or "workos-events")
        environment = _tag(str(record.get("ddtags") or ""), "env")
        key = (service, environment)
        if key not in self._resources:
            attributes = {"deployment.environment.name": environment} if environment else {}
            attributes.update(self._resource_attributes)
            attributes["service.name"] = service
            self._resources[key] = Resource(attributes)
        return self._resources[key]


def _dig(record: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _unix_nanos(seconds: float) -> tuple[int, bool]:
    """Epoch seconds as OTLP's uint64 nanoseconds (millisecond precision, as stored), and
    whether the value had to be clamped into [0, 2**64-1] (before 1970, after 2554; a
    non-finite time, which no journal should hold, becomes 0, OTLP's "unknown")."""
    if not math.isfinite(seconds):
        return 0, True
    nanos = round(seconds * 1000) * 1_000_000
    clamped = min(max(nanos, 0), UINT64_MAX)
    return clamped, clamped != nanos


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> bool:
    """Nested objects become dotted keys; lists and scalars stay OTLP values; nulls are left out.

    Iterative, so any depth is safe; objects below MAX_KEY_DEPTH levels stay one value
    (see ``_encodable``). Returns whether anything was cut.
    """
    truncated = False
    stack: list[tuple[str, Any, int]] = [(prefix, value, 0)]
    while stack:
        key, item, depth = stack.pop()
        if isinstance(item, Mapping) and depth < MAX_KEY_DEPTH:
            # Reversed onto the stack so the keys come out in the record's order.
            stack.extend((f"{key}.{name}", child, depth + 1) for name, child in reversed(list(item.items())))
        elif item is not None:
            cut: list[bool] = []
            into[key] = _encodable(item, cut=cut)
            truncated = truncated or bool(cut)
    return truncated


def _encodable(value: Any, levels: int = MAX_VALUE_DEPTH, *, cut: list[bool] | None = None) -> Any:
    """A JSON value as an OTLP attribute value that every collector can decode.

    JSON allows integers protobuf's int64 cannot hold (they become strings: one would fail
    every export of its batch), and nesting deeper than a collector decodes (below
    ``levels`` a container becomes its JSON text, or NESTING_MARK past orjson's limit).
    Appends to ``cut`` when it shortened anything.
    """
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        return str(value)
    if isinstance(value, list | Mapping):
        if levels <= 0:
            if cut is not None:
                cut.append(True)
            try:
                return orjson.dumps(value).decode()
            except orjson.JSONEncodeError:
                return NESTING_MARK
        if isinstance(value, list):
            return [_encodable(item, levels - 1, cut=cut) for item in value]
        return {str(key): _encodable(item, levels - 1, cut=cut) for key, item in value.items()}
    return value


def _tag(ddtags: str, name: str) -> str:
    for tag in ddtags.split(","):
        key, _, value = tag.partition(":")
        if key == name and value:
            return value
    return ""


def exporter_options(env: Mapping[str, str]) -> dict[str, Any]:
    """The exporter's settings from ``env``, with the OTLP precedence (``_LOGS_`` variant first).

    ``OTEL_EXPORTER_OTLP_TIMEOUT`` is in seconds, as the installed Python exporter reads it.
    Public because ``workos-forwarder doctor`` probes the collector with exactly these
    settings (endpoint, headers, TLS files), so what it proves is what the sink will use.
    """

    def pick(suffix: str) -> tuple[str, str]:
        """(the variable that is set, its value), the logs-specific one first."""
        for variable in (f"OTEL_EXPORTER_OTLP_LOGS_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"):
            if value := env.get(variable, "").strip():
                return variable, value
        return "", ""

    variable, endpoint = pick("ENDPOINT")
    if variable == "OTEL_EXPORTER_OTLP_ENDPOINT":
        endpoint = endpoint.removesuffix("/") + "/v1/logs"
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            variable,
            f"{endpoint!r} is not an http(s) URL; this sink speaks OTLP/HTTP, e.g. http://collector:4318",
        )
    options: dict[str, Any] = {
        "endpoint": endpoint,
        "headers": parse_env_headers(pick("HEADERS")[1], liberal=True),
    }
    variable, timeout = pick("TIMEOUT")
    if timeout:
        try:
            options["timeout"] = float(timeout)
        except ValueError:
            raise ConfigError(variable, f"{timeout!r} is not a number of seconds") from None
    variable, compression = pick("COMPRESSION")
    if compression:
        allowed = {
            "none": Compression.NoCompression,
            "gzip": Compression.Gzip,
            "deflate": Compression.Deflate,
        }
        if compression.lower() not in allowed:
            raise ConfigError(variable, f"{compression!r} is not one of none, gzip, deflate")
        options["compression"] = allowed[compression.lower()]
    for suffix, option in (
        ("CERTIFICATE", "certificate_file"),
        ("CLIENT_KEY", "client_key_file"),
        ("CLIENT_CERTIFICATE", "client_certificate_file"),
    ):
        if path := pick(suffix)[1]:
            options[option] = path
    return options


def _resource_attributes(raw: str) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` as the SDK parses it: ``k=v`` pairs, values URL-decoded."""
    attributes = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    return attributes


def create(env: Mapping[str, str]) -> OtlpSink | None:
    """The OTLP sink when an OTLP endpoint variable is set, else None."""
    if not (
        env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    ):
        return None
    return OtlpSink(
        exporter_options=exporter_options(env),
        events=EventFilter.from_env(env, "OTLP"),
        service_name=env.get("OTEL_SERVICE_NAME", "").strip() or None,
        resource_attributes=_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
        # A credential-provider session is the exporter's to load; ours would replace it.
        instrument_session=not any(env.get(variable) for variable in CREDENTIAL_PROVIDER_VARIABLES),
        max_retry_after_s=max_retry_after(env),
    )


def _unencodable(pending: list[_Pending]) -> dict[int, str]:
    """Index -> encoder message for each record the exporter's encoder cannot encode alone."""
    broken = {}
    for index, item in enumerate(pending):
        try:
            encode_logs([item.log]).SerializeToString()
        except Exception as exc:  # the encoder raises ValueError, TypeError, protobuf errors...
            broken[index] = f"{type(exc).__name__}: {exc}"
    return broken
