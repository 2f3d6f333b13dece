"""CPU instructions per webhook, counted by valgrind: ``python -m bench.instructions``.

The build machine is a shared VM whose speed moves by a factor of three within hours, so
requests per second compare only within one run. An instruction count does not move:
valgrind's callgrind counts what the process executes, whatever else the machine does.
Under callgrind the floor (``bench/floor.py``) and the forwarder (SQLite journal,
``synchronous=FULL``, every sink off: the acknowledgement path alone) each serve
``--requests`` and three times as many pre-signed webhooks at a fixed rate that keeps
them busy, so commits are grouped as under load. The difference of the two totals,
divided by the difference in requests, is what one request costs: start-up and shutdown
cancel out. Delivery is counted the same way with ``bench/drain.py``: a journal filled
with N and 3N events, drained or not. Kernel work (syscalls, fsync) is not counted.
Repeatable within about 1-2%; takes about 5 minutes and needs valgrind
(``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.events import write_requests
from bench.harness.load import loadgen
from bench.harness.loopback import Intake
from bench.harness.processes import ROOT, SERVICE_CORE, Server, free_port, log
from bench.harness.service import SECRET, SERVE_ARGV, WEBHOOK_PATH, floor_argv, service_env

RATE = 200.0
"""Requests/s: more than either app serves under callgrind (about 50 times slower)."""
VALGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
_COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(app: str, count: int, requests: Path, workdir: Path) -> int:
    """Instructions ``app`` (floor or forwarder) executed from start to exit, serving ``count``."""
    port = free_port()
    run = f"{app}-{count}"
    if app == "floor":
        argv, env, health = floor_argv(port), dict(os.environ), None
    else:
        argv = SERVE_ARGV
        env = {**service_env(workdir / run, port), "PROMETHEUS_SINK": "off"}
        health = "/healthz"
    server = Server(run, [*VALGRIND, *argv], env, workdir / run, port, startup_timeout_s=300).start(health)
    try:
        result = loadgen(port, requests, rate=RATE, duration_s=count / RATE, connections=8)
    finally:
        server.stop()
    if result["ok"] != count:
        raise RuntimeError(f"{run}: {result['ok']} of {count} requests answered 2xx")
    found = _COLLECTED.findall((workdir / run / f"{run}.stderr.log").read_text())
    if not found:
        raise RuntimeError(f"{run}: no instruction count from callgrind (see its stderr log)")
    return int(found[-1])


def drain_instructions(count: int, intake_url: str, workdir: Path, *, fill_only: bool) -> int:
    """Instructions of ``bench.drain``: filling a journal with ``count`` events (and draining it)."""
    journal = workdir / f"drain-{count}-{fill_only}.sqlite3"
    argv = [*VALGRIND, sys.executable, "-m", "bench.drain", str(journal), str(count), intake_url]
    done = subprocess.run(
        ["taskset", "-c", SERVICE_CORE, *argv, *(["--fill-only"] if fill_only else [])],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(_COLLECTED.findall(done.stderr)[-1])


def per_delivered_event(count: int, workdir: Path) -> float:
    """Draining minus filling, per event: reading, the Datadog and Prometheus sinks, cursors."""
    log(f"delivery under callgrind: {count} and {3 * count} events")
    intake = Intake(workdir)
    try:
        url = f"{intake.url}/api/v2/logs"
        costs = {
            fill_only: [drain_instructions(n, url, workdir, fill_only=fill_only) for n in (count, 3 * count)]
            for fill_only in (True, False)
        }
    finally:
        intake.stop()
    drained, filled = costs[False], costs[True]
    return ((drained[1] - drained[0]) - (filled[1] - filled[0])) / (2 * count)


def per_request(app: str, count: int, requests: Path, workdir: Path) -> float:
    log(f"{app} under callgrind: {count} and {3 * count} requests")
    few = instructions(app, count, requests, workdir)
    many = instructions(app, 3 * count, requests, workdir)
    return (many - few) / (2 * count)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests of the short run [1000]")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench: valgrind is not installed (apt-get install valgrind)")
    workdir = Path(tempfile.mkdtemp(prefix="workos-instructions-"))
    try:
        requests = workdir / "requests.bin"
        write_requests(
            requests, 3 * args.requests, SECRET, host="127.0.0.1", webhook_path=WEBHOOK_PATH, seed=7
        )
        floor = per_request("floor", args.requests, requests, workdir)
        forwarder = per_request("forwarder", args.requests, requests, workdir)
        delivery = per_delivered_event(args.requests, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("| app | instructions per request |\n|---|---:|")
    print(f"| floor (bare ASGI, same server) | {floor:,.0f} |")
    print(f"| forwarder, acknowledgement path (verify, parse, normalize, commit) | {forwarder:,.0f} |")
    print(f"| forwarder, delivering one event to the Datadog and Prometheus sinks | {delivery:,.0f} |")
    print(f"\nfloor / forwarder: {floor / forwarder:.0%} (the throughput target asks for at least 35%)")


if __name__ == "__main__":
    main()
