"""The benchmark: ``python -m bench.run`` (``--help`` for the flags; ``--quick`` for a short run).

The service under test runs pinned to core 0 (``taskset -c 0``); everything else (wrk, the
constant-rate generator, the Datadog intake double, this runner, py-spy) runs on core 1, so
the numbers say what one core of this machine does. Runs, each on a fresh journal:

1. floor: ``bench/floor.py``, a bare ASGI app on the same uvicorn/uvloop/httptools stack,
   driven by wrk with the same requests: the ceiling of the HTTP stack.
2. throughput: ``workos-forwarder serve`` (SQLite journal, synchronous=FULL, Datadog sink to
   ``bench/intake.py``, Prometheus sink on, JSON lines off) driven by wrk over keep-alive
   connections; acknowledged = answered 2xx, i.e. verified and committed. Delivered is the
   end-to-end rate: events the intake counted, over the time from the start of the load
   until the intake has them all.
   ingest: the same with every sink off, to show what verifying and committing alone cost.
   postgres: the same with the journal on PostgreSQL (``--postgres``, in a schema of its own,
   dropped afterwards), the engine for several replicas. The database server is not pinned:
   it shares both cores with everything else, as it would a host.
3. fixed rate: ``bench/loadgen.py`` at 5,000 requests/s (open loop) for p99 latency.
4. dead sink: the intake answers 503, the generator sends 2,000 requests/s for 10 minutes
   (``--dead-sink-duration``) while RSS is sampled every second; then the intake recovers and
   the backlog drain rate (journal to intake, no webhook load) is measured.
5. backfill: ``workos-forwarder backfill`` pinned like the service, reading the project's
   Events API emulator (``tests/doubles/workos_api.py``, on the load core): events/s ingested.

Requests are pre-signed (``bench/events.py``); the service runs with
``FORWARDER_SIGNATURE_TOLERANCE=24h`` so a request signed at generation time is still
fresh when sent. Verification does the same work whatever the tolerance.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from bench.events import write_requests
from tests.doubles.workos_api import API_KEY
from tests.postgres import scratch_schema

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SERVICE_CORE = "0"
LOAD_CORE = "1"
SECRET = "whsec_bench_0123456789abcdef"
WEBHOOK_PATH = "/webhooks/workos"
# Requests generated for a wrk run: enough for this rate over the run (wrk is closed-loop).
MAX_EXPECTED_RATE = 16_000

TARGETS = {
    "floor_ratio": 0.35,
    "delivered_per_s": 10_000,
    "fixed_rate_p99_ms": 10.0,
    "dead_sink_rss_mb": 150.0,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_line(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("BENCH "):
            return orjson.loads(line[len("BENCH ") :])
    raise RuntimeError(f"no BENCH line in output:\n{output}")


# -- processes ----------------------------------------------------------------------------


class ProcessStats:
    """Samples RSS (and CPU time) of one process from /proc while a run goes on."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (time, RSS MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _status(self, key: str) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def rss_mb(self) -> float:
        return self._status("VmRSS")

    def peak_mb(self) -> float:
        """VmHWM: the kernel's own high-water mark, so a spike between samples is not missed."""
        return self._status("VmHWM")

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), self.rss_mb()))

    def start(self) -> ProcessStats:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Server:
    """A process under test, pinned to the service core."""

    name: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    port: int
    delivers: bool = False
    """Whether this service delivers to the intake double (the Datadog sink is on)."""
    startup_timeout_s: float = 30.0
    intake_base: int = 0
    """Records the intake double held before this service started (it outlives services)."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, health_path: str | None) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / f"{self.name}.stderr.log", "ab") as stderr:
            self.proc = subprocess.Popen(
                ["taskset", "-c", SERVICE_CORE, *self.argv],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.workdir / f'{self.name}.stderr.log'}")
            try:
                if health_path is None:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return self
                elif httpx.get(self.url + health_path, timeout=1).status_code == 200:
                    return self
            except (OSError, httpx.HTTPError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start within {self.startup_timeout_s:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    def commits(self) -> tuple[float, float]:
        """Group commits so far and the seconds they took (fsync included)."""
        return (
            self.metric("workos_forwarder_journal_commit_seconds_count"),
            self.metric("workos_forwarder_journal_commit_seconds_sum"),
        )


def commit_note(
    before: tuple[float, float], after: tuple[float, float], events: float, seconds: float
) -> str:
    """How the events were grouped into commits: fewer, larger commits mean fewer fsyncs."""
    count, took = after[0] - before[0], after[1] - before[1]
    if not count:
        return "no group commits"
    return (
        f"group commits {count / seconds:,.0f}/s, {events / count:.1f} events and"
        f" {took / count * 1000:.2f} ms each"
    )


def service_env(data_dir: Path, port: int) -> dict[str, str]:
    """The service's environment for a run: the Prometheus sink on, every other sink off."""
    return {
        **os.environ,
        "WORKOS_WEBHOOK_SECRET": SECRET,
        "FORWARDER_PORT": str(port),
        "FORWARDER_DATA_DIR": str(data_dir),
        "FORWARDER_SIGNATURE_TOLERANCE": "24h",
        "JSONL_OUTPUT": "off",
        "PROMETHEUS_SINK": "on",
        # Only the sinks and sources under test, whatever this shell exports.
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "",
        "WORKOS_API_KEY": "",
        "DD_API_KEY": "",
    }


class Intake:
    """``bench/intake.py`` on the load core."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stderr = open(workdir / "intake.stderr.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "bench.intake", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the intake double did not start")

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/stats", timeout=10).json()

    def set_status(self, status: int) -> None:
        httpx.post(f"{self.url}/mode?status={status}", timeout=10).raise_for_status()

    def wait_for(self, records: int, timeout_s: float) -> float | None:
        """Poll until the intake holds ``records``; the time it got there, or None on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.stats()["records"] >= records:
                return time.monotonic()
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._stderr.close()


# -- load generators ------------------------------------------------------------------------


def wrk(url: str, files: list[Path], *, duration_s: float, connections: int) -> dict[str, Any]:
    argv = [
        "taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s",
        "--timeout", "10s", "-s", str(BENCH / "webhooks.lua"), url, "--", *map(str, files),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    result = bench_line(done.stdout)
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    result["ok"] = result["requests"] - result["non_2xx"]
    return result


def loadgen(port: int, file: Path, *, rate: float, duration_s: float, connections: int) -> dict[str, Any]:
    argv = [
        "taskset", "-c", LOAD_CORE, sys.executable, "-m", "bench.loadgen", str(file),
        "--port", str(port), "--rate", f"{rate:g}", "--duration", f"{duration_s:g}",
        "--connections", str(connections),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    return bench_line(done.stdout)


# -- the runs -------------------------------------------------------------------------------


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


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.intake = Intake(workdir)
        self.rows: list[Row] = []
        self.results: dict[str, Row] = {}
        self.floor_rate: float | None = None
        self.with_datadog = "datadog" in {ep.name for ep in entry_points(group="workos_forwarder.sinks")}
        self._request_files = 0

    def requests(self, count: int) -> Path:
        """A fresh file of ``count`` signed requests (new event ids every time)."""
        self._request_files += 1
        path = self.workdir / f"requests-{self._request_files}.bin"
        started = time.monotonic()
        size, mean_body = write_requests(
            path, count, SECRET, host="127.0.0.1", webhook_path=WEBHOOK_PATH, seed=self._request_files
        )
        log(
            f"generated {count} signed requests ({size / 1e6:.0f} MB, mean body {mean_body:.0f} B)"
            f" in {time.monotonic() - started:.1f} s"
        )
        return path

    def service_env(
        self, data_dir: Path, port: int, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        env = service_env(data_dir, port)
        if self.with_datadog:
            env["DD_API_KEY"] = "bench-api-key"
            env["DD_LOGS_URL"] = f"{self.intake.url}/api/v2/logs"
        env.update(extra or {})
        return env

    def start_service(self, name: str, extra: Mapping[str, str] | None = None) -> Server:
        port = free_port()
        data_dir = self.workdir / name
        argv = [sys.executable, "-m", "forwarder.cli", "serve"]
        env = self.service_env(data_dir, port, extra)
        server = Server(name, argv, env, data_dir, port, delivers=bool(env.get("DD_API_KEY")))
        server.intake_base = self.intake.stats()["records"]
        return server.start("/healthz")

    def warm_up(self, server: Server) -> None:
        """A few seconds of load first (imports, caches, SQLite pages), then let sinks catch up."""
        wrk(server.url + WEBHOOK_PATH, [self.warmup_file], duration_s=3, connections=self.args.connections)
        self.wait_delivered(server, timeout_s=60)

    def wait_delivered(self, server: Server, timeout_s: float) -> float | None:
        if not server.delivers:
            return time.monotonic()
        accepted = server.metric("workos_webhook_requests_total", result="accepted")
        return self.intake.wait_for(server.intake_base + int(accepted), timeout_s)

    # 1
    def floor(self) -> None:
        log("floor: bare ASGI app on the same server")
        port = free_port()
        server = Server(
            "floor", [sys.executable, "-m", "bench.floor", str(port)], dict(os.environ), self.workdir, port
        ).start(None)
        try:
            assert server.proc is not None
            wrk(
                server.url + WEBHOOK_PATH, [self.warmup_file], duration_s=3, connections=self.args.connections
            )
            stats = ProcessStats(server.proc.pid)
            cpu_before = stats.cpu_s()
            result = wrk(
                server.url + WEBHOOK_PATH,
                [self.throughput_file],
                duration_s=self.args.duration,
                connections=self.args.connections,
            )
            cpu = (stats.cpu_s() - cpu_before) / (result["duration_us"] / 1e6)
            peak = stats.peak_mb()
        finally:
            server.stop()
        self.floor_rate = result["ok"] / (result["duration_us"] / 1e6)
        self.rows.append(
            Row("floor (bare ASGI, same server)", self.floor_rate, result["p50_us"] / 1000,
                result["p99_us"] / 1000, None, peak, cpu)
        )  # fmt: skip

    # 2
    def throughput(self) -> None:
        self._closed_loop("forwarder, wrk closed loop", "throughput")

    # 2b
    def ingest_only(self) -> None:
        """The same run with every sink off: what verifying and committing alone cost."""
        self._closed_loop(
            "forwarder, wrk closed loop, no sinks", "ingest", {"PROMETHEUS_SINK": "off", "DD_API_KEY": ""}
        )

    # 2c
    def postgres(self) -> None:
        """The same run with the journal on PostgreSQL, in a schema of its own."""
        server = self.args.postgres
        with contextlib.ExitStack() as stack:
            try:
                url = stack.enter_context(scratch_schema(server, f"workos_bench_{os.getpid()}"))
            except psycopg.OperationalError as exc:
                log(f"postgres: skipped, PostgreSQL is not reachable at {server}: {exc}")
                return
            self._closed_loop(
                "forwarder, wrk closed loop, PostgreSQL journal", "postgres", {"FORWARDER_JOURNAL_URL": url}
            )

    def _closed_loop(self, title: str, name: str, extra: Mapping[str, str] | None = None) -> None:
        log(f"{name}: wrk, {self.args.connections} connections, {self.args.duration:g} s")
        server = self.start_service(name, extra)
        try:
            assert server.proc is not None
            self.warm_up(server)
            stats = ProcessStats(server.proc.pid, 0.5).start()
            accepted_before = server.metric("workos_webhook_requests_total", result="accepted")
            duplicates_before = server.metric("workos_webhook_requests_total", result="duplicate")
            records_before = self.intake.stats()["records"]
            commits_before = server.commits()
            cpu_before = stats.cpu_s()
            started = time.monotonic()
            profiler = self.profile(server.proc.pid, name)
            result = wrk(
                server.url + WEBHOOK_PATH,
                [self.throughput_file],
                duration_s=self.args.duration,
                connections=self.args.connections,
            )
            seconds = result["duration_us"] / 1e6
            cpu = (stats.cpu_s() - cpu_before) / seconds
            during = self.intake.stats()["records"] - records_before
            accepted = server.metric("workos_webhook_requests_total", result="accepted") - accepted_before
            duplicates = (
                server.metric("workos_webhook_requests_total", result="duplicate") - duplicates_before
            )
            commits = commit_note(commits_before, server.commits(), accepted, seconds)
            drained_at = self.wait_delivered(server, timeout_s=300)
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
        self.results[name] = row
        row.notes.append(commits)
        if server.delivers and drained_at is not None:
            row.delivered_per_s = accepted / (drained_at - started)
            row.notes.append(
                f"delivered during the load {during / seconds:,.0f}/s; all {accepted:,.0f} in the intake"
                f" {drained_at - started - seconds:.1f} s after the load stopped"
            )
        elif server.delivers:
            row.notes.append("the intake did not receive every accepted event within 300 s")
        if duplicates or result["wraps"] or result["non_2xx"]:
            row.notes.append(
                f"duplicates {duplicates:.0f}, wraps {result['wraps']}, non-2xx {result['non_2xx']}"
            )
        self.rows.append(row)

    # 3
    def fixed_rate(self) -> None:
        rate, duration = self.args.rate, self.args.fixed_duration
        log(f"fixed rate: {rate:g} requests/s for {duration:g} s")
        file = self.requests(int(rate * duration) + 1)
        server = self.start_service("fixed-rate")
        try:
            assert server.proc is not None
            self.warm_up(server)
            stats = ProcessStats(server.proc.pid, 0.5).start()
            records_before = self.intake.stats()["records"]
            commits_before = server.commits()
            cpu_before, wall_before = stats.cpu_s(), time.monotonic()
            result = loadgen(
                server.port, file, rate=rate, duration_s=duration, connections=self.args.connections
            )
            cpu = (stats.cpu_s() - cpu_before) / (time.monotonic() - wall_before)
            during = self.intake.stats()["records"] - records_before
            commits = commit_note(commits_before, server.commits(), result["ok"], result["sent_for_s"])
            stats.stop()
            peak = stats.peak_mb()
        finally:
            server.stop()
        row = Row(
            f"forwarder, {rate:,.0f} req/s open loop",
            result["ok"] / result["sent_for_s"],
            result["p50_us"] / 1000,
            result["p99_us"] / 1000,
            during / result["sent_for_s"] if self.with_datadog else None,
            peak,
            cpu,
        )
        row.notes.append(
            f"released {result['released']:,} at {result['rate']:,.0f}/s, answered 2xx {result['ok']:,};"
            f" p99.9 {result['p999_us'] / 1000:.1f} ms, max {result['max_us'] / 1000:.1f} ms,"
            f" longest queue for a connection {result['max_queue']}"
        )
        row.notes.append(commits)
        self.results["fixed"] = row
        self.rows.append(row)

    # 4
    def dead_sink(self) -> None:
        rate, duration = self.args.dead_sink_rate, self.args.dead_sink_duration
        if not self.with_datadog:
            log("dead sink: skipped, sinks/datadog.py is not there")
            return
        log(f"dead sink: intake answers 503, {rate:g} requests/s for {duration:g} s")
        file = self.requests(int(rate * duration) + 1)
        # At 2,000/s for 10 minutes the backlog passes the default limit (1,000,000) after
        # 500 s and the service would rightly start answering 503; this run measures memory.
        server = self.start_service("dead-sink", {"FORWARDER_BACKLOG_LIMIT": str(int(rate * duration) * 2)})
        try:
            assert server.proc is not None
            self.warm_up(server)
            self.intake.set_status(503)
            stats = ProcessStats(server.proc.pid, 1.0).start()
            start_rss = stats.rss_mb()
            result = loadgen(
                server.port, file, rate=rate, duration_s=duration, connections=self.args.connections
            )
            stats.stop()
            rss = [mb for _, mb in stats.samples]
            peak = stats.peak_mb()
            journal_mb = sum(p.stat().st_size for p in (server.workdir).glob("journal.sqlite3*")) / 1e6
            backlog = server.metric("workos_forwarder_sink_lag_events", sink="datadog")
            # Recovery: the intake answers 202 again; how fast does the backlog drain?
            records_before = self.intake.stats()["records"]
            self.intake.set_status(202)
            switched = time.monotonic()
            accepted = server.metric("workos_webhook_requests_total", result="accepted")
            target = server.intake_base + int(accepted)
            first_at = self.intake.wait_for(records_before + 1, timeout_s=120)
            done_at = self.intake.wait_for(target, timeout_s=self.args.drain_timeout)
            drained = self.intake.stats()["records"] - records_before
        finally:
            self.intake.set_status(202)
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
        self.results["dead"] = row
        self.rows.append(row)

    # 5
    def backfill(self) -> None:
        count = self.args.backfill_events
        log(f"backfill: {count:,} events from the Events API emulator")
        with open(self.workdir / "events-api.stderr.log", "ab") as stderr:
            api = subprocess.Popen(
                ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "bench.events_api", str(count)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        try:
            assert api.stdout is not None
            url, oldest = api.stdout.readline().decode().split()
            since = datetime.fromisoformat(oldest.replace("Z", "+00:00")) - timedelta(seconds=1)
            env = self.service_env(
                self.workdir / "backfill", free_port(), {"WORKOS_API_KEY": API_KEY, "WORKOS_API_URL": url}
            )
            argv = [sys.executable, "-m", "forwarder.cli", "backfill", "--since", since.isoformat()]
            with open(self.workdir / "backfill.stderr.log", "ab") as stderr:
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
        finally:
            api.terminate()
            api.wait(10)
        found = re.search(r"([\d,]+) events/s", summary)
        if proc.returncode != 0 or found is None:
            self.rows.append(Row("backfill from the Events API emulator", notes=[f"failed: {summary!r}"]))
            return
        rate = float(found.group(1).replace(",", ""))
        # CPU over the process's whole life (imports included), so a little pessimistic.
        row = Row("backfill from the Events API emulator", rate, None, None, None, peak, cpu / wall)
        row.notes.append(f"{summary.strip()} (ingested into the journal; pages of 100)")
        self.rows.append(row)

    def profile(self, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        if not self.args.profile:
            return None
        out = Path(self.args.profile)
        out.mkdir(parents=True, exist_ok=True)
        argv = [
            "taskset", "-c", LOAD_CORE, "py-spy", "record", "--pid", str(pid), "--rate", "250",
            "--nonblocking", "--threads", "--format", "raw", "--output", str(out / f"{name}.txt"),
            "--duration", str(math.ceil(self.args.duration)),
        ]  # fmt: skip
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def run(self) -> None:
        runs = set(self.args.runs.split(","))
        self.warmup_file = self.requests(60_000)
        if runs & {"floor", "throughput", "ingest", "postgres"}:
            self.throughput_file = self.requests(int(MAX_EXPECTED_RATE * self.args.duration))
        for name, step in (
            ("floor", self.floor),
            ("throughput", self.throughput),
            ("ingest", self.ingest_only),
            ("postgres", self.postgres),
            ("fixed", self.fixed_rate),
            ("dead", self.dead_sink),
            ("backfill", self.backfill),
        ):
            if name in runs:
                try:
                    step()
                except Exception as exc:  # keep the other runs' results
                    log(f"{name}: failed: {exc!r}")
                    self.rows.append(Row(name, notes=[f"failed: {exc!r}"]))

    def close(self) -> None:
        self.intake.stop()


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(bench: Bench) -> str:
    header = (
        "| run | acked req/s | p50 ms | p99 ms | delivered events/s | peak RSS MB | service CPU |"
        " vs floor |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for row in bench.rows:
        ratio = ""
        if row.closed_loop and row.acked_per_s is not None and bench.floor_rate:
            ratio = f"{row.acked_per_s / bench.floor_rate:.0%}"
        lines.append(
            f"| {row.name} | {_fmt(row.acked_per_s, ',.0f')} | {_fmt(row.p50_ms, '.2f')} |"
            f" {_fmt(row.p99_ms, '.2f')} | {_fmt(row.delivered_per_s, ',.0f')} |"
            f" {_fmt(row.peak_rss_mb, '.0f')} | {_fmt(row.cpu, '.0%')} | {ratio} |"
        )
    notes = [f"- {row.name}: {note}" for row in bench.rows for note in row.notes]
    return "\n".join([*lines, "", *notes, "", *targets(bench)])


def targets(bench: Bench) -> list[str]:
    """One line per target of issue 6: the measured value and whether it is met."""
    found = bench.results
    rate = f"{bench.args.rate:,.0f}"
    checks: list[tuple[str, float | None, float, bool]] = []
    if "throughput" in found and bench.floor_rate:
        ratio = (found["throughput"].acked_per_s or 0.0) / bench.floor_rate
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
        checks.append((f"p99 ack ms at {rate} req/s, at most", value, TARGETS["fixed_rate_p99_ms"], False))
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


def main() -> None:
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
    parser.add_argument(
        "--runs",
        default="floor,throughput,ingest,postgres,fixed,dead,backfill",
        help="comma-separated subset to run",
    )
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
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            package = "util-linux" if tool == "taskset" else tool
            sys.exit(f"bench: {tool} is not installed (apt-get install {package})")
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="workos-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"work dir {workdir}; load average {os.getloadavg()[0]:.2f} (others' work makes numbers noisy)")
    bench = Bench(args, workdir)
    try:
        bench.run()
    finally:
        bench.close()
    print(table(bench))
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
