"""The two apps a run measures: the forwarder (``workos-forwarder serve``) and the floor.

The floor (``bench/floor.py``) is a bare ASGI app on the same server stack, the ceiling the
forwarder's rate is compared with. The forwarder runs with
``FORWARDER_SIGNATURE_TOLERANCE=24h`` so that a request signed when the request files were
written is still fresh when sent; verification does the same work whatever the tolerance.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.harness.processes import Server

SECRET = "whsec_bench_0123456789abcdef"
WEBHOOK_PATH = "/webhooks/workos"
SERVE_ARGV = [sys.executable, "-m", "forwarder.cli", "serve"]


def floor_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.floor", str(port)]


def service_env(data_dir: Path, port: int) -> dict[str, str]:
    """The service's environment for a run: the Prometheus sink on, every other sink off."""
    return {
        **os.environ,
        "WORKOS_WEBHOOK_SECRET": SECRET,
        "FORWARDER_PORT": str(port),
        "FORWARDER_DATA_DIR": str(data_dir),
        "FORWARDER_SIGNATURE_TOLERANCE": "24h",
        "JSONL_OUTPUT": "off",
        "PROMETHEUS_SINK": "on",
        # Only the sinks and sources under test, whatever this shell exports.
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "",
        "WORKOS_API_KEY": "",
        "DD_API_KEY": "",
    }


def accepted(server: Server) -> float:
    """Webhooks the service answered "accepted" so far: verified and committed."""
    return server.metric("workos_webhook_requests_total", result="accepted")


def commits(server: Server) -> tuple[float, float]:
    """Group commits so far and the seconds they took (fsync included)."""
    return (
        server.metric("workos_forwarder_journal_commit_seconds_count"),
        server.metric("workos_forwarder_journal_commit_seconds_sum"),
    )


def commit_note(
    before: tuple[float, float], after: tuple[float, float], events: float, seconds: float
) -> str:
    """How the events were grouped into commits: fewer, larger commits mean fewer fsyncs."""
    count, took = after[0] - before[0], after[1] - before[1]
    if not count:
        return "no group commits"
    return (
        f"group commits {count / seconds:,.0f}/s, {events / count:.1f} events and"
        f" {took / count * 1000:.2f} ms each"
    )
