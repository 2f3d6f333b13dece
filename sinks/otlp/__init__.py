"""OTLP logs sink: one OpenTelemetry log record per WorkOS event, over OTLP/HTTP protobuf.

Vector's layout, one module per job: this one is the configuration (``create``,
``exporter_options``), ``records`` builds each log (the request builder), ``sink`` exports
them (the service). It drives opentelemetry-sdk's own ``OTLPLogExporter`` rather than a
hand-written client, so the standard ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers,
compression, timeout, TLS files) behave exactly as in every other OpenTelemetry SDK user.
They are read from the mapping given to ``create`` (the process environment merged with
``FORWARDER_CONFIG``) with the exporter's own precedence: the ``_LOGS_`` variant first, then
the generic one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.util.re import parse_env_headers

from sinks.base import ConfigError, EventFilter, max_retry_after
from sinks.otlp.records import NESTING_MARK
from sinks.otlp.sink import MAX_BATCH, OtlpSink, _Pending

__all__ = ["MAX_BATCH", "NESTING_MARK", "OtlpSink", "_Pending", "create", "exporter_options"]

CREDENTIAL_PROVIDER_VARIABLES = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_LOGS_CREDENTIAL_PROVIDER",
)


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
