"""One function per measured run, each on a fresh journal, in the order ``bench.run`` runs them.

Each takes the run's ``Session`` and returns its table row, or None when it was skipped
(its reason logged). ``--runs`` names them by the keys of ``SCENARIOS``.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.harness.session import Session
from bench.report import Row
from bench.scenarios.backfill import backfill
from bench.scenarios.closed_loop import ingest_only, postgres, throughput
from bench.scenarios.dead_sink import dead_sink
from bench.scenarios.fixed_rate import fixed_rate
from bench.scenarios.floor import floor

Scenario = Callable[[Session], Row | None]

SCENARIOS: dict[str, Scenario] = {
    "floor": floor,
    "throughput": throughput,
    "ingest": ingest_only,
    "postgres": postgres,
    "fixed": fixed_rate,
    "dead": dead_sink,
    "backfill": backfill,
}
