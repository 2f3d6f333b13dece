"""CPU instructions per webhook, counted by valgrind: ``python -m bench.instructions``.

The build machine is a shared VM whose speed moves by a factor of three within hours, so
requests per second compare only within one run. An instruction count does not move:
valgrind's callgrind counts what the process executes, whatever else the machine does.
Kernel work (syscalls, fsync) is not counted.

The floor (``bench/floor.py``) serves ``--requests`` and three times as many pre-signed
webhooks under callgrind; the difference of the two totals, divided by the difference in
requests, is what one request costs (start-up and shutdown cancel out). Delivery is counted
the same way with ``bench/drain.py``: a journal filled with N and 3N events, drained or not.

The forwarder (SQLite journal, ``synchronous=FULL``, every sink and the detections off: the
acknowledgement path alone) gets its webhooks one at a time, on one connection: every
webhook has a group commit to itself, so the grouping is fixed (at 200/s on 8 connections a
commit held 1.8 events on average, a number that followed the machine's speed, and the count
with it, by 2-4%). Its count is taken between two callgrind dumps around the webhooks, less
what the service does every second at rest (measured before, between two dumps too), times
the window's length: a busy machine stretches the window, and that work with it, by 20 s and
more. Under load commits are shared, which one event per commit does not show; that is the
latency side of group commit, which ``bench.run`` measures.

``--group N`` sends the forwarder's webhooks N at a time instead, on N connections, with the
service stopped (``SIGSTOP``) while a group is written: its event loop then reads all N in one
turn, and they share one commit (the run fails unless every commit held exactly N). Set
against the default row, it shows what the per-commit part costs.
The sidecar row (``--only sidecar``) is the forwarder with the Datadog sink (to the intake
double), the Prometheus sink and the detections on, at 25 webhooks/s one at a time: all a
webhook costs at a sidecar's rate, answer, delivery and detection.

Takes about 9 minutes and needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.events import iter_requests, write_requests
from bench.harness.load import loadgen
from bench.harness.loopback import Intake
from bench.harness.processes import ROOT, SERVICE_CORE, Server, free_port, log
from bench.harness.service import SECRET, SERVE_ARGV, WEBHOOK_PATH, floor_argv, service_env

FLOOR_RATE = 200.0
"""Requests/s for the floor: more than it serves under callgrind (about 50 times slower)."""
FORWARDER_RATE = 25.0
"""Requests/s for the forwarder, on one connection: a request is answered before the next leaves."""
VALGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
_COLLECTED = re.compile(r"Collected : (\d+)")
_TOTALS = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)
IDLE_S = 20.0
"""Seconds of rest before the forwarder's webhooks, to measure what it does every second."""


def instructions(app: str, count: int, requests: Path, workdir: Path) -> int:
    """Instructions the floor executed from start to exit, serving ``count`` requests."""
    port = free_port()
    run = f"{app}-{count}"
    server = Server(run, [*VALGRIND, *floor_argv(port)], dict(os.environ), workdir / run, port)
    server.startup_timeout_s = 300
    server.start(None)
    try:
        result = loadgen(port, requests, rate=FLOOR_RATE, duration_s=count / FLOOR_RATE, connections=8)
    finally:
        server.stop()
    if result["ok"] != count:
        raise RuntimeError(f"{run}: {result['ok']} of {count} requests answered 2xx")
    found = _COLLECTED.findall((workdir / run / f"{run}.stderr.log").read_text())
    if not found:
        raise RuntimeError(f"{run}: no instruction count from callgrind (see its stderr log)")
    return int(found[-1])


def forwarder_per_request(
    count: int, requests: Path, workdir: Path, group: int = 1, intake: Intake | None = None
) -> tuple[float, float]:
    """(instructions per webhook, instructions per idle second) of the forwarder, one run.

    With an ``intake``, the Datadog sink delivers to it, the Prometheus sink and the
    detections are on, and the count ends once the intake holds every webhook's record: the
    whole cost of one webhook at a sidecar's low rate, delivery and detection included.

    Callgrind dumps its counts on demand: once the service is up, after ``IDLE_S`` of rest,
    and after ``count`` webhooks sent one at a time (or ``group`` at a time, one commit
    each). The service works every second whether or not webhooks come (uvicorn's tick,
    housekeeping, the writer's deadline watch): the rest measures that rate, and the load
    window's wall time (less the time the service was stopped) times that rate is taken
    off, so a busy machine that stretches the run does not inflate the count.
    """
    port = free_port()
    run = "forwarder" if intake is None else "sidecar"
    out = workdir / f"{run}.callgrind"
    # Detections off too: like a sink, the engine reads what was committed, after the answer
    # (about 94,000 instructions per event on 2026-12-07, counted in this row until then).
    env = {
        **service_env(workdir / run, port),
        "PROMETHEUS_SINK": "off",
        "FORWARDER_DETECTIONS": "off",
        # Groups go on connections opened before the rest: kept open through it.
        **({"FORWARDER_KEEPALIVE_TIMEOUT": "1h"} if group > 1 else {}),
    }
    if intake is not None:
        env.update(
            PROMETHEUS_SINK="on",
            FORWARDER_DETECTIONS="on",
            DD_API_KEY="bench-api-key",
            DD_LOGS_URL=f"{intake.url}/api/v2/logs",
        )
    argv = [*VALGRIND[:-1], f"--callgrind-out-file={out}", *SERVE_ARGV]
    server = Server(run, argv, env, workdir / run, port, startup_timeout_s=300)
    server.start("/healthz")
    connections: list[socket.socket] = []
    try:
        if group > 1:
            # Open and used once before the rest, so that the rest and the load both have
            # them (the edge's sweep runs while connections exist, and is taken off with the
            # rest), and every one is reading when the first group comes.
            connections = [_ready_connection(port) for _ in range(group)]
        commits_before = server.metric("workos_forwarder_journal_commit_seconds_count")
        _dump(server.pid, out, 1)
        rest = time.monotonic()
        time.sleep(IDLE_S)
        idle = _dump(server.pid, out, 2)
        loaded = time.monotonic()
        idle_rate = idle / (loaded - rest)
        stopped_s = 0.0
        if group == 1:
            ok = loadgen(
                port,
                requests,
                rate=FORWARDER_RATE,
                duration_s=count / FORWARDER_RATE,
                connections=1,
                grace_s=3600,
            )["ok"]
        else:
            ok, stopped_s = send_in_groups(server.pid, connections, requests, count)
        if intake is not None:
            if intake.wait_for(count, timeout_s=600) is None:
                raise RuntimeError(f"forwarder: the intake did not get all {count} records")
            time.sleep(_SETTLE_S)  # firings count in the intake too: let the last batches go
        busy = _dump(server.pid, out, 3)
        load_s = time.monotonic() - loaded - stopped_s
        commits = server.metric("workos_forwarder_journal_commit_seconds_count") - commits_before
    finally:
        for connection in connections:
            connection.close()
        server.stop()
    if ok != count:
        raise RuntimeError(f"forwarder: {ok} of {count} requests answered 2xx")
    if group > 1 and commits != count // group:
        raise RuntimeError(f"forwarder: {count} webhooks in {commits:g} commits, not {group} in each")
    if count / commits > 1.05 * group:
        log(f"forwarder: {count / commits:.2f} events per commit, not one: the count depends on timing")
    return (busy - idle_rate * load_s) / count, idle_rate


_SETTLE_S = 2.0
"""Longer than the Datadog sink's linger and the detection loop's rest once caught up (1 s each)."""


def _ready_connection(port: int) -> socket.socket:
    """A connection the service has accepted and read from (one ``GET /healthz``)."""
    connection = socket.create_connection(("127.0.0.1", port))
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    if _answer_status(connection) != 200:
        raise RuntimeError("the forwarder did not answer /healthz 200")
    return connection


def send_in_groups(
    pid: int, connections: list[socket.socket], requests: Path, count: int
) -> tuple[int, float]:
    """Send ``count`` webhooks in groups, one per connection; answer (2xx, seconds stopped).

    The service is stopped while a group is written, so all of it waits in the sockets when
    the event loop reads next: one turn reads every request, and the requests reach the
    journal in the same turn, which hands them to the writer as one operation.
    """
    webhooks = iter_requests(requests)
    ok, stopped_s = 0, 0.0
    for _ in range(count // len(connections)):
        batch = [next(webhooks) for _ in connections]
        stopped = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            _wait_stopped(pid)
            for connection, webhook in zip(connections, batch, strict=True):
                connection.sendall(webhook)
        finally:
            os.kill(pid, signal.SIGCONT)
        stopped_s += time.monotonic() - stopped
        ok += sum(_answer_status(connection) // 100 == 2 for connection in connections)
    return ok, stopped_s


def _wait_stopped(pid: int) -> None:
    """Until every thread of ``pid`` has stopped: ``kill`` returns before the signal acts, and a
    request written meanwhile could be read alone."""
    while True:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        if all(state in ("T", "t") for state in states):
            return
        time.sleep(0.0005)


def _answer_status(connection: socket.socket) -> int:
    """The status of the next answer on ``connection`` (read to its end: it declares its length)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += _recv(connection)
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    while len(body) < length:
        body += _recv(connection)
    return int(lines[0].split()[1])


def _recv(connection: socket.socket) -> bytes:
    data = connection.recv(65536)
    if not data:
        raise RuntimeError("the forwarder closed a connection in the middle of a group")
    return data


def _dump(pid: int, out: Path, number: int) -> int:
    """Have callgrind write its counts since the last dump (file ``out.<number>``); answer them."""
    subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, check=True)
    path = Path(f"{out}.{number}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = _TOTALS.search(path.read_text()) if path.exists() else None
        if found:
            return int(found.group(1))
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no dump {path}")


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


def forwarder_row(count: int, requests: Path, workdir: Path, group: int = 1) -> float:
    sent = "one at a time" if group == 1 else f"{group} at a time, one commit each"
    log(f"forwarder under callgrind: {IDLE_S:g} s at rest, then {count} requests {sent}")
    per_webhook, idle_rate = forwarder_per_request(count, requests, workdir, group)
    log(f"forwarder at rest: {idle_rate:,.0f} instructions per second (taken off the count)")
    return per_webhook


def sidecar_row(count: int, requests: Path, workdir: Path) -> float:
    log(f"forwarder with sinks and detections under callgrind: {IDLE_S:g} s at rest, then {count} requests")
    intake = Intake(workdir)
    try:
        per_webhook, idle_rate = forwarder_per_request(count, requests, workdir, intake=intake)
    finally:
        intake.stop()
    log(f"forwarder with its sinks at rest: {idle_rate:,.0f} instructions per second (taken off the count)")
    return per_webhook


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests of the short run [1000]")
    parser.add_argument(
        "--only",
        choices=("floor", "forwarder", "delivery", "sidecar"),
        help="count one row only (comparing a change to one path) [all four]",
    )
    parser.add_argument(
        "--group",
        type=int,
        default=1,
        metavar="N",
        help="send the forwarder's webhooks N at a time, N to a commit (a divisor of --requests) [1]",
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="keep the work dir (callgrind's dumps, for callgrind_annotate) in DIR [a temp dir, removed]",
    )
    args = parser.parse_args()
    if args.group < 1 or args.requests % args.group:
        parser.error("--group must be a positive divisor of --requests")
    if shutil.which("valgrind") is None:
        sys.exit("bench: valgrind is not installed (apt-get install valgrind)")
    if args.keep:
        workdir = Path(args.keep)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="workos-instructions-"))
    try:
        requests = workdir / "requests.bin"
        write_requests(
            requests, 3 * args.requests, SECRET, host="127.0.0.1", webhook_path=WEBHOOK_PATH, seed=7
        )
        rows: dict[str, Callable[[int, Path, Path], float]] = {
            **_ROWS,
            "forwarder": functools.partial(forwarder_row, group=args.group),
        }
        counts = {
            name: count(args.requests, requests, workdir)
            for name, count in rows.items()
            if args.only in (None, name)
        }
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print("| app | instructions per request |\n|---|---:|")
    for name, value in counts.items():
        title = _TITLES[name]
        if name == "forwarder" and args.group > 1:
            title = title.replace("one event per commit", f"{args.group} events per commit")
        print(f"| {title} | {value:,.0f} |")
    if "floor" in counts and "forwarder" in counts:
        ratio = counts["forwarder"] / counts["floor"]
        print(f"\nforwarder / floor: {ratio:.2f}x (the target is at most 2.5x)")


_ROWS: dict[str, Callable[[int, Path, Path], float]] = {
    "floor": functools.partial(per_request, "floor"),
    "forwarder": forwarder_row,
    "delivery": lambda count, _requests, workdir: per_delivered_event(count, workdir),
    "sidecar": sidecar_row,
}
_TITLES = {
    "floor": "floor (bare ASGI, same server)",
    "forwarder": "forwarder, acknowledgement path (verify, parse, normalize, commit; one event per commit)",
    "delivery": "forwarder, delivering one event to the Datadog and Prometheus sinks",
    "sidecar": "forwarder at 25 webhooks/s with Datadog, Prometheus and detections (all it does per webhook)",
}


if __name__ == "__main__":
    main()
