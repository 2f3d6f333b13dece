"""The forwarder at a fixed rate (``bench/loadgen.py``, open loop): latency as a client sees it.

wrk slows down when the server stalls, so its percentiles hide the stall; here requests are
released on schedule whatever happened before (``--rate``, 5,000/s by default).
"""

from __future__ import annotations

import time

from bench.harness.load import loadgen
from bench.harness.processes import ProcessStats, log
from bench.harness.service import commit_note, commits
from bench.harness.session import Session
from bench.report import Row


def fixed_rate(session: Session) -> Row:
    args = session.args
    rate, duration = args.rate, args.fixed_duration
    log(f"fixed rate: {rate:g} requests/s for {duration:g} s")
    file = session.requests(int(rate * duration) + 1)
    server = session.start_service("fixed-rate")
    try:
        session.warm_up(server)
        stats = ProcessStats(server.pid, 0.5).start()
        records_before = session.intake.stats()["records"]
        commits_before = commits(server)
        cpu_before, wall_before = stats.cpu_s(), time.monotonic()
        result = loadgen(server.port, file, rate=rate, duration_s=duration, connections=args.connections)
        cpu = (stats.cpu_s() - cpu_before) / (time.monotonic() - wall_before)
        during = session.intake.stats()["records"] - records_before
        commits_seen = commit_note(commits_before, commits(server), result["ok"], result["sent_for_s"])
        stats.stop()
        peak = stats.peak_mb()
    finally:
        server.stop()
    row = Row(
        f"forwarder, {rate:,.0f} req/s open loop",
        result["ok"] / result["sent_for_s"],
        result["p50_us"] / 1000,
        result["p99_us"] / 1000,
        during / result["sent_for_s"] if session.with_datadog else None,
        peak,
        cpu,
    )
    row.notes.append(
        f"released {result['released']:,} at {result['rate']:,.0f}/s, answered 2xx {result['ok']:,};"
        f" p99.9 {result['p999_us'] / 1000:.1f} ms, max {result['max_us'] / 1000:.1f} ms,"
        f" longest queue for a connection {result['max_queue']}"
    )
    row.notes.append(commits_seen)
    return row
