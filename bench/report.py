"""The output of ``python -m bench.run``: one table row per run, its notes, the targets.

Scenarios fill in ``Row``s; this module only lays them out, so a scenario added is a row
more and nothing here changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

TARGETS = {
    "floor_ratio": 0.35,
    "delivered_per_s": 10_000,
    "fixed_rate_p99_ms": 10.0,
    "dead_sink_rss_mb": 150.0,
}


@dataclass
class Row:
    name: str
    acked_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    delivered_per_s: float | None = None
    peak_rss_mb: float | None = None
    cpu: float | None = None
    notes: list[str] = field(default_factory=list)
    closed_loop: bool = False
    """Driven by wrk like the floor: the only rows whose rate compares with the floor's."""


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(rows: Sequence[Row], results: Mapping[str, Row], rate: float) -> str:
    """The Markdown table, the notes of every row, then the targets (``results`` by run name)."""
    floor_rate = results["floor"].acked_per_s if "floor" in results else None
    header = (
        "| run | acked req/s | p50 ms | p99 ms | delivered events/s | peak RSS MB | service CPU |"
        " vs floor |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for row in rows:
        ratio = ""
        if row.closed_loop and row.acked_per_s is not None and floor_rate:
            ratio = f"{row.acked_per_s / floor_rate:.0%}"
        lines.append(
            f"| {row.name} | {_fmt(row.acked_per_s, ',.0f')} | {_fmt(row.p50_ms, '.2f')} |"
            f" {_fmt(row.p99_ms, '.2f')} | {_fmt(row.delivered_per_s, ',.0f')} |"
            f" {_fmt(row.peak_rss_mb, '.0f')} | {_fmt(row.cpu, '.0%')} | {ratio} |"
        )
    notes = [f"- {row.name}: {note}" for row in rows for note in row.notes]
    return "\n".join([*lines, "", *notes, "", *targets(results, floor_rate, rate)])


def targets(found: Mapping[str, Row], floor_rate: float | None, rate: float) -> list[str]:
    """One line per target of issue 6: the measured value and whether it is met."""
    shown_rate = f"{rate:,.0f}"
    checks: list[tuple[str, float | None, float, bool]] = []
    if "throughput" in found and floor_rate:
        ratio = (found["throughput"].acked_per_s or 0.0) / floor_rate
        checks.append(
            ("acked req/s vs the floor's (sinks on), at least", ratio, TARGETS["floor_ratio"], True)
        )
    if "throughput" in found:
        value = found["throughput"].delivered_per_s
        checks.append(("webhook to intake, events/s, at least", value, TARGETS["delivered_per_s"], True))
    if "dead" in found:
        value = found["dead"].delivered_per_s
        checks.append(
            ("journal to intake (drain), events/s, at least", value, TARGETS["delivered_per_s"], True)
        )
    if "fixed" in found:
        value = found["fixed"].p99_ms
        checks.append(
            (f"p99 ack ms at {shown_rate} req/s, at most", value, TARGETS["fixed_rate_p99_ms"], False)
        )
    if "dead" in found:
        value = found["dead"].peak_rss_mb
        checks.append(("peak RSS MB, dead sink run, at most", value, TARGETS["dead_sink_rss_mb"], False))
    lines = ["Targets (service on one core):"]
    for label, value, target, at_least in checks:
        met = value is not None and (value >= target if at_least else value <= target)
        shown = "n/a" if value is None else (f"{value:.0%}" if target < 1 else f"{value:,.1f}")
        wanted = f"{target:.0%}" if target < 1 else f"{target:,.0f}"
        lines.append(f"- {label} {wanted}: {shown}, {'met' if met else 'NOT met'}")
    return lines
