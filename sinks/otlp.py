"""OTLP logs sink: one OpenTelemetry log record per WorkOS event, over OTLP/HTTP protobuf.

It drives opentelemetry-sdk's own ``OTLPLogExporter`` rather than a hand-written client, so
the standard ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, compression, timeout,
TLS files) behave exactly as in every other OpenTelemetry SDK user. They are read from the
mapping given to ``create`` (the process environment merged with ``FORWARDER_CONFIG``) with
the exporter's own precedence: the ``_LOGS_`` variant first, then the generic one.

The exporter retries 429/502/503/504 and connection errors within its timeout; when it
still reports failure the sink raises ``RetryableError`` and the journal cursor stays put,
so nothing is lost while the collector is down. ``export`` blocks, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import orjson
import requests
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.re import parse_env_headers

from forwarder import metrics
from forwarder.config import ConfigError
from sinks.base import EventFilter, PermanentError, Record, RetryableError, run_in_background

logger = logging.getLogger(__name__)

MAX_BATCH = 512
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
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
        name: str = "otlp",
    ) -> None:
        self.name = name
        self.events = events
        self.endpoint = str(exporter_options["endpoint"])
        self._service_name = service_name
        self._resource_attributes = dict(resource_attributes or {})
        self._resources: dict[tuple[str, str], Resource] = {}
        # The exporter reports success or failure only; a response hook on its requests
        # session sees every HTTP attempt (status, size, Retry-After) for the metrics.
        self._last_status: int | None = None
        self._last_retry_after: float | None = None
        self._status_lock = threading.Lock()
        session = None
        if instrument_session:
            session = requests.Session()
            session.hooks["response"].append(self._observe)
        self._exporter = OTLPLogExporter(session=session, **exporter_options)
        self._exporting = asyncio.Lock()

    async def send(self, batch: Sequence[Record]) -> None:
        logs = [self._to_log(record) for record in batch]
        if not logs:
            return
        async with self._exporting:
            refused = await self._export(logs)
        if refused:
            raise PermanentError(
                f"{self.name}: the collector at {self.endpoint} refused {len(refused)} record(s) (400/413)",
                event_ids=refused,
            )

    async def close(self) -> None:
        await asyncio.to_thread(self._exporter.shutdown)

    async def _export(self, logs: list[ReadableLogRecord]) -> list[str]:
        """Export; on 400/413 halve the batch to isolate what the collector refuses (returned as ids)."""
        with self._status_lock:
            self._last_status = self._last_retry_after = None
        result = await run_in_background(self._exporter.export, logs)
        with self._status_lock:
            status, retry_after = self._last_status, self._last_retry_after
        if result is LogRecordExportResult.SUCCESS:
            metrics.SINK_LAST_SUCCESS.labels(self.name).set(time.time())
            return []
        if status is None:
            metrics.SINK_REQUESTS.labels(self.name, "error").inc()
            metrics.SINK_RETRIES.labels(self.name, "error").inc()
            raise RetryableError(f"{self.name}: export to {self.endpoint} failed (collector unreachable?)")
        if status in (400, 413):
            if len(logs) == 1:
                return [str((logs[0].log_record.attributes or {}).get("workos.id"))]
            middle = len(logs) // 2
            return await self._export(logs[:middle]) + await self._export(logs[middle:])
        if status in (401, 403):
            raise RetryableError(
                f"{self.name}: HTTP {status} from {self.endpoint}: credentials rejected; "
                "check OTEL_EXPORTER_OTLP_HEADERS (or OTEL_EXPORTER_OTLP_LOGS_HEADERS)",
                unhealthy=True,
            )
        if status in (408, 429) or status >= 500:
            raise RetryableError(f"{self.name}: HTTP {status} from {self.endpoint}", retry_after=retry_after)
        # 404, 405, 415: the URL is not an OTLP/HTTP logs endpoint; an operator must fix it.
        raise RetryableError(
            f"{self.name}: unexpected HTTP {status} from {self.endpoint}; check OTEL_EXPORTER_OTLP_ENDPOINT "
            "(the sink adds /v1/logs) or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT (used as given)",
            unhealthy=True,
        )

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """requests response hook, called in the exporter's thread for every attempt."""
        status = response.status_code
        status_class = f"{status // 100}xx"
        metrics.SINK_REQUESTS.labels(self.name, status_class).inc()
        body = response.request.body
        metrics.SINK_BYTES.labels(self.name).inc(len(body) if isinstance(body, bytes | str) else 0)
        if 200 <= status < 300:
            self._warn_partial_success(response)
        elif status in (408, 429) or status >= 500:
            metrics.SINK_RETRIES.labels(self.name, status_class).inc()
        retry_after = response.headers.get("retry-after")
        with self._status_lock:
            self._last_status = status
            self._last_retry_after = float(retry_after) if retry_after and retry_after.isdigit() else None

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
        record = orjson.loads(stored.json)
        workos = record.get("workos") or {}
        severity, severity_text = SEVERITIES.get(str(record.get("status")), SEVERITIES["info"])
        attributes: dict[str, Any] = {}
        for path, semconv_name in SEMCONV:
            value = _dig(record, path)
            if value is not None:
                attributes[semconv_name] = value
        outcome = _dig(record, ("evt", "outcome"))
        if outcome is not None:
            attributes["workos.outcome"] = outcome
        _flatten("workos", workos, attributes)
        return ReadableLogRecord(
            log_record=LogRecord(
                timestamp=round(stored.time * 1000) * 1_000_000,
                severity_number=severity,
                severity_text=severity_text,
                body=record.get("message"),
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


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    """Nested objects become dotted keys; lists and scalars stay OTLP values; nulls are left out."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, into)
    elif value is not None:
        into[prefix] = _encodable(value)


def _encodable(value: Any) -> Any:
    """JSON allows integers protobuf's int64 cannot hold; one would fail every export of its batch."""
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        return str(value)
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _encodable(item) for key, item in value.items()}
    return value


def _tag(ddtags: str, name: str) -> str:
    for tag in ddtags.split(","):
        key, _, value = tag.partition(":")
        if key == name and value:
            return value
    return ""


def _exporter_options(env: Mapping[str, str]) -> dict[str, Any]:
    """The exporter's settings from ``env``, with the OTLP precedence (``_LOGS_`` variant first).

    ``OTEL_EXPORTER_OTLP_TIMEOUT`` is in seconds, as the installed Python exporter reads it.
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
        exporter_options=_exporter_options(env),
        events=EventFilter.from_env(env, "OTLP"),
        service_name=env.get("OTEL_SERVICE_NAME", "").strip() or None,
        resource_attributes=_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
        # A credential-provider session is the exporter's to load; ours would replace it.
        instrument_session=not any(env.get(variable) for variable in CREDENTIAL_PROVIDER_VARIABLES),
    )
