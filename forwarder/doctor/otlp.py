"""Check 7: the OTLP/HTTP logs endpoint accepts an export request with no records.

The request goes where the sink's would, with its headers and TLS files, as the sink reads
them from ``OTEL_EXPORTER_OTLP_*`` (``sinks.otlp``): an empty ``ExportLogsServiceRequest``
proves address, TLS and credentials without adding a log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from forwarder.config import ConfigError
from forwarder.doctor.report import Check, failed, passed, skipped
from forwarder.masking import mask_url
from sinks.otlp import exporter_options

NAME = "otlp"
TIMEOUT_S = 10.0
_ENDPOINT_FIX = (
    "check OTEL_EXPORTER_OTLP_ENDPOINT (the sink adds /v1/logs) "
    "or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT (used as given)"
)


async def check_otlp(env: Mapping[str, str]) -> Check:
    if not (
        env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    ):
        return skipped(
            NAME, "no OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT (the OTLP sink is off)"
        )
    try:
        options = exporter_options(env)
    except ConfigError as exc:
        return failed(NAME, str(exc), f"correct {exc.variable}")
    endpoint: str = options["endpoint"]
    shown = mask_url(endpoint)
    client_options: dict[str, Any] = {"timeout": options.get("timeout", TIMEOUT_S)}
    if "certificate_file" in options:
        client_options["verify"] = options["certificate_file"]
    if "client_certificate_file" in options:
        client_options["cert"] = (options["client_certificate_file"], options.get("client_key_file"))
    headers = {**options["headers"], "content-type": "application/x-protobuf"}
    try:
        async with httpx.AsyncClient(**client_options) as client:
            response = await client.post(
                endpoint, content=ExportLogsServiceRequest().SerializeToString(), headers=headers
            )
    except (httpx.HTTPError, OSError) as exc:
        return failed(NAME, f"cannot reach {shown}: {type(exc).__name__}", _ENDPOINT_FIX)
    status = response.status_code
    if 200 <= status < 300:
        return passed(NAME, f"{shown} accepted an empty export request ({status})")
    if status in (401, 403):
        return failed(
            NAME,
            f"{shown} refused the credentials ({status})",
            "check OTEL_EXPORTER_OTLP_HEADERS (or OTEL_EXPORTER_OTLP_LOGS_HEADERS)",
        )
    return failed(NAME, f"{shown} answered {status} to an empty export request", _ENDPOINT_FIX)
