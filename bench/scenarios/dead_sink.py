"""A dead sink: the intake answers 503 while webhooks keep coming; then it recovers.

Measures memory while the backlog grows on disk (RSS sampled every second, ``--dead-sink-rate``
for ``--dead-sink-duration``, 2,000/s for 10 minutes by default), then the rate at which the
backlog drains to the intake once it answers again (journal to intake, no webhook load).
"""

from __future__ import annotations

import time

from bench.harness.load import loadgen
from bench.harness.processes import ProcessStats, log
from bench.harness.service import accepted
from bench.harness.session import Session
from bench.report import Row


def dead_sink(session: Session) -> Row | None:
    args, intake = session.args, session.intake
    rate, duration = args.dead_sink_rate, args.dead_sink_duration
    if not session.with_datadog:
        log("dead sink: skipped, sinks/datadog.py is not there")
        return None
    log(f"dead sink: intake answers 503, {rate:g} requests/s for {duration:g} s")
    file = session.requests(int(rate * duration) + 1)
    # At 2,000/s for 10 minutes the backlog passes the default limit (1,000,000) after
    # 500 s and the service would rightly start answering 503; this run measures memory.
    server = session.start_service("dead-sink", {"FORWARDER_BACKLOG_LIMIT": str(int(rate * duration) * 2)})
    try:
        session.warm_up(server)
        intake.set_status(503)
        stats = ProcessStats(server.pid, 1.0).start()
        start_rss = stats.rss_mb()
        result = loadgen(server.port, file, rate=rate, duration_s=duration, connections=args.connections)
        stats.stop()
        rss = [mb for _, mb in stats.samples]
        peak = stats.peak_mb()
        journal_mb = sum(p.stat().st_size for p in server.workdir.glob("journal.sqlite3*")) / 1e6
        backlog = server.metric("workos_forwarder_sink_lag_events", sink="datadog")
        # Recovery: the intake answers 202 again; how fast does the backlog drain?
        records_before = intake.stats()["records"]
        intake.set_status(202)
        switched = time.monotonic()
        target = server.intake_base + int(accepted(server))
        first_at = intake.wait_for(records_before + 1, timeout_s=120)
        done_at = intake.wait_for(target, timeout_s=args.drain_timeout)
        drained = intake.stats()["records"] - records_before
    finally:
        intake.set_status(202)
        server.stop()
    quarter = rss[len(rss) // 4 :] or rss
    row = Row(
        f"forwarder, dead sink {rate:,.0f} req/s {duration / 60:g} min",
        result["ok"] / result["sent_for_s"],
        result["p50_us"] / 1000,
        result["p99_us"] / 1000,
        None,
        peak,
        None,
    )
    every = max(len(rss) // 10, 1)
    trace = " ".join(f"{mb:.0f}" for mb in rss[::every])
    row.notes.append(
        f"RSS start {start_rss:.0f} MB, after the first quarter {min(quarter):.0f}-{max(quarter):.0f} MB,"
        f" end {rss[-1] if rss else 0:.0f} MB (every {every} s: {trace});"
        f" journal {journal_mb:,.0f} MB on disk, backlog {backlog:,.0f} events"
    )
    if first_at is not None and done_at is not None:
        row.delivered_per_s = drained / (done_at - first_at)
        row.notes.append(
            f"after recovery: {drained:,} events drained to the intake in {done_at - first_at:.1f} s"
            f" (first delivery {first_at - switched:.1f} s after the intake came back)"
        )
    else:
        row.notes.append(f"after recovery: only {drained:,} of {backlog:,.0f} drained in time")
    return row
