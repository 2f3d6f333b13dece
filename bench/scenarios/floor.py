"""The floor: ``bench/floor.py``, a bare ASGI app on the forwarder's server stack, under wrk.

Its rate is the ceiling of the HTTP stack on one core; the closed-loop rows are compared
with it ("vs floor").
"""

from __future__ import annotations

import os

from bench.harness.load import wrk
from bench.harness.processes import ProcessStats, Server, free_port, log
from bench.harness.service import WEBHOOK_PATH, floor_argv
from bench.harness.session import Session
from bench.report import Row


def floor(session: Session) -> Row:
    log("floor: bare ASGI app on the same server")
    requests, connections = session.throughput_file, session.args.connections
    port = free_port()
    server = Server("floor", floor_argv(port), dict(os.environ), session.workdir, port).start(None)
    try:
        wrk(server.url + WEBHOOK_PATH, [session.warmup_file], duration_s=3, connections=connections)
        stats = ProcessStats(server.pid)
        cpu_before = stats.cpu_s()
        result = wrk(
            server.url + WEBHOOK_PATH, [requests], duration_s=session.args.duration, connections=connections
        )
        cpu = (stats.cpu_s() - cpu_before) / (result["duration_us"] / 1e6)
        peak = stats.peak_mb()
    finally:
        server.stop()
    rate = result["ok"] / (result["duration_us"] / 1e6)
    return Row(
        "floor (bare ASGI, same server)",
        rate,
        result["p50_us"] / 1000,
        result["p99_us"] / 1000,
        None,
        peak,
        cpu,
    )
