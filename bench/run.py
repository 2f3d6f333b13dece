"""The benchmark: ``python -m bench.run`` (``--help`` for the flags; ``--quick`` for a short run).

The service under test runs pinned to core 0 (``taskset -c 0``); everything else (wrk, the
constant-rate generator, the Datadog intake double, this runner, py-spy) runs on core 1, so
the numbers say what one core of this machine does. Runs, each on a fresh journal, one module
of ``bench/scenarios/`` each (what each measures is said there):

1. floor: a bare ASGI app on the same uvicorn/uvloop/httptools stack, under wrk.
2. throughput, ingest, postgres: ``workos-forwarder serve`` under wrk with sinks on, with
   every sink off, and with the journal on PostgreSQL (``--postgres``).
3. fixed: ``bench/loadgen.py`` at 5,000 requests/s (open loop) for p99 latency.
4. dead: the intake answers 503 for 10 minutes (``--dead-sink-duration``) while RSS is
   sampled; then the backlog drain rate.
5. backfill: ``workos-forwarder backfill`` from the bench's Events API double.

What they run on is in ``bench/harness/`` (processes, doubles, load generators); the table is
``bench/report.py``. Requests are pre-signed (``bench/events.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.harness.processes import LOAD_CORE, log
from bench.harness.session import Session
from bench.report import Row, table
from bench.scenarios import SCENARIOS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0].split(": ", 1)[-1]
    )
    parser.add_argument("--quick", action="store_true", help="short runs (10-15 s; dead sink 60 s)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each wrk run [20]")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections [64]")
    parser.add_argument("--rate", type=float, default=5000.0, help="fixed-rate requests/s [5000]")
    parser.add_argument(
        "--fixed-duration", type=float, default=30.0, help="seconds of the fixed-rate run [30]"
    )
    parser.add_argument("--dead-sink-rate", type=float, default=2000.0, help="requests/s [2000]")
    parser.add_argument("--dead-sink-duration", type=float, default=600.0, help="seconds [600]")
    parser.add_argument("--drain-timeout", type=float, default=900.0, help="seconds to wait for the drain")
    parser.add_argument("--backfill-events", type=int, default=100_000, help="events to backfill [100000]")
    parser.add_argument("--runs", default=",".join(SCENARIOS), help="comma-separated subset to run")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL server for the postgres run (a schema is created and dropped)",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy record the throughput run into DIR")
    parser.add_argument("--workdir", type=Path, help="keep journals and logs here (default: a temp dir)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.fixed_duration, args.dead_sink_duration = 10.0, 15.0, 60.0
        args.backfill_events = 50_000
    return args


def run_scenarios(session: Session, names: set[str]) -> tuple[list[Row], dict[str, Row]]:
    """The table's rows in run order, and the rows of the runs that succeeded, by name."""
    rows: list[Row] = []
    results: dict[str, Row] = {}
    for name, scenario in SCENARIOS.items():
        if name not in names:
            continue
        try:
            row = scenario(session)
        except Exception as exc:  # keep the other runs' results
            log(f"{name}: failed: {exc!r}")
            rows.append(Row(name, notes=[f"failed: {exc!r}"]))
            continue
        if row is not None:
            rows.append(row)
            results[name] = row
    return rows, results


def main() -> None:
    args = parse_args()
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            package = "util-linux" if tool == "taskset" else tool
            sys.exit(f"bench: {tool} is not installed (apt-get install {package})")
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="workos-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"work dir {workdir}; load average {os.getloadavg()[0]:.2f} (others' work makes numbers noisy)")
    session = Session(args, workdir)
    try:
        rows, results = run_scenarios(session, set(args.runs.split(",")))
    finally:
        session.close()
    print(table(rows, results, args.rate))
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
