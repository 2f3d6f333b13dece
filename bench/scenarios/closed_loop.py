"""The forwarder under wrk (closed loop): the most it acknowledges, and what reaches the intake.

Acknowledged = answered 2xx, i.e. verified and committed. Delivered is the end-to-end rate:
events the intake counted, over the time from the start of the load until the intake has
them all. Three configurations: sinks on (throughput), every sink off (ingest: verifying and
committing alone), and the journal on PostgreSQL (in a scratch schema; the database server
is not pinned, it shares both cores as it would a host).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping

import psycopg

from bench.harness.load import wrk
from bench.harness.postgres import scratch_schema
from bench.harness.processes import ProcessStats, log
from bench.harness.service import WEBHOOK_PATH, accepted, commit_note, commits
from bench.harness.session import Session
from bench.report import Row
from forwarder.masking import scrub


def throughput(session: Session) -> Row:
    return _closed_loop(session, "forwarder, wrk closed loop", "throughput")


def ingest_only(session: Session) -> Row:
    """The same run with every sink off: what verifying and committing alone cost."""
    return _closed_loop(
        session,
        "forwarder, wrk closed loop, no sinks",
        "ingest",
        {"PROMETHEUS_SINK": "off", "DD_API_KEY": ""},
    )


def postgres(session: Session) -> Row | None:
    """The same run with the journal on PostgreSQL, in a schema of its own."""
    server = session.args.postgres
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_schema(server, f"workos_bench_{os.getpid()}"))
        except psycopg.OperationalError as exc:
            # The URL may hold a password, and libpq may quote it in its error.
            log(scrub(f"postgres: skipped, PostgreSQL is not reachable at {server}: {exc}", server))
            return None
        return _closed_loop(
            session,
            "forwarder, wrk closed loop, PostgreSQL journal",
            "postgres",
            {"FORWARDER_JOURNAL_URL": url},
        )


def _closed_loop(session: Session, title: str, name: str, extra: Mapping[str, str] | None = None) -> Row:
    args, intake = session.args, session.intake
    log(f"{name}: wrk, {args.connections} connections, {args.duration:g} s")
    requests = session.throughput_file
    server = session.start_service(name, extra)
    try:
        session.warm_up(server)
        stats = ProcessStats(server.pid, 0.5).start()
        accepted_before = accepted(server)
        duplicates_before = server.metric("workos_webhook_requests_total", result="duplicate")
        records_before = intake.stats()["records"]
        commits_before = commits(server)
        cpu_before = stats.cpu_s()
        started = time.monotonic()
        profiler = session.profile(server.pid, name)
        result = wrk(
            server.url + WEBHOOK_PATH, [requests], duration_s=args.duration, connections=args.connections
        )
        seconds = result["duration_us"] / 1e6
        cpu = (stats.cpu_s() - cpu_before) / seconds
        during = intake.stats()["records"] - records_before
        acked = accepted(server) - accepted_before
        duplicates = server.metric("workos_webhook_requests_total", result="duplicate") - duplicates_before
        commits_seen = commit_note(commits_before, commits(server), acked, seconds)
        drained_at = session.wait_delivered(server, timeout_s=300)
        if profiler is not None:
            profiler.wait()
        stats.stop()
        peak = stats.peak_mb()
    finally:
        server.stop()
    row = Row(
        title,
        result["ok"] / seconds,
        result["p50_us"] / 1000,
        result["p99_us"] / 1000,
        None,
        peak,
        cpu,
        closed_loop=True,
    )
    row.notes.append(commits_seen)
    if server.delivers and drained_at is not None:
        row.delivered_per_s = acked / (drained_at - started)
        row.notes.append(
            f"delivered during the load {during / seconds:,.0f}/s; all {acked:,.0f} in the intake"
            f" {drained_at - started - seconds:.1f} s after the load stopped"
        )
    elif server.delivers:
        row.notes.append("the intake did not receive every accepted event within 300 s")
    if duplicates or result["wraps"] or result["non_2xx"]:
        row.notes.append(f"duplicates {duplicates:.0f}, wraps {result['wraps']}, non-2xx {result['non_2xx']}")
    return row
