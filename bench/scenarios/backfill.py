"""``workos-forwarder backfill`` from the bench's Events API double: events/s ingested.

The backfill is pinned like the service; the double (``bench/events_api.py``) runs on the
load core and serves ``--backfill-events`` events of the benchmark mix, 100 to a page.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta

from bench.events_api import API_KEY
from bench.harness.loopback import events_api
from bench.harness.processes import ROOT, SERVICE_CORE, ProcessStats, free_port, log
from bench.harness.session import Session
from bench.report import Row

TITLE = "backfill from the Events API emulator"


def backfill(session: Session) -> Row:
    count = session.args.backfill_events
    log(f"backfill: {count:,} events from the Events API emulator")
    with events_api(count, session.workdir) as (url, oldest):
        since = datetime.fromisoformat(oldest) - timedelta(seconds=1)
        env = session.service_env(
            session.workdir / "backfill", free_port(), {"WORKOS_API_KEY": API_KEY, "WORKOS_API_URL": url}
        )
        argv = [sys.executable, "-m", "forwarder.cli", "backfill", "--since", since.isoformat()]
        with open(session.workdir / "backfill.stderr.log", "ab") as stderr:
            proc = subprocess.Popen(
                ["taskset", "-c", SERVICE_CORE, *argv],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
            stats, started = ProcessStats(proc.pid), time.monotonic()
            peak = cpu = 0.0
            while proc.poll() is None:
                with contextlib.suppress(OSError, IndexError):
                    peak, cpu = max(peak, stats.peak_mb()), stats.cpu_s()
                time.sleep(0.2)
        wall = time.monotonic() - started
        assert proc.stdout is not None
        summary = proc.stdout.read().decode()
    found = re.search(r"([\d,]+) events/s", summary)
    if proc.returncode != 0 or found is None:
        return Row(TITLE, notes=[f"failed: {summary!r}"])
    rate = float(found.group(1).replace(",", ""))
    # CPU over the process's whole life (imports included), so a little pessimistic.
    row = Row(TITLE, rate, None, None, None, peak, cpu / wall)
    row.notes.append(f"{summary.strip()} (ingested into the journal; pages of 100)")
    return row
