"""Run every check in order; a check that crashes becomes a FAIL line, never a traceback."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Mapping
from urllib.parse import unquote, urlsplit

from forwarder.config import ConfigError, Settings, load_environment
from forwarder.doctor.configuration import check_configuration
from forwarder.doctor.datadog import check_datadog
from forwarder.doctor.instance import check_instance
from forwarder.doctor.journal import check_journal
from forwarder.doctor.otlp import check_otlp
from forwarder.doctor.public_path import check_public_path
from forwarder.doctor.report import Check, failed, skipped
from forwarder.doctor.secrets import check_webhook_secrets
from forwarder.doctor.splunk_hec import check_splunk_hec
from forwarder.doctor.workos import check_api, check_clock

DEFAULT_TOLERANCE_S = 180.0
_SECRET_VARIABLES = ("WORKOS_API_KEY", "DD_API_KEY", "DD_APP_KEY", "FORWARDER_REDACT_KEY", "SPLUNK_HEC_TOKEN")
_HEADER_VARIABLES = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_LOGS_HEADERS")
_URL_VARIABLES = (
    "FORWARDER_JOURNAL_URL",
    "WORKOS_API_URL",
    "DD_API_URL",
    "DD_LOGS_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "SPLUNK_HEC_URL",
)
MIN_REDACTED_LENGTH = 6
"""Shorter values are not masked: replacing every "s" in the report would hide it, and the
secret check already fails a secret that short."""


def environment() -> tuple[dict[str, str], Check | None]:
    """The environment ``serve`` would read; a broken ``FORWARDER_CONFIG`` becomes a finding."""
    try:
        return load_environment(), None
    except ConfigError as exc:
        return dict(os.environ), failed("configuration", str(exc), f"correct {exc.variable}")


async def run_checks(
    env: Mapping[str, str], *, url: str | None, send_test_log: bool, config_problem: Check | None = None
) -> list[Check]:
    results: list[Check] = []
    if config_problem is not None:
        results.append(config_problem)
        settings: Settings | None = None
    else:
        try:
            config, settings = await check_configuration(env)
        except Exception as exc:  # a bug or an environment nobody foresaw: report it, go on
            config, settings = _crashed("configuration", exc), None
        results.append(config)
    results.extend(check_webhook_secrets(env.get("WORKOS_WEBHOOK_SECRET")))
    if settings is None:
        results.append(skipped("journal", "the core settings do not parse (see configuration)"))
    else:
        results.extend(await _many("journal", check_journal(settings)))
    tolerance = settings.signature_tolerance_s if settings else DEFAULT_TOLERANCE_S
    results.append(await _one("clock", check_clock(env, tolerance)))
    results.extend(await _many("workos api key", check_api(env)))
    results.extend(await _many("datadog", check_datadog(env, send_test_log=send_test_log)))
    results.append(await _one("otlp", check_otlp(env)))
    results.append(await _one("splunk hec", check_splunk_hec(env)))
    results.append(await _one("public path", check_public_path(url, settings.secrets if settings else ())))
    if settings is None:
        results.append(skipped("instance", "the core settings do not parse (FORWARDER_PORT unknown)"))
    else:
        results.extend(await _many("instance", check_instance(settings)))
    return results


def _crashed(name: str, exc: Exception) -> Check:
    return failed(name, f"the check crashed: {type(exc).__name__}: {exc}", "report this as a bug")


async def _one(name: str, check: Awaitable[Check]) -> Check:
    """The check's result; an unexpected exception ends that check only."""
    try:
        return await check
    except Exception as exc:  # a bug or an environment nobody foresaw: report it, go on
        return _crashed(name, exc)


async def _many(name: str, check: Awaitable[list[Check]]) -> list[Check]:
    try:
        return await check
    except Exception as exc:  # as in _one
        return [_crashed(name, exc)]


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Every value in ``env`` that must never be printed, in each form it may appear."""
    values: list[str] = []
    raw = env.get("WORKOS_WEBHOOK_SECRET", "")
    values.append(raw.strip())
    for part in raw.split(","):
        values.extend({part, part.strip(), part.strip().strip("\"'`")})
    values.extend(env.get(name, "").strip() for name in _SECRET_VARIABLES)
    for name in _HEADER_VARIABLES:
        for pair in env.get(name, "").split(","):
            value = pair.partition("=")[2].strip()
            values.extend({value, unquote(value)})
    for name in _URL_VARIABLES:
        try:
            password = urlsplit(env.get(name, "")).password
        except ValueError:
            continue
        if password:
            values.extend({password, unquote(password)})
    return [value for value in values if len(value) >= MIN_REDACTED_LENGTH]
