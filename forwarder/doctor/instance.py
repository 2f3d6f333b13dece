"""Check 9: when a forwarder already listens on ``FORWARDER_PORT``, what its ``/status`` says.

The checks above look at the configuration; a running instance shows what actually
happened since it started: sinks failing and why, how far behind they are, dead letters,
the Events API poller and the journal. Nothing listening is not a failure (doctor may run
before the first start), so it is a SKIP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from forwarder.config import Settings
from forwarder.doctor.report import Check, failed, passed, skipped, warned

TIMEOUT_S = 5.0
BACKLOG_WARN_FRACTION = 0.8
SINK_VARIABLES = {
    "datadog": "DD_API_KEY, DD_SITE or DD_LOGS_URL",
    "otlp": "OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_HEADERS",
    "jsonl": "JSONL_OUTPUT",
    "splunk_hec": "SPLUNK_HEC_URL, SPLUNK_HEC_TOKEN or SPLUNK_HEC_INDEX",
}
_ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}


def status_url(settings: Settings) -> str:
    """``/status`` where the instance serves it: the admin listener when there is one."""
    host, port = settings.host, settings.port
    if settings.admin_port is not None:
        host, port = settings.admin_host, settings.admin_port
    host = "127.0.0.1" if host in _ANY_ADDRESS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


async def check_instance(settings: Settings) -> list[Check]:
    url = status_url(settings)
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.get(url)
    except httpx.ConnectError:
        return [skipped("instance", f"nothing listens at {url} (FORWARDER_HOST/FORWARDER_PORT)")]
    except httpx.HTTPError as exc:
        return [
            failed(
                "instance",
                f"{url} did not answer: {type(exc).__name__}",
                "check the process on FORWARDER_PORT",
            )
        ]
    try:
        status = response.json()
    except ValueError:
        status = None
    if response.status_code != 200 or not isinstance(status, dict):
        return [
            failed(
                "instance",
                f"{url} answered {response.status_code} without a forwarder status: "
                "another program holds the port",
                "set FORWARDER_PORT to the forwarder's port",
            )
        ]
    return summarise(status)


def summarise(status: Mapping[str, Any]) -> list[Check]:
    """One line for the journal, one per sink, one per background source (pure)."""
    results = [_journal(status.get("journal") or {})]
    for name, sink in sorted((status.get("sinks") or {}).items()):
        results.append(_sink(name, sink))
    for name, source in sorted((status.get("sources") or {}).items()):
        results.append(_source(name, source))
    return results


def _journal(journal: Mapping[str, Any]) -> Check:
    backlog, limit = int(journal.get("backlog") or 0), int(journal.get("backlog_limit") or 0)
    detail = (
        f"{journal.get('events', 0)} events, {int(journal.get('bytes') or 0) / 1048576:.1f} MiB, "
        f"backlog {backlog}/{limit}"
    )
    if journal.get("last_error"):
        return failed(
            "instance journal",
            f"{detail}; last write failed: {journal['last_error']}",
            "check the disk under FORWARDER_DATA_DIR (or the FORWARDER_JOURNAL_URL server)",
        )
    if limit and backlog >= BACKLOG_WARN_FRACTION * limit:
        return warned(
            "instance journal",
            f"{detail}: near the limit, webhooks get 503 at it",
            "fix the lagging sink below, or raise FORWARDER_BACKLOG_LIMIT",
        )
    return passed("instance journal", detail)


def _sink(name: str, sink: Mapping[str, Any]) -> Check:
    check = f"instance sink {name}"
    lag = f"lag {sink.get('lag_events', 0)} events / {float(sink.get('lag_seconds') or 0):.0f} s"
    dead = int(sink.get("dead_letters") or 0)
    variables = SINK_VARIABLES.get(name, "the sink's variables")
    if not sink.get("healthy", True):
        return warned(
            check, f"unhealthy: {sink.get('last_error')}; {lag}, {dead} dead letter(s)", f"check {variables}"
        )
    if dead:
        return warned(
            check,
            f"{dead} dead letter(s); {lag}",
            f"see `workos-forwarder dlq list --sink {name}`, fix {variables}, then `dlq replay`",
        )
    return passed(check, f"healthy ({sink.get('role', '?')}); {lag}")


def _source(name: str, source: Mapping[str, Any]) -> Check:
    check = f"instance {name}"
    state = source.get("state")
    error = source.get("last_error")
    detail = (
        f"state {state}, {source.get('fetched', 0)} fetched, {source.get('api_only', 0)} only via the API"
    )
    if state == "rejected":
        return failed(check, f"{detail}: {error}", "fix WORKOS_API_KEY or WORKOS_EVENTS as the error says")
    if state in ("unavailable", "error"):
        return warned(check, f"{detail}: {error}", "check WORKOS_API_URL and the network; the poller retries")
    return passed(check, detail)
