"""An OTLP/HTTP logs receiver (``POST /v1/logs``) that decodes ``ExportLogsServiceRequest``.

Each log record is kept as a ``ReceivedLog`` with its resource and attributes turned back
into plain Python values, so tests check event names, severities, attributes and resource
the way a collector would see them. ``fail_next`` queues answers (429 with ``Retry-After``,
503, 400 ...); ``poison_marker`` refuses (400) any request holding a record whose body
contains it; ``stop()``/``start()`` (from ``LoopbackServer``) take it down for real.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.doubles import LoopbackServer

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedLog:
    event_name: str
    severity_number: int
    severity_text: str
    body: Any
    time_unix_nano: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    observed_time_unix_nano: int = 0


@dataclass(frozen=True)
class ReceivedRequest:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    records: int = 0


class OtlpReceiver(LoopbackServer):
    def __init__(self) -> None:
        super().__init__(Starlette(routes=[Route("/v1/logs", self._handle, methods=["POST"])]))
        self._logs: list[ReceivedLog] = []
        self._requests: list[ReceivedRequest] = []
        self._queued: list[tuple[int, dict[str, str]]] = []
        self.poison_marker: str | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1/logs"

    def logs(self) -> list[ReceivedLog]:
        with self._lock:
            return list(self._logs)

    def ids(self) -> list[str]:
        return [log.attributes["workos.id"] for log in self.logs()]

    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def fail_next(self, status: int, *, times: int = 1, headers: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._queued.extend((status, dict(headers or {})) for _ in range(times))

    async def _handle(self, request: Request) -> Response:
        headers = dict(request.headers)
        with self._lock:
            if self._queued:
                status, answer_headers = self._queued.pop(0)
                self._requests.append(ReceivedRequest(status, headers))
                return Response(b"", status, answer_headers)
        if request.headers.get("content-type") != PROTOBUF:
            return self._refuse(headers, 415)
        body = await request.body()
        try:
            match request.headers.get("content-encoding"):
                case "gzip":
                    body = gzip.decompress(body)
                case "deflate":
                    body = zlib.decompress(body)
            export = ExportLogsServiceRequest()
            export.ParseFromString(body)
        except (OSError, zlib.error, DecodeError):
            return self._refuse(headers, 400)
        logs = [
            ReceivedLog(
                event_name=record.event_name,
                severity_number=record.severity_number,
                severity_text=record.severity_text,
                body=_value(record.body),
                time_unix_nano=record.time_unix_nano,
                attributes=_attributes(record.attributes),
                resource=_attributes(resource_logs.resource.attributes),
                scope=scope_logs.scope.name,
                observed_time_unix_nano=record.observed_time_unix_nano,
            )
            for resource_logs in export.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]
        marker = self.poison_marker
        if marker and any(marker in str(log.body) for log in logs):
            return self._refuse(headers, 400)
        with self._lock:
            self._logs.extend(logs)
            self._requests.append(ReceivedRequest(200, headers, len(logs)))
        return Response(ExportLogsServiceResponse().SerializeToString(), 200, media_type=PROTOBUF)

    def _refuse(self, headers: dict[str, str], status: int) -> Response:
        with self._lock:
            self._requests.append(ReceivedRequest(status, headers))
        return Response(b"", status)


def _attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)
