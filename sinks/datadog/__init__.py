"""Datadog Logs sink: posts normalized records to the HTTP logs intake (``/api/v2/logs``).

Vector's layout, one module per job: this one is the configuration (``create``, ``DD_SITE``),
``records`` builds what each record becomes (the request builder), ``sink`` posts it (the
service, on the shared ``sinks.http`` machinery). Each variable is in docs/configuration.md.

``site`` and ``request_headers`` are public because ``workos-forwarder doctor`` and
``datadog apply`` use them: every request to Datadog carries the headers made here.
"""

from __future__ import annotations

from collections.abc import Mapping

from sinks.base import ConfigError, EventFilter, choice, duration, integer, max_retry_after
from sinks.datadog.records import MAX_LOG_BYTES, MAX_NESTING, NESTING_MARK
from sinks.datadog.sink import (
    BACKFILL_POLICIES,
    MAX_ENTRIES,
    DatadogSink,
    identity_headers,
    request_headers,
)
from sinks.http import GZIP_LEVEL

__all__ = [
    "MAX_ENTRIES",
    "MAX_LOG_BYTES",
    "MAX_NESTING",
    "NESTING_MARK",
    "SITES",
    "DatadogSink",
    "create",
    "identity_headers",
    "request_headers",
    "site",
]

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
    level = integer(env, "DD_COMPRESSION_LEVEL", GZIP_LEVEL, minimum=0)
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
